//go:build tamago

package boot

import (
	"sync/atomic"
	"time"
	"unsafe"
	_ "unsafe"

	"github.com/gozen-dev/gozen/internal/phys"
)

// Offsets in the shared-info page (x86-64 struct shared_info).
const (
	shinfoVCPU0Time = 32 // vcpu_info[0].time
	shinfoWCVersion = 3072
	shinfoWCSec     = 3076
	shinfoWCNsec    = 3080
	shinfoWCSecHi   = 3084
)

// wallOffset is the Unix time in ns at Xen system time zero, read once so
// that the runtime's clock, which is also its monotonic clock, never jumps.
var wallOffset int64

func u32(addr uintptr) *uint32 { return (*uint32)(phys.Pointer(addr)) }
func u64(addr uintptr) *uint64 { return (*uint64)(phys.Pointer(addr)) }

// timeArea returns the vcpu_time_info to read: the registered time area
// when Xen accepted it, else vCPU 0's copy in shared info.
//
//go:nosplit
func timeArea() uintptr {
	if vcpuTimeResult == 0 {
		return uintptr(unsafe.Pointer(&vcpuTime))
	}
	return sharedInfoPage + shinfoVCPU0Time
}

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

//go:linkname nanotime runtime/goos.Nanotime
//go:nosplit
func nanotime() int64 {
	if wallOffset == 0 {
		wallOffset = readWallClock()
	}
	return wallOffset + int64(SystemTime())
}

// ToSystemTime converts a runtime nanotime value to Xen system time.
func ToSystemTime(t int64) uint64 {
	if t <= wallOffset {
		return 0
	}
	return uint64(t - wallOffset)
}

// TimeInfoNow returns the current vcpu_time_info snapshot (for tests and
// diagnostics: TSC frequency, version).
func TimeInfoNow() TimeInfo {
	ti, _ := readTimeInfo(timeArea())
	return ti
}

// TimeAreaRegistered reports whether Xen accepted the vCPU time area
// (VCPUOP_register_vcpu_time_memory_area); if not, the clock reads vCPU 0's
// time info in shared info.
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
