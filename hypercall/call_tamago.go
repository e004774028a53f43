//go:build tamago

package hypercall

import (
	"errors"
	"unsafe"
)

// Hypercall numbers (xen/include/public/xen.h).
const (
	opMemory       = 12
	opXenVersion   = 17
	opConsoleIO    = 18
	opGrantTable   = 20
	opVCPU         = 24
	opSched        = 29
	opEventChannel = 32
	opHVM          = 34
	opArgo         = 39
)

// page is the guest-physical (identity-mapped) address of the hypercall
// page, zero until Init.
var page uintptr

// call issues hypercall op with up to five arguments.
//
//go:noescape
func call(op, a1, a2, a3, a4, a5 uintptr) int64

// Init records the address of the hypercall page that Xen filled in (the
// boot package wrote its address to the MSR named by the Xen CPUID leaf).
func Init(pageAddr uintptr) error {
	if pageAddr == 0 || pageAddr&0xfff != 0 {
		return errors.New("hypercall: hypercall page address not page-aligned")
	}
	page = pageAddr
	return nil
}

// Ready reports whether Init has been called.
func Ready() bool { return page != 0 }

// Page returns the address of the hypercall page (zero before Init), for
// assembly that makes hypercalls where no Go code may run.
func Page() uintptr { return page }

// Raw issues hypercall op with the given arguments and returns Xen's raw
// result. Wrappers in this package are preferred; Raw is for families not
// wrapped yet, and for code that must not allocate or be preempted (it is
// nosplit: the suspend path runs with the other vCPUs stopped).
//
//go:nosplit
func Raw(op, a1, a2, a3, a4, a5 uintptr) int64 {
	return call(op, a1, a2, a3, a4, a5)
}

// ptr converts a pointer argument. The hypercall stub is NOSPLIT, so the
// Go stack cannot move between taking the address and Xen reading it.
func ptr[T any](p *T) uintptr { return uintptr(unsafe.Pointer(p)) }
