//go:build tamago

package boot

import (
	"fmt"
	"sync/atomic"
	"unsafe"

	"github.com/gozen-dev/gozen/arch/amd64/smp"
	"github.com/gozen-dev/gozen/hypercall"
)

// Per-vCPU vcpu_info. Xen keeps one struct vcpu_info per vCPU (the
// event-channel upcall flag and selector, and a copy of the vCPU's time
// record). The shared-info page holds those of vCPUs 0 to 31 only
// (SharedVCPUs); VCPUOP_register_vcpu_info moves one to guest memory of
// the domain's choosing, and is the only way vCPUs 32 and up get one. As
// Linux does (xen_vcpu_setup), every vCPU's vcpu_info is registered, vCPU
// 0's included: vCPU 0's from itself (package platform, before it views
// the event bitmaps), the others' while they are still down (smp.Config.
// Prepare, before VCPUOP_initialise, which Xen refuses for a vCPU without
// a vcpu_info, and VCPUOP_up). If Xen refuses, a
// vCPU below 32 keeps its slot in shared info; one of 32 and up has no
// vcpu_info and cannot be used (PrepareVCPU fails, and package smp brings
// up fewer vCPUs).
//
// The areas are one static, page-aligned block of MaxCPUs entries of 64
// bytes in the image (which never moves): 64 entries fill a page, so none
// crosses a page boundary, as Xen requires.
//
// Xen accepts one registration per vCPU in the life of a domain. A
// restored or migrated domain is a new one, where every vcpu_info is back
// in shared info (or absent): resumeLocked registers the areas again,
// each vCPU down (the leader's from itself), before the time areas, as
// Linux's xen_vcpu_restore does. After a checkpoint (xl save -c), which a
// PVH guest without a callback IRQ cannot tell from a restore, the domain
// kept its registrations and Xen refuses the second one: a refusal after
// a resume therefore keeps the area registered at boot.
var (
	vcpuInfoPages [smp.MaxCPUs*vcpuInfoSize + 4096]byte
	vcpuInfoOK    [smp.MaxCPUs]uint32 // 1: vCPU i's area in vcpuInfoPages is registered
	vcpuInfoArg   struct {
		gfn    uint64 // the area's frame (mfn in the public header: a gfn for HVM/PVH)
		offset uint32 // its offset in that frame
		_      uint32
	}
)

// SharedVCPUs is how many vcpu_info records the shared-info page holds
// (XEN_LEGACY_MAX_VCPUS on x86).
const SharedVCPUs = 32

// vcpuopRegisterVCPUInfo is VCPUOP_register_vcpu_info.
const vcpuopRegisterVCPUInfo = 10

// vcpuInfoArea returns vCPU id's entry in vcpuInfoPages.
//
//go:nosplit
func vcpuInfoArea(id int) uintptr {
	base := (uintptr(unsafe.Pointer(&vcpuInfoPages[0])) + 4095) &^ 4095
	return base + uintptr(id)*vcpuInfoSize
}

// vcpuInfoAddr returns where Xen keeps vCPU id's vcpu_info: its
// registered area, its slot in shared info (vCPUs below 32), or 0.
//
//go:nosplit
func vcpuInfoAddr(id int) uintptr {
	if id < 0 || id >= smp.MaxCPUs {
		return 0
	}
	if atomic.LoadUint32(&vcpuInfoOK[id]) != 0 {
		return vcpuInfoArea(id)
	}
	if id < SharedVCPUs {
		return sharedInfoPage + uintptr(id)*vcpuInfoSize
	}
	return 0
}

// VCPUInfo returns the address of vCPU id's vcpu_info as Xen keeps it
// (see above): the registered area, the vCPU's slot in shared info when
// Xen refused the area (vCPUs below 32), or 0 when the vCPU has none.
// Package evtchn/evxen reads the upcall flag and selector there.
func VCPUInfo(id int) uintptr { return vcpuInfoAddr(id) }

// VCPUInfoRegistered reports whether vCPU id's vcpu_info is in its
// registered area (otherwise in shared info, or nowhere).
func VCPUInfoRegistered(id int) bool {
	return id >= 0 && id < smp.MaxCPUs && atomic.LoadUint32(&vcpuInfoOK[id]) != 0
}

// registerVCPUInfo makes VCPUOP_register_vcpu_info for vCPU id, which
// must be the caller's or down, and returns Xen's answer. On success the
// area is marked registered; a refusal leaves the mark as it was (see
// above). The upcall mask byte, which Xen sets in an area it zero-fills
// (vCPUs 32 and up) and which HVM delivery does not use, is cleared, so
// that every vCPU's record looks alike.
//
//go:nosplit
func registerVCPUInfo(id int) int64 {
	if id < 0 || id >= smp.MaxCPUs {
		return -22 // -EINVAL
	}
	area := vcpuInfoArea(id)
	vcpuInfoArg.gfn = uint64(area >> 12)
	vcpuInfoArg.offset = uint32(area & 4095)
	r := hypercall.Raw(opVCPU, vcpuopRegisterVCPUInfo, uintptr(id), uintptr(unsafe.Pointer(&vcpuInfoArg)), 0, 0)
	if r == 0 {
		atomic.AndUint32(u32(area), ^uint32(0xff00)) // evtchn_upcall_mask
		atomic.StoreUint32(&vcpuInfoOK[id], 1)
	}
	return r
}

// RegisterVCPUInfo registers vCPU id's vcpu_info area: call it from vCPU
// id itself (vCPU 0, before the event bitmaps are viewed) or while vCPU id
// is down. On an error the vCPU keeps its slot in shared info if it has
// one (below SharedVCPUs).
func RegisterVCPUInfo(id int) error {
	if id < 0 || id >= smp.MaxCPUs {
		return fmt.Errorf("boot: vCPU %d: vcpu_info: want 0 to %d", id, smp.MaxCPUs-1)
	}
	if err := hypercall.Check("vcpu_op(register_vcpu_info)", registerVCPUInfo(id)); err != nil {
		return fmt.Errorf("boot: vCPU %d: vcpu_info: %w", id, err)
	}
	return nil
}

// PrepareVCPU is package smp's Config.Prepare hook for vCPU id (1 and
// up), called while the vCPU is down: it registers the vCPU's vcpu_info
// and its time area. It fails only when the vCPU would have no vcpu_info
// (Xen refused the area of a vCPU of 32 and up); a vCPU below 32 whose
// area Xen refused keeps its slot in shared info, with a note on the
// console.
func PrepareVCPU(id int) error {
	if err := RegisterVCPUInfo(id); err != nil {
		if id >= SharedVCPUs {
			return fmt.Errorf("%w; a vCPU of %d and up has no vcpu_info in shared info and cannot be used", err, SharedVCPUs)
		}
		print("gozen: ", err.Error(), "; it stays in shared info\n")
	}
	RegisterVCPUTime(id)
	return nil
}
