//go:build tamago

package boot

import (
	"sync/atomic"
	"time"
	"unsafe"
	_ "unsafe"

	"github.com/gozen-dev/gozen/arch/amd64/smp"
	"github.com/gozen-dev/gozen/hypercall"
	"github.com/gozen-dev/gozen/internal/phys"
)

// Offsets in the shared-info page (x86-64 struct shared_info).
const (
	shinfoWCVersion = 3072
	shinfoWCSec     = 3076
	shinfoWCNsec    = 3080
	shinfoWCSecHi   = 3084
)

// wallOffset is the Unix time in ns at Xen system time zero, read once so
// that the runtime's clock, which is also its monotonic clock, never jumps
// (a resume moves it forward only: see resumeLocked).
var wallOffset int64

func u32(addr uintptr) *uint32 { return (*uint32)(phys.Pointer(addr)) }
func u64(addr uintptr) *uint64 { return (*uint64)(phys.Pointer(addr)) }

// Per-vCPU time. Xen keeps one vcpu_time_info per vCPU (its TSC stamp and
// system time differ from vCPU to vCPU); each vCPU reads its own, never
// another's, with smp.Current (the clock is nosplit code, which the
// runtime cannot move to another vCPU midway). vCPU 0's record is the
// time area the entry code registers (vcpuTime); the others' are
// registered by RegisterVCPUTime before they start, in apTimes. A vCPU
// whose area Xen refused reads the copy in its vcpu_info (the registered
// one, see vcpuinfo_tamago.go, or its slot in shared info).
var (
	apTimes   [smp.MaxCPUs*timeRecSize + timeRecSize]byte
	apTimeOK  [smp.MaxCPUs]uint32 // 1: vCPU i's area in apTimes is registered
	clampTime uint32              // 1 once a second vCPU reads the clock
	lastMono  atomic.Int64        // the latest clock value handed out (clampTime)
	clamped   atomic.Uint64       // readings the clamp raised (ClockClamps)
)

// ClockClamps returns how many clock readings were below one another vCPU
// had already been given, and were raised to it (see nanotime): the
// disagreement between the vCPUs' time records, for tests and diagnosis.
func ClockClamps() uint64 { return clamped.Load() }

// timeRecSize is the size of struct vcpu_time_info; records at a multiple
// of it from an aligned base never cross a page, as Xen requires.
const timeRecSize = 32

// apTimeAddr returns vCPU id's time area in apTimes.
//
//go:nosplit
func apTimeAddr(id int) uintptr {
	base := (uintptr(unsafe.Pointer(&apTimes[0])) + timeRecSize - 1) &^ (timeRecSize - 1)
	return base + uintptr(id)*timeRecSize
}

// timeArea returns the vcpu_time_info of the calling vCPU.
//
//go:nosplit
func timeArea() uintptr {
	id := smp.Current()
	if id == 0 {
		if vcpuTimeResult == 0 {
			return uintptr(unsafe.Pointer(&vcpuTime))
		}
	} else if atomic.LoadUint32(&apTimeOK[id]) != 0 {
		return apTimeAddr(id)
	}
	if vi := vcpuInfoAddr(id); vi != 0 {
		return vi + vcpuInfoTime
	}
	// no vcpu_info: such a vCPU is never brought up (see PrepareVCPU)
	return sharedInfoPage + vcpuInfoTime
}

// vcpuInfoSize is the size of struct vcpu_info; shared info starts with
// those of vCPUs 0 to 31 (see vcpuinfo_tamago.go).
const vcpuInfoSize = 64

// vcpuInfoTime is the offset of the time record in struct vcpu_info.
const vcpuInfoTime = 32

// RegisterVCPUTime registers vCPU id's time area
// (VCPUOP_register_vcpu_time_memory_area) and makes the clock read it on
// that vCPU; package platform calls it for each vCPU smp.Start brings up,
// before the vCPU starts. From then on the clock never goes back across
// vCPUs (see nanotime). If Xen refuses, the vCPU reads the copy in its
// vcpu_info.
func RegisterVCPUTime(id int) {
	if id <= 0 || id >= smp.MaxCPUs {
		return
	}
	registerTime(id)
	atomic.StoreUint32(&clampTime, 1)
}

// VCPUTimeRegistered reports whether vCPU id reads its own registered
// time area (otherwise the copy in its vcpu_info).
func VCPUTimeRegistered(id int) bool {
	if id == 0 {
		return vcpuTimeResult == 0
	}
	return id > 0 && id < smp.MaxCPUs && atomic.LoadUint32(&apTimeOK[id]) != 0
}

// timeAreaArg is struct vcpu_register_time_memory_area (the area's
// address), static so that the suspend path can use it (see resumeLocked).
var timeAreaArg uint64

// registerTime registers vCPU id's time area and records Xen's answer.
//
//go:nosplit
func registerTime(id int) {
	if id == 0 {
		timeAreaArg = uint64(uintptr(unsafe.Pointer(&vcpuTime)))
	} else {
		timeAreaArg = uint64(apTimeAddr(id))
	}
	r := hypercall.Raw(opVCPU, vcpuopRegisterTime, uintptr(id), uintptr(unsafe.Pointer(&timeAreaArg)), 0, 0)
	if id == 0 {
		vcpuTimeResult = r
		return
	}
	ok := uint32(0)
	if r == 0 {
		ok = 1
	}
	atomic.StoreUint32(&apTimeOK[id], ok)
}

