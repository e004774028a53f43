// Package xencpuid finds the Xen hypervisor through its CPUID leaves and reads
// what they publish: the version, the hypercall-page MSR, the TSC scale and
// HVM features. It is vendor-neutral (the leaves are the same on Intel and
// AMD) and portable: on a host without Xen, Detect says so.
package xencpuid

import (
	"errors"
	"fmt"

	"github.com/gozen-dev/gozen/arch/amd64/cpuid"
)

// Signature is the hypervisor-leaf vendor string Xen uses.
const Signature = "XenVMMXenVMM"

// The hypervisor leaves start at 0x40000000; Xen may shift its leaves up by
// 0x100 steps (to sit after Viridian's when both are offered).
const (
	leafFirst = 0x40000000
	leafLast  = 0x40010000
	leafStep  = 0x100
)

// ErrNotXen means no Xen signature was found in the hypervisor leaves.
var ErrNotXen = errors.New("xencpuid: no Xen CPUID leaves (not running on Xen)")

// CPUIDFunc returns the CPUID registers for a leaf and subleaf.
type CPUIDFunc func(leaf, subleaf uint32) (a, b, c, d uint32)

// Leaves describes the Xen CPUID leaves found at Base.
type Leaves struct {
	// Base is the first Xen leaf (0x40000000 + n*0x100).
	Base uint32
	// MaxLeaf is the highest leaf Xen offers.
	MaxLeaf uint32
	// Major, Minor are the hypervisor version (Base+1).
	Major, Minor uint32
	// HypercallPages and HypercallMSR are from Base+2: how many pages the
	// hypercall area has and which MSR installs it.
	HypercallPages uint32
	HypercallMSR   uint32

	cpuid CPUIDFunc
}

// Detect scans the hypervisor leaves with the real CPUID instruction.
func Detect() (*Leaves, error) { return DetectWith(cpuid.Query) }

// DetectWith scans the hypervisor leaves using fn (tests pass a fake CPU).
func DetectWith(fn CPUIDFunc) (*Leaves, error) {
	for base := uint32(leafFirst); base < leafLast; base += leafStep {
		a, b, c, d := fn(base, 0)
		if sig(b, c, d) != Signature {
			continue
		}
		if a < base+2 {
			return nil, fmt.Errorf("xencpuid: leaves at %#x stop at %#x, before the hypercall leaf", base, a)
		}
		l := &Leaves{Base: base, MaxLeaf: a, cpuid: fn}
		va, _, _, _ := fn(base+1, 0)
		l.Major, l.Minor = va>>16, va&0xffff
		l.HypercallPages, l.HypercallMSR, _, _ = fn(base+2, 0)
		if l.HypercallPages == 0 {
			return nil, fmt.Errorf("xencpuid: leaf %#x offers no hypercall pages", base+2)
		}
		return l, nil
	}
	return nil, ErrNotXen
}

func sig(b, c, d uint32) string {
	var s [12]byte
	for i := 0; i < 4; i++ {
		s[i] = byte(b >> (8 * i))
		s[4+i] = byte(c >> (8 * i))
		s[8+i] = byte(d >> (8 * i))
	}
	return string(s[:])
}

// TimeLeaf is Xen's time leaf (Base+3).
type TimeLeaf struct {
	// TSCMode is the domain's TSC mode (0 default, 1 always emulate,
	// 2 never emulate).
	TSCMode uint32
	// GuestTSCkHz is the TSC frequency the guest sees.
	GuestTSCkHz uint32
	// Mul and Shift convert TSC ticks to nanoseconds as in vcpu_time_info.
	Mul   uint32
	Shift int8
}

// Time reads the time leaf.
func (l *Leaves) Time() (TimeLeaf, error) {
	if l.MaxLeaf < l.Base+3 {
		return TimeLeaf{}, fmt.Errorf("xencpuid: no time leaf (max leaf %#x)", l.MaxLeaf)
	}
	var t TimeLeaf
	_, t.TSCMode, t.GuestTSCkHz, _ = l.cpuid(l.Base+3, 0)
	_, _, mul, shift := l.cpuid(l.Base+3, 1)
	t.Mul, t.Shift = mul, int8(shift)
	return t, nil
}

// HVM feature bits of leaf Base+4 EAX.
const (
	HVMFeatureVAPICAccess   = 1 << 0
	HVMFeatureX2APICVirt    = 1 << 1
	HVMFeatureIOMMUMappings = 1 << 2
	HVMFeatureVCPUID        = 1 << 3
	HVMFeatureDomID         = 1 << 4
)

// HVM is Xen's HVM leaf (Base+4).
type HVM struct {
	Features uint32
	VCPUID   uint32
	DomID    uint32
}

// HVMInfo reads the HVM leaf.
func (l *Leaves) HVMInfo() (HVM, error) {
	if l.MaxLeaf < l.Base+4 {
		return HVM{}, fmt.Errorf("xencpuid: no HVM leaf (max leaf %#x)", l.MaxLeaf)
	}
	var h HVM
	h.Features, h.VCPUID, h.DomID, _ = l.cpuid(l.Base+4, 0)
	return h, nil
}
