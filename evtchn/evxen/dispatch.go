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
	"math/bits"
	"sync/atomic"
	"unsafe"

	"github.com/gozen-dev/gozen/evtchn"
	"github.com/gozen-dev/gozen/evtchn/evtable"
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

// ClearPending clears port's pending bit.
func (t *TwoLevel) ClearPending(port evtchn.Port) {
	atomic.AndUint64(&t.pending[port/64], ^(uint64(1) << (port % 64)))
}

// Pending reports whether port's pending bit is set.
func (t *TwoLevel) Pending(port evtchn.Port) bool {
	return atomic.LoadUint64(&t.pending[port/64])&(1<<(port%64)) != 0
}

// UpcallPending reports whether Xen flagged events for this vCPU.
func (t *TwoLevel) UpcallPending() bool { return atomic.LoadUint32(t.upcallPending)&0xff != 0 }

// Table tracks the ports this domain has bound: generations, waiters and
// per-port handlers (see package evtchn/evtable, which evlinux shares).
type Table = evtable.Table

// NewTable returns an empty port table for the ports of the 2-level ABI.
func NewTable() *Table { return evtable.New("evxen", NrPorts) }

// Words returns the raw 2-level state for diagnosis: the upcall flag
// word, the selector, and the pending and mask words holding port.
func (t *TwoLevel) Words(port evtchn.Port) (upcall uint32, sel, pending, mask uint64) {
	w := port / 64
	return atomic.LoadUint32(t.upcallPending), atomic.LoadUint64(t.pendingSel),
		atomic.LoadUint64(&t.pending[w]), atomic.LoadUint64(&t.mask[w])
}
