package boot

import (
	"math/bits"
	"sync/atomic"
)

// TimeInfo is a snapshot of Xen's struct vcpu_time_info: the pairing of a
// TSC value with Xen system time and the TSC-to-nanoseconds scale.
type TimeInfo struct {
	Version      uint32
	TSCTimestamp uint64
	SystemTime   uint64
	Mul          uint32
	Shift        int8
	Flags        uint8
}

// SystemTimeAt returns Xen system time (ns since the hypervisor booted) at
// TSC value tsc: system_time + ((tsc - tsc_timestamp) << shift) * mul >> 32.
func (t *TimeInfo) SystemTimeAt(tsc uint64) uint64 {
	delta := tsc - t.TSCTimestamp
	if int64(delta) < 0 { // TSC read before the timestamp: clamp
		delta = 0
	}
	return t.SystemTime + t.Nanos(delta)
}

// Nanos converts a number of TSC ticks to nanoseconds with the scale:
// (ticks << shift) * mul >> 32.
func (t *TimeInfo) Nanos(ticks uint64) uint64 {
	if t.Shift >= 0 {
		ticks <<= uint(t.Shift)
	} else {
		ticks >>= uint(-t.Shift)
	}
	hi, lo := bits.Mul64(ticks, uint64(t.Mul))
	return hi<<32 | lo>>32
}

// TSCHz returns the TSC frequency the scale implies.
func (t *TimeInfo) TSCHz() uint64 {
	if t.Mul == 0 {
		return 0
	}
	// ns per tick = mul * 2^shift / 2^32  =>  Hz = 2^32 * 1e9 / (mul * 2^shift)
	hz := (uint64(1e9) << 32) / uint64(t.Mul)
	if t.Shift >= 0 {
		hz >>= uint(t.Shift)
	} else {
		hz <<= uint(-t.Shift)
	}
	return hz
}

// WallClock returns the Unix time in nanoseconds at Xen system time zero,
// from shared info's wc_sec_hi, wc_sec and wc_nsec.
func WallClock(secHi, sec, nsec uint32) int64 {
	return int64(uint64(secHi)<<32|uint64(sec))*1e9 + int64(nsec)
}

// resumeCorrection returns how far to move the clock's offset after a
// resume so that it does not go backwards: the clock read before the
// suspend (before) and after it with the old offset (after). A clock that
// went on (after >= before) needs none.
func resumeCorrection(before, after int64) int64 {
	if after >= before {
		return 0
	}
	return before - after
}

// clampMono returns t, or the latest value already handed out (*last) if
// t is below it, and records the result in *last: readers that each use
// their own time record, which can disagree by a little, then never see
// the clock go back from one another's readings (Linux's pvclock does the
// same with last_value). raised reports that t was below *last. It is
// safe for concurrent use and does not allocate.
//
//go:nosplit
func clampMono(last *atomic.Int64, t int64) (v int64, raised bool) {
	for {
		l := last.Load()
		if t < l {
			return l, true
		}
		if t == l || last.CompareAndSwap(l, t) {
			return t, false
		}
	}
}
