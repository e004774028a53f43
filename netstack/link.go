package netstack

import (
	"context"
	"errors"
	"sync"
	"sync/atomic"

	"gvisor.dev/gvisor/pkg/buffer"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// maxFrame is the largest frame the link takes from a NIC: a full-size
// (GSO) IP packet behind an Ethernet header.
const maxFrame = header.EthernetMinimumSize + 0xffff

// rxBatch is how many frames one Receive call may return.
const rxBatch = 64

// LinkStats counts the frames a Stack's link endpoint moved.
type LinkStats struct {
	TXFrames, TXBytes uint64 // frames handed to NIC.Send
	TXGSOFrames       uint64 // of which GSO frames
	TXCsumBlank       uint64 // of which frames with ChecksumBlank
	TXDropped         uint64 // frames whose Send failed
	RXFrames, RXBytes uint64 // frames returned by NIC.Receive
	RXGSOFrames       uint64 // of which GSO frames
	RXTrusted         uint64 // frames with ChecksumBlank or DataValidated
	RXBadChecksum     uint64 // frames dropped for a wrong checksum
	RXMalformed       uint64 // frames dropped as too short, too long or unparsable
	RXOtherHost       uint64 // frames dropped as addressed to another MAC
	RXErrors          uint64 // Receive errors other than the NIC closing
}

type linkStats struct {
	txFrames, txBytes, txGSO, txBlank, txDropped atomic.Uint64
	rxFrames, rxBytes, rxGSO, rxTrusted, rxBad   atomic.Uint64
	rxMalformed, rxOtherHost, rxErrors           atomic.Uint64
}

// link is the gVisor stack.LinkEndpoint over a NIC: Ethernet framing,
// checksum flags and GSO on the way out, one receive goroutine that blocks
// in NIC.Receive on the way in.
type link struct {
	nic    NIC
	mac    atomic.Value // tcpip.LinkAddress; Stack.LinkChanged may change it
	off    Offloads
	gso    bool // host GSO offered to gVisor
	ctx    context.Context
	cancel context.CancelFunc

	mu         sync.Mutex
	mtu        uint32
	dispatcher stack.NetworkDispatcher
	started    bool
	onClose    func()
	closed     bool

	txMu     sync.Mutex
	txFrames []Frame

	wg    sync.WaitGroup
	stats linkStats
	// rxDone is closed when the receive goroutine ends.
	rxDone chan struct{}
	rxErr  atomic.Value // error that ended reception
}

var (
	_ stack.LinkEndpoint = (*link)(nil)
	_ stack.GSOEndpoint  = (*link)(nil)
)

// newLink makes the link endpoint for nic. ipv6 says whether the stack
// routes IPv6, so that GSO is offered only if the NIC does it for every
// protocol in use.
func newLink(nic NIC, ipv6 bool) *link {
	off := nic.Offloads()
	if off.GSOMaxSize <= 0 || off.GSOMaxSize > 0xffff {
		off.GSOMaxSize = 0xffff
	}
	gso := off.TXChecksum && off.GSOTCPv4 && (!ipv6 || off.GSOTCPv6)
	ctx, cancel := context.WithCancel(context.Background())
	e := &link{
		nic:    nic,
		off:    off,
		gso:    gso,
		ctx:    ctx,
		cancel: cancel,
		mtu:    uint32(nic.MTU()),
		rxDone: make(chan struct{}),
	}
	e.mac.Store(tcpip.LinkAddress(nic.MAC()))
	return e
}

// MTU implements stack.LinkEndpoint.
func (e *link) MTU() uint32 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.mtu
}

// SetMTU implements stack.LinkEndpoint.
func (e *link) SetMTU(mtu uint32) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.mtu = mtu
}

// MaxHeaderLength implements stack.LinkEndpoint.
func (e *link) MaxHeaderLength() uint16 { return header.EthernetMinimumSize }

// LinkAddress implements stack.LinkEndpoint.
func (e *link) LinkAddress() tcpip.LinkAddress { return e.mac.Load().(tcpip.LinkAddress) }

// SetLinkAddress implements stack.LinkEndpoint (Stack.LinkChanged sets
// the NIC's new MAC through it).
func (e *link) SetLinkAddress(a tcpip.LinkAddress) { e.mac.Store(a) }

