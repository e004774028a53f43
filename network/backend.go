package network

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"

	"github.com/gozen-dev/gozen/drivers/netback"
	"github.com/gozen-dev/gozen/drivers/netif"
	"github.com/gozen-dev/gozen/netstack"
	"github.com/gozen-dev/gozen/xenbus/device"
)

// defaultQueueLen is BackendConfig.QueueLen when it is 0.
const defaultQueueLen = 512

// maxFreeBuffers bounds the receive buffers a BackendNIC keeps for reuse.
const maxFreeBuffers = 256

// BackendConfig describes the backend's end of a vif for ServeBackend.
type BackendConfig struct {
	// MAC is the Ethernet address of the backend's end (the stack over
	// the BackendNIC uses it); required.
	MAC net.HardwareAddr
	// MTU is the largest IP packet of a frame without GSO; 0 means 1500.
	MTU int
	// Offloads says what the frontend takes on its receive path, that is
	// what the BackendNIC may Send: checksum-blank frames (a netfront,
	// ours or Linux's, accepts them) and GSO frames (when the frontend
	// requested feature-gso-tcpv4/-tcpv6 and feature-sg). netback does
	// not read the frontend's features, so the caller decides.
	Offloads netstack.Offloads
	// QueueLen is how many frames from the frontend may wait for Receive
	// before the backend stops taking the frontend's transmit ring
	// (back-pressure); 0 means 512.
	QueueLen int
}

// BackendNIC is the backend's end of a vif as a netstack.NIC, for a
// network backend in user space (a driver domain or dom0 tool) or host
// tests: frames the frontend transmits are copied out of netback's
// OnFrame callback into a queue that Receive drains (blocking, nothing
// polls), and Send hands frames to netback.VIF.Send, which copies them
// into the frontend's receive pages. Checksum flags and GSO requests
// travel with the frames both ways.
type BackendNIC struct {
	vif   *netback.VIF
	ready chan struct{} // closed once vif is set
	mac   net.HardwareAddr
	mtu   int
	off   netstack.Offloads

	in      chan netstack.Frame
	done    chan struct{}
	closing sync.Once

	freeMu sync.Mutex
	free   [][]byte // buffers of frames already consumed by Receive
	lent   [][]byte // buffers returned by the last Receive

	txMu  sync.Mutex
	txBuf []byte

	rxFrames, rxDropped, txFrames, txDropped atomic.Uint64
}

// BackendStats counts a BackendNIC's frames.
type BackendStats struct {
	// RXFrames counts frames from the frontend handed to Receive;
	// RXDropped those dropped because the NIC was closed or the
	// connection dropped while they waited for room in the queue.
	RXFrames, RXDropped uint64
	// TXFrames counts frames given to the frontend; TXDropped those
	// dropped because no frontend was connected or Send failed.
	TXFrames, TXDropped uint64
}

// ServeBackend serves the vif backend b with netback.Serve(ctx, b, o),
// whose OnFrame it sets (o.OnFrame must be nil), and returns the vif as
// a netstack.NIC. Close stops both.
func ServeBackend(ctx context.Context, b *device.Backend, o netback.Options, cfg BackendConfig) (*BackendNIC, error) {
	if o.OnFrame != nil {
		return nil, errors.New("network: ServeBackend sets netback.Options.OnFrame itself")
	}
	if len(cfg.MAC) != 6 {
		return nil, fmt.Errorf("network: backend MAC %q is not an Ethernet address", cfg.MAC)
	}
	if cfg.MTU <= 0 {
		cfg.MTU = 1500
	}
	if cfg.QueueLen <= 0 {
		cfg.QueueLen = defaultQueueLen
	}
	n := &BackendNIC{
		mac:   append(net.HardwareAddr(nil), cfg.MAC...),
		mtu:   cfg.MTU,
		off:   cfg.Offloads,
		in:    make(chan netstack.Frame, cfg.QueueLen),
		done:  make(chan struct{}),
		ready: make(chan struct{}),
	}
	o.OnFrame = n.onFrame
	v, err := netback.Serve(ctx, b, o)
	if err != nil {
		return nil, fmt.Errorf("network: %w", err)
	}
	n.vif = v
	close(n.ready)
	return n, nil
}

// VIF returns the netback device under n (for its Stats, Errors and
// WaitConnected).
func (n *BackendNIC) VIF() *netback.VIF { return n.vif }

// MAC implements netstack.NIC.
func (n *BackendNIC) MAC() net.HardwareAddr { return n.mac }

// MTU implements netstack.NIC.
func (n *BackendNIC) MTU() int { return n.mtu }

// Offloads implements netstack.NIC: BackendConfig.Offloads.
func (n *BackendNIC) Offloads() netstack.Offloads { return n.off }

// Stats returns the counters.
func (n *BackendNIC) Stats() BackendStats {
	return BackendStats{
		RXFrames: n.rxFrames.Load(), RXDropped: n.rxDropped.Load(),
		TXFrames: n.txFrames.Load(), TXDropped: n.txDropped.Load(),
	}
}

// Close stops the NIC (Receive and Send fail with netstack.ErrNICClosed)
// and the netback device, which drops the connection and goes Closed.
func (n *BackendNIC) Close() error {
	n.closing.Do(func() { close(n.done) })
	return n.vif.Close()
}

