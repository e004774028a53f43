// Package pipenic connects two in-process NICs back to back, an Ethernet
// cable for host tests of netstack without Xen: what one side Sends, the
// other Receives, with its flags and GSO request (a GSO frame arrives
// whole, as netback hands one to a netfront that offers GSO). Frames can be
// watched, changed or dropped on the way, and counted.
package pipenic

import (
	"context"
	"fmt"
	"net"
	"sync"

	"github.com/gozen-dev/gozen/netstack"
)

// queueLen is how many frames may wait for a receiver before Send blocks.
const queueLen = 512

// NIC is one end of a pipe; it implements netstack.NIC.
type NIC struct {
	mac  net.HardwareAddr
	mtu  int
	off  netstack.Offloads
	peer *NIC

	in   chan netstack.Frame
	done chan struct{}
	once sync.Once

	mu     sync.Mutex
	filter func(*netstack.Frame) bool
	stats  Stats
}

// Stats counts the frames a NIC sent.
type Stats struct {
	Frames, Bytes  uint64
	GSOFrames      uint64
	CsumBlank      uint64
	MaxFrame       int // largest frame in bytes
	Dropped        uint64
	OversizeFrames uint64 // non-GSO frames larger than MTU plus Ethernet header
}

// Pair returns two connected NICs with the given MTU and offloads, and MACs
// 02:00:00:00:00:01 and 02:00:00:00:00:02.
func Pair(mtu int, off netstack.Offloads) (*NIC, *NIC) {
	a := newNIC(1, mtu, off)
	b := newNIC(2, mtu, off)
	a.peer, b.peer = b, a
	return a, b
}

func newNIC(n byte, mtu int, off netstack.Offloads) *NIC {
	return &NIC{
		mac:  net.HardwareAddr{2, 0, 0, 0, 0, n},
		mtu:  mtu,
		off:  off,
		in:   make(chan netstack.Frame, queueLen),
		done: make(chan struct{}),
	}
}

// MAC implements netstack.NIC.
func (n *NIC) MAC() net.HardwareAddr { return n.mac }

// MTU implements netstack.NIC.
func (n *NIC) MTU() int { return n.mtu }

// Offloads implements netstack.NIC.
func (n *NIC) Offloads() netstack.Offloads { return n.off }

// SetFilter installs f, called for every frame this NIC sends (with a
// private copy of its data); returning false drops the frame. nil removes
// the filter.
func (n *NIC) SetFilter(f func(*netstack.Frame) bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.filter = f
}

// Stats returns what this NIC sent.
func (n *NIC) Stats() Stats {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.stats
}

// Close ends the NIC: its Receive and Send fail with netstack.ErrNICClosed.
func (n *NIC) Close() { n.once.Do(func() { close(n.done) }) }

// Send implements netstack.NIC: each frame is copied (as netfront copies
// into its ring's pages) and queued for the peer.
func (n *NIC) Send(ctx context.Context, frames ...netstack.Frame) error {
	for i := range frames {
		f := &frames[i]
		b := make([]byte, 0, f.Len())
		for _, d := range f.Data {
			b = append(b, d...)
		}
		c := netstack.Frame{Data: [][]byte{b}, Flags: f.Flags, GSO: f.GSO}
		n.mu.Lock()
		filter := n.filter
		n.stats.Frames++
		n.stats.Bytes += uint64(len(b))
		n.stats.MaxFrame = max(n.stats.MaxFrame, len(b))
		if c.GSO.Type != netstack.GSONone {
			n.stats.GSOFrames++
		} else if len(b) > n.mtu+14 {
			n.stats.OversizeFrames++
		}
		if c.Flags&netstack.ChecksumBlank != 0 {
			n.stats.CsumBlank++
		}
		n.mu.Unlock()
		if filter != nil && !filter(&c) {
			n.mu.Lock()
			n.stats.Dropped++
			n.mu.Unlock()
			continue
		}
		if err := n.peer.Inject(ctx, c); err != nil {
			return err
		}
	}
	return nil
}

// Inject queues a frame for this NIC's Receive as if it came off the
// wire (tests use it for hand-made frames).
func (n *NIC) Inject(ctx context.Context, f netstack.Frame) error {
	select {
	case n.in <- f:
		return nil
	case <-n.done:
		return fmt.Errorf("pipenic: send: %w", netstack.ErrNICClosed)
	case <-ctx.Done():
		return fmt.Errorf("pipenic: send: %w", ctx.Err())
	}
}

// Receive implements netstack.NIC.
func (n *NIC) Receive(ctx context.Context, frames []netstack.Frame) (int, error) {
	if len(frames) == 0 {
		return 0, fmt.Errorf("pipenic: receive into no frames")
	}
	select {
	case f := <-n.in:
		frames[0] = f
	case <-n.done:
		return 0, fmt.Errorf("pipenic: receive: %w", netstack.ErrNICClosed)
	case <-ctx.Done():
		return 0, fmt.Errorf("pipenic: receive: %w", ctx.Err())
	}
	k := 1
	for k < len(frames) {
		select {
		case f := <-n.in:
			frames[k] = f
			k++
			continue
		default:
		}
		break
	}
	return k, nil
}
