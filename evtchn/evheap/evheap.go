// Package evheap implements [evtchn.Events] between goroutines of one
// process, for tests and for running drivers without Xen.
//
// A [Hub] plays the hypervisor: it owns the port tables of every domain and
// hands out per-domain views with [Hub.Domain]. A notification increments
// the generation of the remote port and wakes its waiters directly; nothing
// is ever queued, so nothing can be lost.
//
// Semantics follow Xen's where the contract of package evtchn is silent:
//   - ports are numbered from 1, the lowest free number is reused first, and
//     a domain has at most [MaxPorts]-1 ports;
//   - a notification on a port that is still unbound is silently dropped;
//   - when one end of an interdomain channel is closed, the other end's
//     waiters are woken with [evtchn.ErrClosed] and its Notify fails with
//     it; that end stays allocated until closed too;
//   - [domid.Self] names the calling domain.
//
// Unlike Xen, AllocUnbound does not require the remote domain to exist yet.
package evheap

import (
	"context"
	"fmt"
	"sync"

	"github.com/gozen-dev/gozen/domid"
	"github.com/gozen-dev/gozen/evtchn"
)

// MaxPorts bounds the port numbers of one domain (Xen's 2-level ABI limit on
// 64-bit); port 0 is never allocated.
const MaxPorts = 4096

// Hub is the in-heap "hypervisor": the port tables of all its domains.
// The zero value is not usable; call NewHub.
type Hub struct {
	mu   sync.Mutex
	doms map[domid.ID]*Domain
}

// NewHub returns a hub with no domains.
func NewHub() *Hub {
	return &Hub{doms: make(map[domid.ID]*Domain)}
}

