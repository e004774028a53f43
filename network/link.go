package network

import (
	"context"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/gozen-dev/gozen/drivers/netfront"
	"github.com/gozen-dev/gozen/netstack"
	"github.com/gozen-dev/gozen/xenbus/device"
)

// ErrLinkDown is wrapped by the error of a Link's Send while no vif is
// up: the frames are dropped, as on a pulled cable (TCP retransmits).
var ErrLinkDown = errors.New("network: link down")

// Link is a netstack.NIC over whichever vif is up, so that one stack
// outlives its vifs (xl network-detach, then network-attach): Follow
// moves it to the netfront NIC a device.Bus connects, Switch to any NIC
// (a BackendNIC for a backend's stack that outlives its frontends). While no
// vif is up, Send drops the frames with ErrLinkDown and Receive waits.
// Its MTU and Offloads are the first vif's, fixed for the stack; its MAC
// is the current vif's (tell the stack with netstack.Stack.LinkChanged).
// A frame asking for an offload the current vif lacks (GSO) is dropped.
type Link struct {
	mtu int
	off netstack.Offloads

	mu      sync.Mutex
	cur     *attachment // nil while down
	mac     net.HardwareAddr
	up      chan struct{} // closed when a vif is attached; replaced when it goes
	changed chan struct{} // closed when cur changes or dies; replaced
	name    string
	dead    *netfront.NIC // the last vif that failed under the link

	switches, downs, txDown, txUnsupported atomic.Uint64
}

// attachment is one vif under the link.
type attachment struct {
	nic    netstack.NIC
	nf     *netfront.NIC // nic's netfront NIC, if it is a *NIC
	off    netstack.Offloads
	ctx    context.Context // ends when the link leaves this vif
	cancel context.CancelFunc
}

var _ netstack.NIC = (*Link)(nil)

// NewLink returns a link up on nic (a *NIC over the first vif).
func NewLink(nic netstack.NIC) *Link {
	a := newAttachment(nic)
	l := &Link{mtu: nic.MTU(), off: a.off, up: make(chan struct{}), changed: make(chan struct{})}
	l.switchLocked(a, "")
	return l
}

func newAttachment(nic netstack.NIC) *attachment {
	ctx, cancel := context.WithCancel(context.Background())
	a := &attachment{nic: nic, off: nic.Offloads(), ctx: ctx, cancel: cancel}
	if n, ok := nic.(*NIC); ok {
		a.nf = n.nf
	}
	return a
}

// Switch moves the link to nic, or takes it down when nic is nil. Calls
// blocked on the previous vif return at once.
func (l *Link) Switch(nic netstack.NIC) { l.switchNamed(nic, "") }

func (l *Link) switchNamed(nic netstack.NIC, name string) {
	var a *attachment
	if nic != nil {
		a = newAttachment(nic)
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	l.switchLocked(a, name)
}

func (l *Link) switchLocked(a *attachment, name string) {
	if old := l.cur; old != nil {
		old.cancel()
		l.downs.Add(1)
		l.up = make(chan struct{})
	}
	l.cur, l.name = a, name
	if a != nil {
		l.mac = slices.Clone(a.nic.MAC())
		l.switches.Add(1)
		close(l.up)
	}
	close(l.changed)
	l.changed = make(chan struct{})
}

// died takes the link down if a, which failed for good, is its vif.
func (l *Link) died(a *attachment) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if a.nf != nil {
		l.dead = a.nf
	}
	if l.cur == a {
		l.switchLocked(nil, "")
	}
}

// Current returns the NIC the link is on, nil while it is down.
func (l *Link) Current() netstack.NIC {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.cur == nil {
		return nil
	}
	return l.cur.nic
}

// MAC implements netstack.NIC: the current (or last) vif's MAC.
func (l *Link) MAC() net.HardwareAddr {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.mac
}

// MTU implements netstack.NIC: the first vif's.
func (l *Link) MTU() int { return l.mtu }

// Offloads implements netstack.NIC: the first vif's.
func (l *Link) Offloads() netstack.Offloads { return l.off }

func (l *Link) current() (*attachment, chan struct{}) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.cur, l.up
}

// Send implements netstack.NIC on the current vif.
func (l *Link) Send(ctx context.Context, frames ...netstack.Frame) error {
	a, _ := l.current()
	if a == nil {
		l.txDown.Add(uint64(len(frames)))
		return fmt.Errorf("network: send: %w", ErrLinkDown)
	}
	if !a.takes(frames) {
		kept := make([]netstack.Frame, 0, len(frames))
		for _, f := range frames {
			if a.takes([]netstack.Frame{f}) {
				kept = append(kept, f)
			} else {
				l.txUnsupported.Add(1)
			}
		}
		frames = kept
	}
	ctx, stop := a.bind(ctx)
	defer stop()
	err := a.nic.Send(ctx, frames...)
	if errors.Is(err, netstack.ErrNICClosed) || (err != nil && a.ctx.Err() != nil) {
		if a.ctx.Err() == nil {
			l.died(a)
		}
		return fmt.Errorf("%w: %w", ErrLinkDown, err)
	}
	return err
}

