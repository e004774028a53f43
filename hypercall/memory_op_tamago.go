//go:build tamago

package hypercall

import (
	"runtime"
	"unsafe"

	"github.com/gozen-dev/gozen/domid"
)

// memory_op sub-operations.
const (
	xenmemDecreaseReservation = 1
	xenmemPopulatePhysmap     = 6
	xenmemAddToPhysmap        = 7
	xenmemMemoryMap           = 9
	xenmemCurrentReservation  = 3
)

// Map spaces for AddToPhysmap (XENMAPSPACE_*).
const (
	MapSpaceSharedInfo = 0
	MapSpaceGrantTable = 1
)

// selfID is DOMID_SELF as the hypercall structures carry it.
const selfID = uint16(domid.Self)

// AddToPhysmap maps the frame idx of space into the caller's physical
// address space at page frame gpfn.
func AddToPhysmap(space uint32, idx uint64, gpfn uint64) error {
	var arg struct {
		domid uint16
		size  uint16
		space uint32
		idx   uint64
		gpfn  uint64
	}
	arg.domid = selfID
	arg.space = space
	arg.idx = idx
	arg.gpfn = gpfn
	r := call(opMemory, xenmemAddToPhysmap, ptr(&arg), 0, 0, 0)
	runtime.KeepAlive(&arg)
	return Check("memory_op(add_to_physmap)", r)
}

// E820Entry is one entry of the memory map Xen gives a domain.
type E820Entry struct {
	Addr uint64
	Size uint64
	Type uint32
	_    uint32
}

// MemoryMap asks Xen for the domain's pseudo-physical memory map
// (XENMEM_memory_map), filling buf and returning the number of entries.
func MemoryMap(buf []E820Entry) (int, error) {
	if len(buf) == 0 {
		return 0, nil
	}
	var arg struct {
		nrEntries uint32
		_         uint32
		buffer    uintptr
	}
	arg.nrEntries = uint32(len(buf))
	arg.buffer = ptr(&buf[0])
	r := call(opMemory, xenmemMemoryMap, ptr(&arg), 0, 0, 0)
	runtime.KeepAlive(buf)
	if err := Check("memory_op(memory_map)", r); err != nil {
		return 0, err
	}
	n := int(arg.nrEntries)
	if n > len(buf) {
		n = len(buf)
	}
	return n, nil
}

// CurrentReservation returns the number of pages the domain holds.
func CurrentReservation() (uint64, error) {
	self := uint16(selfID)
	r := call(opMemory, xenmemCurrentReservation, ptr(&self), 0, 0, 0)
	if err := Check("memory_op(current_reservation)", r); err != nil {
		return 0, err
	}
	return uint64(r), nil
}

// reservation is struct xen_memory_reservation.
type reservation struct {
	extentStart uintptr // XEN_GUEST_HANDLE(xen_pfn_t)
	nrExtents   uint64
	extentOrder uint32
	memFlags    uint32
	domid       uint16
	_           [6]byte
}

// SuperpageOrder is the extent order of a 2 MiB superpage (512 4 KiB
// frames), the largest Xen gives an ordinary domU (its domu_max_order).
const SuperpageOrder = 9

// DecreaseReservation gives the n extents of 2^order 4 KiB frames whose
// first frame numbers are at frames back to Xen
// (XENMEM_decrease_reservation): their guest-physical pages are left
// unpopulated. An extent of order > 0 must be aligned to its size. It
// returns how many extents Xen took whole (the first ones, in order) or a
// negative errno; when it stops short, Xen may have taken part of the
// next extent's frames. It is nosplit and allocates nothing, for use with
// interrupts off around a suspend.
//
//go:nosplit
func DecreaseReservation(frames *uint64, n int, order uint32) int64 {
	r := reservation{extentStart: uintptr(unsafe.Pointer(frames)), nrExtents: uint64(n), extentOrder: order, domid: selfID}
	return call(opMemory, xenmemDecreaseReservation, uintptr(unsafe.Pointer(&r)), 0, 0, 0)
}

// PopulatePhysmap backs the n guest-physical extents of 2^order 4 KiB
// frames whose first frame numbers are at frames with pages from Xen's
// heap (XENMEM_populate_physmap); an extent of order > 0 must be aligned
// to its size, and Xen may refuse it when it has no free run that large.
// The pages are not cleared: Xen scrubs only the pages of a dying domain
// before reusing them, so a page another domain gave back holds what it
// held then. It returns how many extents were populated (the first ones,
// in order; a refused extent is left unpopulated) or a negative errno.
// Nosplit and allocation-free, like DecreaseReservation.
//
//go:nosplit
func PopulatePhysmap(frames *uint64, n int, order uint32) int64 {
	r := reservation{extentStart: uintptr(unsafe.Pointer(frames)), nrExtents: uint64(n), extentOrder: order, domid: selfID}
	return call(opMemory, xenmemPopulatePhysmap, uintptr(unsafe.Pointer(&r)), 0, 0, 0)
}