// Capabilities implements stack.LinkEndpoint: RX checksum offload always
// (see checksum.go), TX checksum offload when the NIC does it, and ARP.
func (e *link) Capabilities() stack.LinkEndpointCapabilities {
	c := stack.CapabilityResolutionRequired | stack.CapabilityRXChecksumOffload
	if e.off.TXChecksum {
		c |= stack.CapabilityTXChecksumOffload
	}
	return c
}

// GSOMaxSize implements stack.GSOEndpoint.
func (e *link) GSOMaxSize() uint32 {
	if !e.gso {
		return 0
	}
	return uint32(e.off.GSOMaxSize)
}

// SupportedGSO implements stack.GSOEndpoint.
func (e *link) SupportedGSO() stack.SupportedGSO {
	if e.gso {
		return stack.HostGSOSupported
	}
	return stack.GSONotSupported
}

// Attach implements stack.LinkEndpoint; the first attach starts the
// receive goroutine.
func (e *link) Attach(d stack.NetworkDispatcher) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.dispatcher = d
	if d != nil && !e.started && !e.closed {
		e.started = true
		e.wg.Add(1)
		go e.receive()
	}
}

// IsAttached implements stack.LinkEndpoint.
func (e *link) IsAttached() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.dispatcher != nil
}

// Wait implements stack.LinkEndpoint: it waits for the receive goroutine.
func (e *link) Wait() { e.wg.Wait() }

// ARPHardwareType implements stack.LinkEndpoint.
func (e *link) ARPHardwareType() header.ARPHardwareType { return header.ARPHardwareEther }

// AddHeader implements stack.LinkEndpoint.
func (e *link) AddHeader(pkt *stack.PacketBuffer) {
	eth := header.Ethernet(pkt.LinkHeader().Push(header.EthernetMinimumSize))
	src := pkt.EgressRoute.LocalLinkAddress
	if src == "" {
		src = e.LinkAddress()
	}
	eth.Encode(&header.EthernetFields{
		SrcAddr: src,
		DstAddr: pkt.EgressRoute.RemoteLinkAddress,
		Type:    pkt.NetworkProtocolNumber,
	})
}

// ParseHeader implements stack.LinkEndpoint.
func (e *link) ParseHeader(pkt *stack.PacketBuffer) bool {
	_, ok := pkt.LinkHeader().Consume(header.EthernetMinimumSize)
	return ok
}

// Close implements stack.LinkEndpoint: it stops reception (the NIC's
// Receive sees its context cancelled) and runs the on-close action.
func (e *link) Close() {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return
	}
	e.closed = true
	f := e.onClose
	e.mu.Unlock()
	e.cancel()
	if f != nil {
		f()
	}
}

// SetOnCloseAction implements stack.LinkEndpoint.
func (e *link) SetOnCloseAction(f func()) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.onClose = f
}

// WritePackets implements stack.LinkWriter: the packets go to the NIC in
// one Send call, each as the list of its views (no copy here).
func (e *link) WritePackets(pkts stack.PacketBufferList) (int, tcpip.Error) {
	e.txMu.Lock()
	defer e.txMu.Unlock()
	frames := e.txFrames[:0]
	var bytes, gso, blank uint64
	for _, pkt := range pkts.AsSlice() {
		f := Frame{Data: pkt.AsSlices()}
		prepareTX(pkt, &f, e.off.TXChecksum)
		if f.GSO.Type != GSONone {
			gso++
		}
		if f.Flags&ChecksumBlank != 0 {
			blank++
		}
		bytes += uint64(pkt.Size())
		frames = append(frames, f)
	}
	n := len(frames)
	err := e.nic.Send(e.ctx, frames...)
	for i := range frames {
		frames[i] = Frame{} // drop references to the packets' views
	}
	e.txFrames = frames[:0]
	if err != nil {
		e.stats.txDropped.Add(uint64(n))
		if errors.Is(err, ErrNICClosed) || e.ctx.Err() != nil {
			return 0, &tcpip.ErrClosedForSend{}
		}
		// A frame lost on the way: TCP retransmits, UDP is lossy.
		return n, nil
	}
	e.stats.txFrames.Add(uint64(n))
	e.stats.txBytes.Add(bytes)
	e.stats.txGSO.Add(gso)
	e.stats.txBlank.Add(blank)
	return n, nil
}

