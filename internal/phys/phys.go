// Package phys turns guest-physical addresses into Go pointers, in one
// place.
//
// A Gozen guest runs with an identity map, so a guest-physical address is
// also a virtual one: Xen's shared-info page, the grant table frames and
// mappings, the xenstore and console rings are at addresses Xen or the
// memory map gives as integers, outside the Go heap. Converting such an
// integer with unsafe.Pointer(uintptr(x)) is what go vet's unsafeptr check
// rightly flags in ordinary Go; here it is the only way to reach the page,
// and the garbage collector ignores pointers outside its heap. Callers
// must pass addresses of memory the Go heap does not own.
package phys

import "unsafe"

// Pointer returns the pointer for the guest-physical address addr.
//
//go:nosplit
func Pointer(addr uintptr) unsafe.Pointer {
	return unsafe.Add(unsafe.Pointer(nil), addr)
}

// Bytes returns the n bytes at the guest-physical address addr.
//
//go:nosplit
func Bytes(addr uintptr, n int) []byte {
	return unsafe.Slice((*byte)(Pointer(addr)), n)
}