// onFrame is netback's OnFrame: it copies the lent frame and queues it,
// waiting while the queue is full (the frontend's transmit ring then
// fills up: back-pressure) until the NIC is closed or the connection
// drops (its teardown waits for us), which drop the frame.
func (n *BackendNIC) onFrame(f netback.Frame) {
	<-n.ready
	connected, changed := n.vif.Link()
	if !connected {
		n.rxDropped.Add(1)
		return
	}
	b := n.buffer(len(f.Data))
	copy(b, f.Data)
	fr := netstack.Frame{Data: [][]byte{b}}
	if f.CsumBlank {
		fr.Flags |= netstack.ChecksumBlank
	}
	if f.DataValidated {
		fr.Flags |= netstack.DataValidated
	}
	switch f.GSOType {
	case netif.GSOTCPv4:
		fr.GSO = netstack.GSO{Type: netstack.GSOTCPv4, Size: f.GSOSize}
	case netif.GSOTCPv6:
		fr.GSO = netstack.GSO{Type: netstack.GSOTCPv6, Size: f.GSOSize}
	}
	select {
	case n.in <- fr:
	case <-n.done:
		n.rxDropped.Add(1)
	case <-changed:
		n.rxDropped.Add(1)
	}
}

// buffer returns a buffer of size bytes, reused if one is free.
func (n *BackendNIC) buffer(size int) []byte {
	n.freeMu.Lock()
	defer n.freeMu.Unlock()
	for k := len(n.free); k > 0; k-- {
		b := n.free[k-1]
		n.free = n.free[:k-1]
		if cap(b) >= size {
			return b[:size]
		}
	}
	return make([]byte, size, max(size, 2048))
}

// Receive implements netstack.NIC: it waits for a frame from the
// frontend, then returns it and those queued behind it. Their Data is
// valid until the next Receive.
func (n *BackendNIC) Receive(ctx context.Context, frames []netstack.Frame) (int, error) {
	n.freeMu.Lock()
	for _, b := range n.lent {
		if len(n.free) < maxFreeBuffers {
			n.free = append(n.free, b)
		}
	}
	n.lent = n.lent[:0]
	n.freeMu.Unlock()
	if len(frames) == 0 {
		return 0, nil
	}
	select {
	case f := <-n.in:
		frames[0] = f
	case <-n.done:
		return 0, fmt.Errorf("network: backend receive: %w", netstack.ErrNICClosed)
	case <-n.vif.Done():
		return 0, fmt.Errorf("network: backend receive: %w: %w", netstack.ErrNICClosed, netback.ErrClosed)
	case <-ctx.Done():
		return 0, fmt.Errorf("network: backend receive: %w", ctx.Err())
	}
	k := 1
fill:
	for k < len(frames) {
		select {
		case f := <-n.in:
			frames[k] = f
			k++
		default:
			break fill
		}
	}
	n.freeMu.Lock()
	for _, f := range frames[:k] {
		n.lent = append(n.lent, f.Data[0])
	}
	n.freeMu.Unlock()
	n.rxFrames.Add(uint64(k))
	return k, nil
}

// Send implements netstack.NIC: each frame goes to the frontend with
// netback.VIF.Send, which waits for receive requests (back-pressure from
// the frontend) until ctx ends. Frames sent while no frontend is
// connected are dropped, as a link that is down drops them.
func (n *BackendNIC) Send(ctx context.Context, frames ...netstack.Frame) error {
	n.txMu.Lock()
	defer n.txMu.Unlock()
	for i := range frames {
		select {
		case <-n.done:
			n.txDropped.Add(uint64(len(frames) - i))
			return fmt.Errorf("network: backend send: %w", netstack.ErrNICClosed)
		case <-n.vif.Done():
			n.txDropped.Add(uint64(len(frames) - i))
			return fmt.Errorf("network: backend send: %w: %w", netstack.ErrNICClosed, netback.ErrClosed)
		default:
		}
		f := &frames[i]
		var data []byte
		switch len(f.Data) {
		case 0:
			continue
		case 1:
			data = f.Data[0]
		default:
			n.txBuf = n.txBuf[:0]
			for _, p := range f.Data {
				n.txBuf = append(n.txBuf, p...)
			}
			data = n.txBuf
		}
		bf := netback.Frame{
			Data:          data,
			CsumBlank:     f.Flags&netstack.ChecksumBlank != 0,
			DataValidated: f.Flags&netstack.DataValidated != 0,
		}
		switch f.GSO.Type {
		case netstack.GSOTCPv4:
			bf.GSOType, bf.GSOSize = netif.GSOTCPv4, f.GSO.Size
		case netstack.GSOTCPv6:
			bf.GSOType, bf.GSOSize = netif.GSOTCPv6, f.GSO.Size
		}
		if connected, _ := n.vif.Link(); !connected {
			n.txDropped.Add(1)
			continue // no frontend: the frame is lost on a down link
		}
		if err := n.vif.Send(ctx, bf); err != nil {
			n.txDropped.Add(uint64(len(frames) - i))
			if errors.Is(err, netback.ErrClosed) {
				return fmt.Errorf("network: backend send: %w: %w", netstack.ErrNICClosed, err)
			}
			return fmt.Errorf("network: backend send: %w", err)
		}
		n.txFrames.Add(1)
	}
	return nil
}
