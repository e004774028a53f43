package cpupolicy

import (
	"errors"
	"fmt"
)

// CPUIDFunc executes CPUID with the given EAX and ECX inputs and returns
// EAX, EBX, ECX and EDX.
type CPUIDFunc func(leaf, subleaf uint32) (a, b, c, d uint32)

// MSRFunc reads the MSR with the given index. It must only be called for
// MSRs known to exist.
type MSRFunc func(idx uint32) uint64

// ErrUnsupported is returned by [Collect] on architectures without CPUID.
var ErrUnsupported = errors.New("cpupolicy: collection not supported on this architecture")

// Caps on enumeration, so that a confused or hostile CPUID implementation
// cannot make collection loop for ever or exceed MaxLeaves.
const (
	maxBasicLeaves    = 0x100 // leaves 0..0xff
	maxExtendedLeaves = 0x100 // 0x80000000..0x800000ff
	maxSubleaves      = 64
	hvBaseFirst       = 0x40000000
	hvBaseLast        = 0x4000ff00
	hvStride          = 0x100
)

// XenSignature is what CPUID leaf 0x40000000+0x100*k returns in EBX, ECX,
// EDX when Xen's leaves live at that base.
const XenSignature = "XenVMMXenVMM"

type collector struct {
	cpuid CPUIDFunc
	p     *Policy
	err   error
}

func (c *collector) add(leaf, subleaf uint32) Leaf {
	in := subleaf
	if in == NoSubleaf {
		in = 0
	}
	a, b, cx, d := c.cpuid(leaf, in)
	l := Leaf{leaf, subleaf, a, b, cx, d}
	if c.err == nil {
		if err := c.p.SetLeaf(l); err != nil {
			c.err = err
		}
	}
	return l
}

// untilZero records subleaves 0, 1, ... up to and including the first whose
// type field (selected by typ) is zero.
func (c *collector) untilZero(leaf uint32, typ func(Leaf) uint32) {
	for s := uint32(0); s < maxSubleaves; s++ {
		if typ(c.add(leaf, s)) == 0 {
			return
		}
	}
}

// upToEAX records subleaves 0 to the maximum subleaf reported in 0.EAX.
func (c *collector) upToEAX(leaf uint32) {
	n := min(c.add(leaf, 0).A, maxSubleaves-1)
	for s := uint32(1); s <= n; s++ {
		c.add(leaf, s)
	}
}

// bitmap records subleaf 0 and every subleaf i >= 1 whose bit is set in
// mask.
func (c *collector) bitmap(leaf uint32, mask func(Leaf) uint32) {
	m := mask(c.add(leaf, 0))
	for s := uint32(1); s < 32; s++ {
		if m&(1<<s) != 0 {
			c.add(leaf, s)
		}
	}
}

func sigOf(l Leaf) string {
	b := make([]byte, 0, 12)
	for _, v := range [...]uint32{l.B, l.C, l.D} {
		b = append(b, byte(v), byte(v>>8), byte(v>>16), byte(v>>24))
	}
	return string(b)
}