// Domain returns the view of domain id, creating the domain on first use.
// It fails for domid.Self, which is not a domain id.
func (h *Hub) Domain(id domid.ID) (*Domain, error) {
	if id == domid.Self {
		return nil, fmt.Errorf("evheap: domain %#x: domid.Self is not a domain id: %w", id, evtchn.ErrNoPeer)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	d := h.doms[id]
	if d == nil {
		d = &Domain{hub: h, id: id, ports: make([]*port, 1)}
		h.doms[id] = d
	}
	return d, nil
}

// Stats returns the resources held by all the hub's domains.
func (h *Hub) Stats() evtchn.Stats {
	h.mu.Lock()
	defer h.mu.Unlock()
	var s evtchn.Stats
	for _, d := range h.doms {
		s.Ports += d.nports
	}
	return s
}

// Domain is one domain's event-channel service. It implements
// [evtchn.Events]; its methods are safe for concurrent use.
type Domain struct {
	hub    *Hub
	id     domid.ID
	ports  []*port // indexed by port number; nil means free
	nports int
}

var _ evtchn.Events = (*Domain)(nil)

type portState int

const (
	stateUnbound      portState = iota // allocated for remote, not bound yet
	stateInterdomain                   // bound to (remote, remotePort)
	stateRemoteClosed                  // was bound, the remote end closed
)

type port struct {
	state      portState
	remote     domid.ID
	remotePort evtchn.Port
	gen        evtchn.Generation
	closed     bool          // closed locally; the port is gone
	wake       chan struct{} // closed and replaced on every change
}

func (p *port) wakeAll() {
	close(p.wake)
	p.wake = make(chan struct{})
}

// ID returns the domain's id.
func (d *Domain) ID() domid.ID { return d.id }

// Stats returns the resources held by this domain.
func (d *Domain) Stats() evtchn.Stats {
	d.hub.mu.Lock()
	defer d.hub.mu.Unlock()
	return evtchn.Stats{Ports: d.nports}
}

func (d *Domain) resolve(id domid.ID) domid.ID {
	if id == domid.Self {
		return d.id
	}
	return id
}

// alloc allocates the lowest free port; the hub lock is held.
func (d *Domain) alloc(p *port) (evtchn.Port, error) {
	for i := 1; i < len(d.ports); i++ {
		if d.ports[i] == nil {
			d.ports[i] = p
			d.nports++
			return evtchn.Port(i), nil
		}
	}
	if len(d.ports) >= MaxPorts {
		return 0, fmt.Errorf("evheap: domain %d: %d ports in use: %w", d.id, d.nports, evtchn.ErrNoSpace)
	}
	d.ports = append(d.ports, p)
	d.nports++
	return evtchn.Port(len(d.ports) - 1), nil
}

// lookup returns the port, or nil; the hub lock is held.
func (d *Domain) lookup(p evtchn.Port) *port {
	if p == 0 || uint64(p) >= uint64(len(d.ports)) {
		return nil
	}
	return d.ports[p]
}

// AllocUnbound allocates a port that remote may bind to.
func (d *Domain) AllocUnbound(remote domid.ID) (evtchn.Port, error) {
	remote = d.resolve(remote)
	d.hub.mu.Lock()
	defer d.hub.mu.Unlock()
	p, err := d.alloc(&port{state: stateUnbound, remote: remote, wake: make(chan struct{})})
	if err != nil {
		return 0, fmt.Errorf("evheap: alloc unbound for domain %d: %w", remote, err)
	}
	return p, nil
}

// BindInterdomain binds a fresh port to remotePort of remote, which must be
// an unbound port allocated for this domain.
func (d *Domain) BindInterdomain(remote domid.ID, remotePort evtchn.Port) (evtchn.Port, error) {
	remote = d.resolve(remote)
	d.hub.mu.Lock()
	defer d.hub.mu.Unlock()
	rd := d.hub.doms[remote]
	if rd == nil {
		return 0, fmt.Errorf("evheap: bind to domain %d port %d: no such domain: %w", remote, remotePort, evtchn.ErrNoPeer)
	}
	rp := rd.lookup(remotePort)
	if rp == nil || rp.state != stateUnbound || rp.remote != d.id {
		return 0, fmt.Errorf("evheap: bind to domain %d port %d: not offered to domain %d: %w", remote, remotePort, d.id, evtchn.ErrNoPeer)
	}
	lp := &port{state: stateInterdomain, remote: remote, remotePort: remotePort, wake: make(chan struct{})}
	l, err := d.alloc(lp)
	if err != nil {
		return 0, fmt.Errorf("evheap: bind to domain %d port %d: %w", remote, remotePort, err)
	}
	rp.state = stateInterdomain
	rp.remotePort = l
	return l, nil
}

// Notify increments the generation of the remote end of port.
func (d *Domain) Notify(p evtchn.Port) error {
	d.hub.mu.Lock()
	defer d.hub.mu.Unlock()
	lp := d.lookup(p)
	if lp == nil {
		return fmt.Errorf("evheap: notify domain %d port %d: %w", d.id, p, evtchn.ErrBadPort)
	}
	switch lp.state {
	case stateUnbound:
		return nil // like Xen: dropped
	case stateRemoteClosed:
		return fmt.Errorf("evheap: notify domain %d port %d: remote end: %w", d.id, p, evtchn.ErrClosed)
	}
	rp := d.hub.doms[lp.remote].lookup(lp.remotePort)
	rp.gen++
	rp.wakeAll()
	return nil
}

// Wait blocks until the generation of port exceeds seen.
func (d *Domain) Wait(ctx context.Context, p evtchn.Port, seen evtchn.Generation) (evtchn.Generation, error) {
	d.hub.mu.Lock()
	lp := d.lookup(p)
	if lp == nil {
		d.hub.mu.Unlock()
		return 0, fmt.Errorf("evheap: wait domain %d port %d: %w", d.id, p, evtchn.ErrBadPort)
	}
	for {
		switch {
		case lp.closed:
			d.hub.mu.Unlock()
			return 0, fmt.Errorf("evheap: wait domain %d port %d: %w", d.id, p, evtchn.ErrClosed)
		case lp.gen > seen:
			g := lp.gen
			d.hub.mu.Unlock()
			return g, nil
		case lp.state == stateRemoteClosed:
			d.hub.mu.Unlock()
			return 0, fmt.Errorf("evheap: wait domain %d port %d: remote end: %w", d.id, p, evtchn.ErrClosed)
		}
		wake := lp.wake
		d.hub.mu.Unlock()
		select {
		case <-wake:
		case <-ctx.Done():
			return 0, fmt.Errorf("evheap: wait domain %d port %d: %w", d.id, p, ctx.Err())
		}
		d.hub.mu.Lock()
	}
}

// Close frees port, waking its waiters with ErrClosed, and closes the remote
// end of an interdomain channel.
func (d *Domain) Close(p evtchn.Port) error {
	d.hub.mu.Lock()
	defer d.hub.mu.Unlock()
	lp := d.lookup(p)
	if lp == nil {
		return fmt.Errorf("evheap: close domain %d port %d: %w", d.id, p, evtchn.ErrBadPort)
	}
	d.ports[p] = nil
	d.nports--
	lp.closed = true
	lp.wakeAll()
	if lp.state == stateInterdomain {
		rp := d.hub.doms[lp.remote].lookup(lp.remotePort)
		rp.state = stateRemoteClosed
		rp.wakeAll()
	}
	return nil
}
