// Package evtable is the port table shared by the event-channel
// implementations that receive notifications as a stream of port numbers
// (evxen from the 2-level bitmaps, evlinux from /dev/xen/evtchn): per-port
// generations and waiters with the semantics of evtchn.Events (counted
// notifications, Wait past a generation, Close and Reset waking waiters),
// and optional per-port handlers. It is portable Go, tested on the host.
package evtable

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/gozen-dev/gozen/evtchn"
)

// portState is one bound port's notification counter and waiters. Its
// fields but handler are guarded by mu, the port's own lock.
type portState struct {
	mu      sync.Mutex
	gen     evtchn.Generation
	closed  bool
	removed bool          // no longer in the table (Remove or Reset)
	resumed bool          // closed by Reset: the binding was lost by a resume
	cause   error         // closed by Fail: why the service broke
	wake    chan struct{} // closed and replaced on every notification
	// handler, when set, is called (on the interrupt goroutine) for each
	// notification instead of counting it (VIRQs such as the timer). It
	// never changes.
	handler func()
}

// Ports live in chunks of chunkSize slots, made on first use, up to
// maxChunks (2^17 ports, the FIFO ABI's count).
const (
	chunkSize = 1024
	maxChunks = 128
)

// chunk is chunkSize port slots.
type chunk [chunkSize]atomic.Pointer[portState]

// Table tracks the ports this domain has bound: generations, waiters and
// per-port handlers. It is safe for concurrent use. The hot path,
// Deliver, Check, Wait and Generation, finds a port without a table-wide
// lock (an atomic load of its slot) and takes only that port's lock;
// binding changes (Add, Remove, Fail, Reset) are serialised by the
// table's lock.
type Table struct {
	pkg    string
	limit  evtchn.Port
	mu     sync.Mutex // serialises binding changes
	chunks [maxChunks]atomic.Pointer[chunk]
	n      atomic.Int64 // ports in the table
	// Dropped counts notifications for ports not in the table.
	Dropped atomic.Uint64
	// lastDropped holds the last ports dropped, for diagnosis.
	lastDropped [4]atomic.Uint32
	epoch       atomic.Uint64 // Resets so far
}

// Epoch counts the Resets so far (see evtchn.Epocher).
func (t *Table) Epoch() uint64 { return t.epoch.Load() }

// LastDropped returns the ports of the last notifications dropped (at
// most four, most recent first, 0 for none).
func (t *Table) LastDropped() [4]uint32 {
	var out [4]uint32
	for i := range out {
		out[i] = t.lastDropped[i].Load()
	}
	return out
}

// lookup returns port's state, or nil if it is not in the table.
func (t *Table) lookup(port evtchn.Port) *portState {
	if port >= t.limit {
		return nil
	}
	c := t.chunks[port/chunkSize].Load()
	if c == nil {
		return nil
	}
	return c[port%chunkSize].Load()
}

// each calls f with every port in the table, in order. The caller holds
// t.mu.
func (t *Table) each(f func(port evtchn.Port, slot *atomic.Pointer[portState], p *portState)) {
	for ci := range t.chunks {
		c := t.chunks[ci].Load()
		if c == nil {
			continue
		}
		for i := range c {
			if p := c[i].Load(); p != nil {
				f(evtchn.Port(ci*chunkSize+i), &c[i], p)
			}
		}
	}
}

