// Package evxen implements the evtchn.Events interface in a Gozen guest with
// Xen event channels: the 2-level ABI read from the shared-info page, an
// upcall on a LAPIC vector (HVMOP_set_evtchn_upcall_vector) serviced by
// TamaGo's interrupt goroutine, and EVTCHNOP_* hypercalls.
//
// The scan of the 2-level bitmaps and the per-port generation counters in
// this file are portable and tested on the host against fake shared memory;
// the hypercall layer builds only for GOOS=tamago.
package evxen

import (
	"context"
	"fmt"
	"math/bits"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/gozen-dev/gozen/evtchn"
)

// NrPorts is the number of ports of the 2-level ABI on x86-64 (64 words of
// 64 bits).
const NrPorts = 64 * 64

// Offsets in the shared-info page and vCPU 0's vcpu_info.
const (
	offUpcallPending = 0    // vcpu_info.evtchn_upcall_pending
	offPendingSel    = 8    // vcpu_info.evtchn_pending_sel
	offPending       = 2048 // shared_info.evtchn_pending[64]
	offMask          = 2560 // shared_info.evtchn_mask[64]
)

// TwoLevel is a view of the 2-level event-channel bitmaps of one vCPU.
type TwoLevel struct {
	upcallPending *uint32 // the byte at vcpu_info+0, accessed as the aligned word holding it
	pendingSel    *uint64
	pending       *[64]uint64
	mask          *[64]uint64
}

// NewTwoLevel views the bitmaps in the shared-info page at sharedInfo, for
// the vCPU whose vcpu_info is at vcpuInfo (vCPU 0's is sharedInfo+0).
func NewTwoLevel(sharedInfo, vcpuInfo unsafe.Pointer) *TwoLevel {
	return &TwoLevel{
		upcallPending: (*uint32)(unsafe.Add(vcpuInfo, offUpcallPending)),
		pendingSel:    (*uint64)(unsafe.Add(vcpuInfo, offPendingSel)),
		pending:       (*[64]uint64)(unsafe.Add(sharedInfo, offPending)),
		mask:          (*[64]uint64)(unsafe.Add(sharedInfo, offMask)),
	}
}

// Scan clears the upcall flag and the selector, then for every pending and
// unmasked port atomically clears its pending bit and calls deliver. It
// returns the number of ports delivered. Xen sets bits concurrently; every
// read-modify-write is atomic.
func (t *TwoLevel) Scan(deliver func(evtchn.Port)) int {
	// evtchn_upcall_pending is the low byte of the first word; the mask
	// byte next to it is ours (unused for HVM), so clearing the low byte
	// with an atomic AND is safe.
	atomic.AndUint32(t.upcallPending, ^uint32(0xff))
	n := 0
	sel := atomic.SwapUint64(t.pendingSel, 0)
	for sel != 0 {
		w := bits.TrailingZeros64(sel)
		sel &^= 1 << w
		for {
			ready := atomic.LoadUint64(&t.pending[w]) &^ atomic.LoadUint64(&t.mask[w])
			if ready == 0 {
				break
			}
			b := bits.TrailingZeros64(ready)
			old := atomic.AndUint64(&t.pending[w], ^(uint64(1) << b))
			if old&(1<<b) != 0 {
				deliver(evtchn.Port(w*64 + b))
				n++
			}
		}
	}
	return n
}

// SetMask masks or unmasks port in the shared bitmap (unmasking alone does
// not redeliver a pending event; use EVTCHNOP_unmask for that).
func (t *TwoLevel) SetMask(port evtchn.Port, masked bool) {
	w, b := port/64, port%64
	if masked {
		atomic.OrUint64(&t.mask[w], 1<<b)
	} else {
		atomic.AndUint64(&t.mask[w], ^(uint64(1) << b))
	}
}

// Pending reports whether port's pending bit is set.
func (t *TwoLevel) Pending(port evtchn.Port) bool {
	return atomic.LoadUint64(&t.pending[port/64])&(1<<(port%64)) != 0
}

// UpcallPending reports whether Xen flagged events for this vCPU.
func (t *TwoLevel) UpcallPending() bool { return atomic.LoadUint32(t.upcallPending)&0xff != 0 }

// portState is one bound port's notification counter and waiters.
type portState struct {
	gen     evtchn.Generation
	closed  bool
	resumed bool          // closed by Reset: the binding was lost by a resume
	wake    chan struct{} // closed and replaced on every notification
	// handler, when set, is called (on the interrupt goroutine) for each
	// notification instead of counting it (VIRQs such as the timer).
	handler func()
}

// Table tracks the ports this domain has bound: generations, waiters and
// per-port handlers. It is safe for concurrent use.
type Table struct {
	mu    sync.Mutex
	ports map[evtchn.Port]*portState
	// Dropped counts notifications for ports not in the table.
	Dropped atomic.Uint64
	// lastDropped holds the last ports dropped, for diagnosis.
	lastDropped [4]atomic.Uint32
}

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

// NewTable returns an empty port table.
func NewTable() *Table { return &Table{ports: map[evtchn.Port]*portState{}} }

// Add registers a freshly bound port.
func (t *Table) Add(port evtchn.Port, handler func()) error {
	if port == 0 || port >= NrPorts {
		return fmt.Errorf("evxen: port %d outside the 2-level ABI: %w", port, evtchn.ErrBadPort)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.ports[port]; ok {
		return fmt.Errorf("evxen: port %d bound twice: %w", port, evtchn.ErrBadPort)
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
		return fmt.Errorf("evxen: port %d is not bound by this domain: %w", port, evtchn.ErrBadPort)
	}
	if p.closed {
		return fmt.Errorf("evxen: port %d: %w", port, evtchn.ErrClosed)
	}
	return nil
}

// Wait blocks until port's generation passes seen (see evtchn.Events).
func (t *Table) Wait(ctx context.Context, port evtchn.Port, seen evtchn.Generation) (evtchn.Generation, error) {
	t.mu.Lock()
	p := t.ports[port]
	t.mu.Unlock()
	if p == nil {
		return 0, fmt.Errorf("evxen: wait on port %d not bound by this domain: %w", port, evtchn.ErrBadPort)
	}
	for {
		t.mu.Lock()
		if p.closed {
			t.mu.Unlock()
			if p.resumed {
				return p.gen, fmt.Errorf("evxen: wait on port %d: %w (%w)", port, evtchn.ErrResumed, evtchn.ErrClosed)
			}
			return p.gen, fmt.Errorf("evxen: wait on port %d: %w", port, evtchn.ErrClosed)
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
		return fmt.Errorf("evxen: close of port %d not bound by this domain: %w", port, evtchn.ErrBadPort)
	}
	p.closed = true
	close(p.wake)
	delete(t.ports, port)
	return nil
}

// Reset forgets every port, as a resume into a new domain does: their
// waiters wake with an error wrapping evtchn.ErrResumed. It returns how
// many ports were forgotten.
func (t *Table) Reset() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := len(t.ports)
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

// Words returns the raw 2-level state for diagnosis: the upcall flag
// word, the selector, and the pending and mask words holding port.
func (t *TwoLevel) Words(port evtchn.Port) (upcall uint32, sel, pending, mask uint64) {
	w := port / 64
	return atomic.LoadUint32(t.upcallPending), atomic.LoadUint64(t.pendingSel),
		atomic.LoadUint64(&t.pending[w]), atomic.LoadUint64(&t.mask[w])
}