// Receive implements netstack.NIC on the current vif, waiting while the
// link is down. It never fails with netstack.ErrNICClosed: a vif that
// goes away takes the link down, not the stack.
func (l *Link) Receive(ctx context.Context, frames []netstack.Frame) (int, error) {
	for {
		a, up := l.current()
		if a == nil {
			select {
			case <-up:
				continue
			case <-ctx.Done():
				return 0, ctx.Err()
			}
		}
		rctx, stop := a.bind(ctx)
		n, err := a.nic.Receive(rctx, frames)
		stop()
		if n > 0 || err == nil {
			return n, nil
		}
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		if a.ctx.Err() != nil {
			continue // switched away meanwhile
		}
		if errors.Is(err, netstack.ErrNICClosed) {
			l.died(a)
			continue
		}
		return 0, err
	}
}

// takes says whether a's NIC does the GSO every frame asks for.
func (a *attachment) takes(frames []netstack.Frame) bool {
	for i := range frames {
		switch frames[i].GSO.Type {
		case netstack.GSOTCPv4:
			if !a.off.GSOTCPv4 {
				return false
			}
		case netstack.GSOTCPv6:
			if !a.off.GSOTCPv6 {
				return false
			}
		}
	}
	return true
}

// bind returns a context that ends with ctx or when the link leaves a.
func (a *attachment) bind(ctx context.Context) (context.Context, func()) {
	c, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(a.ctx, cancel)
	return c, func() { stop(); cancel() }
}

// LinkStats counts a Link's vif changes and the frames it dropped.
type LinkStats struct {
	// Up says a vif is attached; VIF is its device name ("vif/0"; empty
	// when set with Switch), MAC its address.
	Up  bool
	VIF string
	MAC string
	// Switches counts vifs attached (the first one included), Downs vifs
	// left (gone, failed or replaced).
	Switches, Downs uint64
	// TXDown counts frames dropped while down, TXUnsupported GSO frames
	// the current vif could not take.
	TXDown, TXUnsupported uint64
	// NIC is the current vif's netfront counters (zero while down or
	// on another kind of NIC).
	NIC netfront.Stats
}

// Stats returns the link's counters.
func (l *Link) Stats() LinkStats {
	l.mu.Lock()
	s := LinkStats{Up: l.cur != nil, VIF: l.name, MAC: l.mac.String()}
	if l.cur != nil && l.cur.nf != nil {
		s.NIC = l.cur.nf.Stats()
	}
	l.mu.Unlock()
	s.Switches, s.Downs = l.switches.Load(), l.downs.Load()
	s.TXDown, s.TXUnsupported = l.txDown.Load(), l.txUnsupported.Load()
	return s
}

// BusLink returns a link on the first connected vif of bus (which must
// have netfront.Driver registered), to be kept up with Follow.
func BusLink(bus *device.Bus) (*Link, error) {
	for _, d := range bus.Devices() {
		if nf, ok := netfront.FromDevice(d); ok && nf.Err() == nil {
			l := NewLink(NewNIC(nf))
			l.name = d.Name()
			return l, nil
		}
	}
	return nil, errors.New("network: no vif connected")
}

// Follow keeps the link on a connected vif of bus until ctx ends: when
// its vif goes away (closed by the bus, or failed) it moves to the first
// other connected vif, or goes down until one connects. up, if not nil,
// is called after each move to a new vif (give it
// netstack.Stack.LinkChanged).
func (l *Link) Follow(ctx context.Context, bus *device.Bus, up func()) {
	for {
		busCh := bus.Changed()
		l.mu.Lock()
		cur, linkCh, dead := l.cur, l.changed, l.dead
		l.mu.Unlock()
		var next *netfront.NIC
		var name string
		still := false
		for _, d := range bus.Devices() {
			nf, ok := netfront.FromDevice(d)
			if !ok {
				continue
			}
			if cur != nil && nf == cur.nf {
				still = true
				break
			}
			if next == nil && nf.Err() == nil && nf != dead {
				next, name = nf, d.Name()
			}
		}
		if !still && next != nil {
			l.switchNamed(NewNIC(next), name)
			if up != nil {
				up()
			}
			continue
		}
		if !still && cur != nil {
			l.Switch(nil)
			continue
		}
		select {
		case <-busCh:
		case <-linkCh:
		case <-ctx.Done():
			return
		}
	}
}