// Generation returns port's generation, or false if it is not bound.
func (t *Table) Generation(port evtchn.Port) (evtchn.Generation, bool) {
	p := t.lookup(port)
	if p == nil {
		return 0, false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.removed {
		return 0, false
	}
	return p.gen, true
}

// New returns an empty port table for ports 1 to limit-1 (at most 2^17);
// pkg prefixes its error messages (the implementation's package name).
func New(pkg string, limit evtchn.Port) *Table {
	limit = min(limit, chunkSize*maxChunks)
	return &Table{pkg: pkg, limit: limit}
}

// Add registers a freshly bound port.
func (t *Table) Add(port evtchn.Port, handler func()) error {
	if port == 0 || port >= t.limit {
		return fmt.Errorf("%s: port %d outside 1..%d: %w", t.pkg, port, t.limit-1, evtchn.ErrBadPort)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	c := t.chunks[port/chunkSize].Load()
	if c == nil {
		c = new(chunk)
		t.chunks[port/chunkSize].Store(c)
	}
	slot := &c[port%chunkSize]
	if slot.Load() != nil {
		return fmt.Errorf("%s: port %d bound twice: %w", t.pkg, port, evtchn.ErrBadPort)
	}
	slot.Store(&portState{wake: make(chan struct{}), handler: handler})
	t.n.Add(1)
	return nil
}

// drop counts a notification for a port not in the table.
func (t *Table) drop(port evtchn.Port) {
	t.Dropped.Add(1)
	for i := len(t.lastDropped) - 1; i > 0; i-- {
		t.lastDropped[i].Store(t.lastDropped[i-1].Load())
	}
	t.lastDropped[0].Store(uint32(port))
}

// Deliver records a notification on port and wakes its waiters.
func (t *Table) Deliver(port evtchn.Port) {
	p := t.lookup(port)
	if p == nil {
		t.drop(port)
		return
	}
	if h := p.handler; h != nil {
		h()
		return
	}
	p.mu.Lock()
	if p.removed {
		p.mu.Unlock()
		t.drop(port)
		return
	}
	p.gen++
	close(p.wake)
	p.wake = make(chan struct{})
	p.mu.Unlock()
}

// Check returns an error unless port is bound and open.
func (t *Table) Check(port evtchn.Port) error {
	p := t.lookup(port)
	if p == nil {
		return fmt.Errorf("%s: port %d is not bound by this domain: %w", t.pkg, port, evtchn.ErrBadPort)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.removed {
		return fmt.Errorf("%s: port %d is not bound by this domain: %w", t.pkg, port, evtchn.ErrBadPort)
	}
	if p.closed {
		return fmt.Errorf("%s: port %d: %w", t.pkg, port, evtchn.ErrClosed)
	}
	return nil
}

// Wait blocks until port's generation passes seen (see evtchn.Events).
func (t *Table) Wait(ctx context.Context, port evtchn.Port, seen evtchn.Generation) (evtchn.Generation, error) {
	p := t.lookup(port)
	if p == nil {
		return 0, fmt.Errorf("%s: wait on port %d not bound by this domain: %w", t.pkg, port, evtchn.ErrBadPort)
	}
	for {
		p.mu.Lock()
		if p.closed {
			g, cause, resumed := p.gen, p.cause, p.resumed
			p.mu.Unlock()
			if cause != nil {
				return g, fmt.Errorf("%s: wait on port %d: %w: %w", t.pkg, port, evtchn.ErrClosed, cause)
			}
			if resumed {
				return g, fmt.Errorf("%s: wait on port %d: %w (%w)", t.pkg, port, evtchn.ErrResumed, evtchn.ErrClosed)
			}
			return g, fmt.Errorf("%s: wait on port %d: %w", t.pkg, port, evtchn.ErrClosed)
		}
		if p.gen > seen {
			g := p.gen
			p.mu.Unlock()
			return g, nil
		}
		wake := p.wake
		p.mu.Unlock()
		select {
		case <-wake:
		case <-ctx.Done():
			return seen, ctx.Err()
		}
	}
}

// Remove marks port closed, wakes its waiters and forgets it.
func (t *Table) Remove(port evtchn.Port) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	var slot *atomic.Pointer[portState]
	if port < t.limit {
		if c := t.chunks[port/chunkSize].Load(); c != nil {
			slot = &c[port%chunkSize]
		}
	}
	var p *portState
	if slot != nil {
		p = slot.Load()
	}
	if p == nil {
		return fmt.Errorf("%s: close of port %d not bound by this domain: %w", t.pkg, port, evtchn.ErrBadPort)
	}
	p.mu.Lock()
	if !p.closed || p.cause != nil {
		// a Fail'd port's wake was replaced; this one is still open
		close(p.wake)
	}
	p.closed, p.removed = true, true
	p.mu.Unlock()
	slot.Store(nil)
	t.n.Add(-1)
	return nil
}

// Fail marks every port closed because the service broke (its device
// failed): waiters wake with an error wrapping evtchn.ErrClosed and cause.
// The ports stay in the table, so that Remove still releases each.
func (t *Table) Fail(cause error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.each(func(_ evtchn.Port, _ *atomic.Pointer[portState], p *portState) {
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.closed {
			return
		}
		p.closed, p.cause = true, cause
		close(p.wake)
		p.wake = make(chan struct{})
	})
}

// Reset forgets every port, as a resume into a new domain does: their
// waiters wake with an error wrapping evtchn.ErrResumed. It returns how
// many ports were forgotten.
func (t *Table) Reset() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := 0
	t.epoch.Add(1)
	t.each(func(_ evtchn.Port, slot *atomic.Pointer[portState], p *portState) {
		p.mu.Lock()
		if !p.closed || p.cause != nil {
			close(p.wake)
		}
		p.closed, p.removed, p.resumed = true, true, true
		p.mu.Unlock()
		slot.Store(nil)
		n++
	})
	t.n.Store(0)
	return n
}

// Len returns the number of bound ports (for leak checks).
func (t *Table) Len() int { return int(t.n.Load()) }

// AppendPorts appends the bound ports to dst, or reports false when there
// are more than max. It does not allocate when dst has room.
func (t *Table) AppendPorts(dst []uint32, max int) ([]uint32, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if int(t.n.Load()) > max {
		return dst, false
	}
	t.each(func(port evtchn.Port, _ *atomic.Pointer[portState], _ *portState) {
		dst = append(dst, uint32(port))
	})
	return dst, true
}