// CollectFrom builds the policy visible through cpuid (and, if rdmsr is not
// nil, through rdmsr). Enumeration follows the architectural rules:
//
//   - basic leaves 0..0.EAX and extended leaves 0x80000000..0x80000000.EAX;
//     leaves without subleaves are recorded with [NoSubleaf], as Xen does;
//   - leaf 4, 0xb, 0x1f, 0x1b, 0x8000001d, 0x80000026: subleaves up to and
//     including the first with a zero type field;
//   - leaf 7, 0x14, 0x17, 0x18, 0x1d, 0x1e, 0x20, 0x24: subleaves up to the
//     maximum in subleaf 0's EAX;
//   - leaf 0xd: subleaves 0, 1 and 2 up to the highest XCR0|XSS component;
//   - leaf 0xf, 0x10, 0x23, 0x80000020: subleaf 0 and those its bitmap
//     names; leaf 0x12: SGX EPC subleaves when 7:0.EBX.SGX is set;
//   - hypervisor leaves, when 1.ECX.HYPERVISOR is set: every base
//     0x40000000+0x100*k whose EAX names a limit within it; for Xen's
//     ("XenVMMXenVMM") the time leaf's subleaves 0-2 and the HVM leaves'
//     subleaves.
//
// MSRs are read only where CPUID implies they exist: MSR_INTEL_PLATFORM_INFO
// (0xce) on Intel or under Xen (which emulates it for every guest), and
// MSR_ARCH_CAPABILITIES (0x10a) when 7:0.EDX.ARCH_CAPS is set; neither
// without 1.EDX.MSR.
func CollectFrom(cpuid CPUIDFunc, rdmsr MSRFunc) (*Policy, error) {
	c := &collector{cpuid: cpuid, p: &Policy{}}
	l0 := c.add(0, NoSubleaf)
	maxBasic := min(l0.A, maxBasicLeaves-1)
	var l1, l7 Leaf
	for leaf := uint32(1); leaf <= maxBasic; leaf++ {
		switch leaf {
		case 1:
			l1 = c.add(leaf, NoSubleaf)
		case 4:
			c.untilZero(leaf, func(l Leaf) uint32 { return l.A & 0x1f })
		case 7:
			l7 = c.add(leaf, 0)
			for s := uint32(1); s <= min(l7.A, maxSubleaves-1); s++ {
				c.add(leaf, s)
			}
		case 0xb, 0x1f:
			c.untilZero(leaf, func(l Leaf) uint32 { return (l.C >> 8) & 0xff })
		case 0xd:
			d0, d1 := c.add(leaf, 0), c.add(leaf, 1)
			xstates := uint64(d0.A) | uint64(d0.D)<<32 | uint64(d1.C) | uint64(d1.D)<<32
			for s := uint32(2); s < 63 && xstates>>s != 0; s++ {
				c.add(leaf, s)
			}
		case 0xf:
			c.bitmap(leaf, func(l Leaf) uint32 { return l.D })
		case 0x10:
			c.bitmap(leaf, func(l Leaf) uint32 { return l.B })
		case 0x12:
			if l7.B&(1<<2) == 0 { // no SGX
				c.add(leaf, 0)
				break
			}
			c.add(leaf, 0)
			c.add(leaf, 1)
			for s := uint32(2); s < maxSubleaves; s++ {
				if c.add(leaf, s).A&0xf == 0 {
					break
				}
			}
		case 0x1b:
			c.untilZero(leaf, func(l Leaf) uint32 { return l.A & 0xfff })
		case 0x14, 0x17, 0x18, 0x1d, 0x1e, 0x20, 0x24:
			c.upToEAX(leaf)
		case 0x23:
			c.bitmap(leaf, func(l Leaf) uint32 { return l.A })
		default:
			c.add(leaf, NoSubleaf)
		}
	}

	xen := false
	if l1.C&(1<<31) != 0 {
		for base := uint32(hvBaseFirst); base <= hvBaseLast; base += hvStride {
			a, b, cx, d := cpuid(base, 0)
			if a <= base || a > base+0xff {
				continue
			}
			isXen := sigOf(Leaf{B: b, C: cx, D: d}) == XenSignature
			xen = xen || isXen
			c.add(base, NoSubleaf)
			for leaf := base + 1; leaf <= a; leaf++ {
				switch {
				case isXen && leaf == base+3: // time: subleaves 0-2
					for s := uint32(0); s <= 2; s++ {
						c.add(leaf, s)
					}
				case isXen && leaf == base+4: // HVM features: subleaf 0
					c.add(leaf, 0)
				case isXen && leaf == base+5: // PV features: up to 0.EAX
					c.upToEAX(leaf)
				default:
					c.add(leaf, NoSubleaf)
				}
			}
		}
	}

	e0 := c.add(0x80000000, NoSubleaf)
	if e0.A > 0x80000000 && e0.A < 0x80000000+maxExtendedLeaves {
		for leaf := uint32(0x80000001); leaf <= e0.A; leaf++ {
			switch leaf {
			case 0x8000001d:
				c.untilZero(leaf, func(l Leaf) uint32 { return l.A & 0x1f })
			case 0x80000020:
				c.bitmap(leaf, func(l Leaf) uint32 { return l.B })
			case 0x80000026:
				c.untilZero(leaf, func(l Leaf) uint32 { return (l.C >> 8) & 0xff })
			default:
				c.add(leaf, NoSubleaf)
			}
		}
	}
	if c.err != nil {
		return nil, fmt.Errorf("cpupolicy: collect: %w", c.err)
	}

	if rdmsr != nil && l1.D&(1<<5) != 0 {
		intel := sigOf(Leaf{B: l0.B, C: l0.D, D: l0.C}) == "GenuineIntel"
		if intel || xen {
			_ = c.p.SetMSR(MSR{Index: MSRIntelPlatformInfo, Value: rdmsr(MSRIntelPlatformInfo)})
		}
		if maxBasic >= 7 && l7.D&(1<<29) != 0 {
			_ = c.p.SetMSR(MSR{Index: MSRArchCapabilities, Value: rdmsr(MSRArchCapabilities)})
		}
	}
	return c.p, nil
}
