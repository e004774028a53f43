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

// portState is one bound port's notification counter and waiters.
type portState struct {
	gen     evtchn.Generation
	closed  bool
	resumed bool          // closed by Reset: the binding was lost by a resume
	cause   error         // closed by Fail: why the service broke
	wake    chan struct{} // closed and replaced on every notification
	// handler, when set, is called (on the interrupt goroutine) for each
	// notification instead of counting it (VIRQs such as the timer).
	handler func()
}

// Table tracks the ports this domain has bound: generations, waiters and
// per-port handlers. It is safe for concurrent use.
type Table struct {
	pkg   string
	limit evtchn.Port
	mu    sync.Mutex
	ports map[evtchn.Port]*portState
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

// Generation returns port's generation, or false if it is not bound.
func (t *Table) Generation(port evtchn.Port) (evtchn.Generation, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	p := t.ports[port]
	if p == nil {
		return 0, false
	}
	return p.gen, true
}

// New returns an empty port table for ports 1 to limit-1; pkg prefixes
// its error messages (the implementation's package name).
func New(pkg string, limit evtchn.Port) *Table {
	return &Table{pkg: pkg, limit: limit, ports: map[evtchn.Port]*portState{}}
}

// Add registers a freshly bound port.
func (t *Table) Add(port evtchn.Port, handler func()) error {
	if port == 0 || port >= t.limit {
		return fmt.Errorf("%s: port %d outside 1..%d: %w", t.pkg, port, t.limit-1, evtchn.ErrBadPort)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.ports[port]; ok {
		return fmt.Errorf("%s: port %d bound twice: %w", t.pkg, port, evtchn.ErrBadPort)
	}
	t.ports[port] = &portState{wake: make(chan struct{}), handler: handler}
	return nil
}

// Deliver records a notification on port and wakes its waiters.
func (t *Table) Deliver(port evtchn.Port) {
	t.mu.Lock()
	p := t.ports[port]
	if p == nil {
		t.mu.Unlock()
		t.Dropped.Add(1)
		for i := len(t.lastDropped) - 1; i > 0; i-- {
			t.lastDropped[i].Store(t.lastDropped[i-1].Load())
		}
		t.lastDropped[0].Store(uint32(port))
		return
	}
	if h := p.handler; h != nil {
		t.mu.Unlock()
		h()
		return
	}
	p.gen++
	close(p.wake)
	p.wake = make(chan struct{})
	t.mu.Unlock()
}

// Check returns an error unless port is bound and open.
func (t *Table) Check(port evtchn.Port) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	p := t.ports[port]
	if p == nil {
		return fmt.Errorf("%s: port %d is not bound by this domain: %w", t.pkg, port, evtchn.ErrBadPort)
	}
	if p.closed {
		return fmt.Errorf("%s: port %d: %w", t.pkg, port, evtchn.ErrClosed)
	}
	return nil
}

// Wait blocks until port's generation passes seen (see evtchn.Events).
func (t *Table) Wait(ctx context.Context, port evtchn.Port, seen evtchn.Generation) (evtchn.Generation, error) {
	t.mu.Lock()
	p := t.ports[port]
	t.mu.Unlock()
	if p == nil {
		return 0, fmt.Errorf("%s: wait on port %d not bound by this domain: %w", t.pkg, port, evtchn.ErrBadPort)
	}
	for {
		t.mu.Lock()
		if p.closed {
			t.mu.Unlock()
			if p.cause != nil {
				return p.gen, fmt.Errorf("%s: wait on port %d: %w: %w", t.pkg, port, evtchn.ErrClosed, p.cause)
			}
			if p.resumed {
				return p.gen, fmt.Errorf("%s: wait on port %d: %w (%w)", t.pkg, port, evtchn.ErrResumed, evtchn.ErrClosed)
			}
			return p.gen, fmt.Errorf("%s: wait on port %d: %w", t.pkg, port, evtchn.ErrClosed)
		}
		if p.gen > seen {
			g := p.gen
			t.mu.Unlock()
			return g, nil
		}
		wake := p.wake
		t.mu.Unlock()
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
	p := t.ports[port]
	if p == nil {
		return fmt.Errorf("%s: close of port %d not bound by this domain: %w", t.pkg, port, evtchn.ErrBadPort)
	}
	p.closed = true
	close(p.wake)
	delete(t.ports, port)
	return nil
}

// Fail marks every port closed because the service broke (its device
// failed): waiters wake with an error wrapping evtchn.ErrClosed and cause.
// The ports stay in the table, so that Remove still releases each.
func (t *Table) Fail(cause error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, p := range t.ports {
		if p.closed {
			continue
		}
		p.closed, p.cause = true, cause
		close(p.wake)
		p.wake = make(chan struct{})
	}
}

// Reset forgets every port, as a resume into a new domain does: their
// waiters wake with an error wrapping evtchn.ErrResumed. It returns how
// many ports were forgotten.
func (t *Table) Reset() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := len(t.ports)
	t.epoch.Add(1)
	for port, p := range t.ports {
		p.closed, p.resumed = true, true
		close(p.wake)
		delete(t.ports, port)
	}
	return n
}

// Len returns the number of bound ports (for leak checks).
func (t *Table) Len() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return len(t.ports)
}

// AppendPorts appends the bound ports to dst, or reports false when there
// are more than max. It does not allocate when dst has room.
func (t *Table) AppendPorts(dst []uint32, max int) ([]uint32, bool) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.ports) > max {
		return dst, false
	}
	for p := range t.ports {
		dst = append(dst, uint32(p))
	}
	return dst, true
}