// sendFrame sends one frame the stack did not make (a gratuitous ARP).
func (e *link) sendFrame(b []byte) error {
	e.txMu.Lock()
	defer e.txMu.Unlock()
	err := e.nic.Send(e.ctx, Frame{Data: [][]byte{b}})
	if err != nil {
		e.stats.txDropped.Add(1)
		return err
	}
	e.stats.txFrames.Add(1)
	e.stats.txBytes.Add(uint64(len(b)))
	return nil
}

// receive is the receive goroutine: it blocks in NIC.Receive and delivers
// what arrives, until the link closes or the NIC is gone.
func (e *link) receive() {
	defer e.wg.Done()
	defer close(e.rxDone)
	frames := make([]Frame, rxBatch)
	for {
		n, err := e.nic.Receive(e.ctx, frames)
		if n < 0 || n > len(frames) {
			e.stats.rxErrors.Add(1)
			n = 0
		}
		for i := 0; i < n; i++ {
			e.deliver(&frames[i])
			frames[i] = Frame{}
		}
		if err != nil {
			if errors.Is(err, ErrNICClosed) || e.ctx.Err() != nil {
				e.rxErr.Store(err)
				return
			}
			e.stats.rxErrors.Add(1)
		}
	}
}

// deliver copies one received frame into a packet buffer (the one copy on
// the receive path), checks it and hands it to gVisor.
func (e *link) deliver(f *Frame) {
	size := f.Len()
	e.stats.rxFrames.Add(1)
	e.stats.rxBytes.Add(uint64(size))
	if f.GSO.Type != GSONone {
		e.stats.rxGSO.Add(1)
	}
	if size < header.EthernetMinimumSize || size > maxFrame {
		e.stats.rxMalformed.Add(1)
		return
	}
	v := buffer.NewView(size)
	for _, d := range f.Data {
		v.Write(d)
	}
	b := v.AsSlice()
	eth := header.Ethernet(b)
	dst := eth.DestinationAddress()
	var pktType tcpip.PacketType
	switch {
	case dst == header.EthernetBroadcastAddress:
		pktType = tcpip.PacketBroadcast
	case header.IsMulticastEthernetAddress(dst):
		pktType = tcpip.PacketMulticast
	case dst == e.LinkAddress():
		pktType = tcpip.PacketHost
	default:
		v.Release()
		e.stats.rxOtherHost.Add(1)
		return
	}
	proto := eth.Type()
	if f.Flags&(ChecksumBlank|DataValidated) != 0 {
		e.stats.rxTrusted.Add(1)
	} else {
		switch verifyRX(proto, b[header.EthernetMinimumSize:]) {
		case rxBadSum:
			v.Release()
			e.stats.rxBad.Add(1)
			return
		case rxMalformed:
			v.Release()
			e.stats.rxMalformed.Add(1)
			return
		}
	}
	e.mu.Lock()
	d := e.dispatcher
	e.mu.Unlock()
	if d == nil {
		v.Release()
		return
	}
	pkt := stack.NewPacketBuffer(stack.PacketBufferOptions{Payload: buffer.MakeWithView(v)})
	defer pkt.DecRef()
	pkt.PktType = pktType
	if !e.ParseHeader(pkt) {
		e.stats.rxMalformed.Add(1)
		return
	}
	d.DeliverNetworkPacket(proto, pkt)
}

// stats returns a snapshot of the counters.
func (e *link) snapshot() LinkStats {
	s := &e.stats
	return LinkStats{
		TXFrames: s.txFrames.Load(), TXBytes: s.txBytes.Load(),
		TXGSOFrames: s.txGSO.Load(), TXCsumBlank: s.txBlank.Load(), TXDropped: s.txDropped.Load(),
		RXFrames: s.rxFrames.Load(), RXBytes: s.rxBytes.Load(), RXGSOFrames: s.rxGSO.Load(),
		RXTrusted: s.rxTrusted.Load(), RXBadChecksum: s.rxBad.Load(), RXMalformed: s.rxMalformed.Load(),
		RXOtherHost: s.rxOtherHost.Load(), RXErrors: s.rxErrors.Load(),
	}
}