// Hypercall numbers the nosplit paths use through hypercall.Raw.
const (
	opMemory           = 12
	opVCPU             = 24
	vcpuopUp           = 1
	vcpuopDown         = 2
	vcpuopRegisterTime = 13
	xenmemAddToPhysmap = 7
)

// readTimeInfo takes a consistent snapshot of a vcpu_time_info (Xen makes
// the version odd while it updates the record).
//
//go:nosplit
func readTimeInfo(area uintptr) (ti TimeInfo, tsc uint64) {
	for {
		v1 := atomic.LoadUint32(u32(area))
		if v1&1 != 0 {
			continue
		}
		ti.Version = v1
		ti.TSCTimestamp = atomic.LoadUint64(u64(area + 8))
		ti.SystemTime = atomic.LoadUint64(u64(area + 16))
		ti.Mul = atomic.LoadUint32(u32(area + 24))
		sf := atomic.LoadUint32(u32(area + 28))
		ti.Shift = int8(sf)
		ti.Flags = uint8(sf >> 8)
		tsc = rdtsc()
		if atomic.LoadUint32(u32(area)) == v1 {
			return
		}
	}
}

// SystemTime returns Xen system time: nanoseconds since the hypervisor
// booted, the time base of Xen timers.
//
//go:nosplit
func SystemTime() uint64 {
	ti, tsc := readTimeInfo(timeArea())
	return ti.SystemTimeAt(tsc)
}

// readWallClock reads shared info's wall clock consistently.
//
//go:nosplit
func readWallClock() int64 {
	p := sharedInfoPage
	for {
		v1 := atomic.LoadUint32(u32(p + shinfoWCVersion))
		if v1&1 != 0 {
			continue
		}
		sec := atomic.LoadUint32(u32(p + shinfoWCSec))
		nsec := atomic.LoadUint32(u32(p + shinfoWCNsec))
		hi := atomic.LoadUint32(u32(p + shinfoWCSecHi))
		if atomic.LoadUint32(u32(p+shinfoWCVersion)) == v1 {
			return WallClock(hi, sec, nsec)
		}
	}
}

// pvclockStable is XEN_PVCLOCK_TSC_STABLE_BIT: Xen vouches that the TSC
// is synchronised across the host's CPUs, so no clamp is needed.
const pvclockStable = 1

// rawNanotime is the clock without the cross-vCPU clamp.
//
//go:nosplit
func rawNanotime() (int64, bool) {
	if wallOffset == 0 {
		wallOffset = readWallClock()
	}
	ti, tsc := readTimeInfo(timeArea())
	return wallOffset + int64(ti.SystemTimeAt(tsc)), ti.Flags&pvclockStable != 0
}

// nanotime is the runtime's clock. With more than one vCPU each reads its
// own time record, whose extrapolations can disagree by a little; as in
// Linux's pvclock, unless Xen sets the stable bit, a reading below the
// latest one any vCPU was given returns that one instead, so the clock
// never goes back, across vCPUs either.
//
//go:linkname nanotime runtime/goos.Nanotime
//go:nosplit
func nanotime() int64 {
	t, stable := rawNanotime()
	if stable || atomic.LoadUint32(&clampTime) == 0 {
		return t
	}
	v, raised := clampMono(&lastMono, t)
	if raised {
		clamped.Add(1)
	}
	return v
}

// ToSystemTime converts a runtime nanotime value to Xen system time.
func ToSystemTime(t int64) uint64 {
	if t <= wallOffset {
		return 0
	}
	return uint64(t - wallOffset)
}

// TimeInfoNow returns the calling vCPU's current vcpu_time_info snapshot
// (for tests and diagnostics: TSC frequency, version, TSC stamp).
func TimeInfoNow() TimeInfo {
	ti, _ := readTimeInfo(timeArea())
	return ti
}

// TimeInfoHere returns the id of the calling vCPU and a snapshot of the
// time record it reads, taken without leaving that vCPU (for tests).
//
//go:nosplit
func TimeInfoHere() (int, TimeInfo) {
	ti, _ := readTimeInfo(timeArea())
	return smp.Current(), ti
}

// TimeAreaRegistered reports whether Xen accepted vCPU 0's time area
// (VCPUOP_register_vcpu_time_memory_area); if not, the clock reads the
// copy in vCPU 0's vcpu_info. See VCPUTimeRegistered for the others.
func TimeAreaRegistered() bool { return vcpuTimeResult == 0 }

// SinceEntry returns the time since Xen entered this domain: the entry
// code's first instruction reads the TSC, and the ticks since then are
// converted with the vCPU's time scale. Called first thing in main, it is
// Gozen's own part of the boot (PVH entry to main), apart from the
// toolstack's and Xen's work before the entry.
func SinceEntry() time.Duration {
	ti, now := readTimeInfo(timeArea())
	return time.Duration(ti.Nanos(now - entryTSC))
}
