// Package cpupolicy models the CPU capabilities a Xen guest sees (its CPU
// policy) as one versioned, checksummed blob.
//
// A [Policy] is a set of CPUID leaves and MSR entries in the layouts Xen uses
// to pass policies between the hypervisor and the toolstack
// (xen_cpuid_leaf_t and xen_msr_entry_t in xen/include/public/arch-x86/xen.h),
// kept sorted by (leaf, subleaf) and by MSR index, without duplicates. Leaves
// that take no subleaf carry [NoSubleaf], as in Xen's serialised form, so a
// policy collected inside a guest can be compared leaf for leaf with what
// `xen-cpuid -p <domid>` reports in dom0.
//
// The package is portable Go: serialisation, diffing, compatibility checks
// and the parser for xen-cpuid's text output build and run anywhere. Only
// [Collect] touches the processor (CPUID on amd64, and on GOOS=tamago also
// RDMSR).
package cpupolicy

import (
	"fmt"
	"slices"
)

// NoSubleaf is the subleaf value Xen records for CPUID leaves that do not
// take a subleaf index in ECX (XEN_CPUID_NO_SUBLEAF).
const NoSubleaf uint32 = 0xffffffff

// Leaf is one CPUID leaf in the layout of Xen's xen_cpuid_leaf_t: the leaf
// (EAX input), the subleaf (ECX input, or [NoSubleaf]) and the four output
// registers. Serialised it is six little-endian uint32s, 24 bytes.
type Leaf struct {
	Leaf, Subleaf uint32
	A, B, C, D    uint32
}

// Key returns the leaf's (leaf, subleaf) identity.
func (l Leaf) Key() LeafKey { return LeafKey{l.Leaf, l.Subleaf} }

// IsZero reports whether all four output registers are zero (xen-cpuid
// omits such leaves from its dump).
func (l Leaf) IsZero() bool { return l.A == 0 && l.B == 0 && l.C == 0 && l.D == 0 }

// Reg returns the value of output register r (EAX..EDX); it returns 0 for
// any other register.
func (l Leaf) Reg(r Reg) uint32 {
	switch r {
	case EAX:
		return l.A
	case EBX:
		return l.B
	case ECX:
		return l.C
	case EDX:
		return l.D
	}
	return 0
}

// LeafKey identifies a CPUID leaf by its inputs.
type LeafKey struct {
	Leaf, Subleaf uint32
}

// String formats the key as xen-cpuid does: "%08x:%08x".
func (k LeafKey) String() string { return fmt.Sprintf("%08x:%08x", k.Leaf, k.Subleaf) }

// Compare orders keys by leaf, then subleaf. It returns -1, 0 or +1.
func (k LeafKey) Compare(o LeafKey) int {
	switch {
	case k.Leaf < o.Leaf:
		return -1
	case k.Leaf > o.Leaf:
		return 1
	case k.Subleaf < o.Subleaf:
		return -1
	case k.Subleaf > o.Subleaf:
		return 1
	}
	return 0
}

// MSR is one model-specific register entry in the layout of Xen's
// xen_msr_entry_t: index, flags (reserved, must be zero) and value.
// Serialised it is two little-endian uint32s and a uint64, 16 bytes.
type MSR struct {
	Index uint32
	Flags uint32
	Value uint64
}

// Well-known MSR indices that appear in Xen's CPU policy.
const (
	MSRIntelPlatformInfo uint32 = 0xce  // MSR_INTEL_PLATFORM_INFO
	MSRArchCapabilities  uint32 = 0x10a // MSR_ARCH_CAPABILITIES
)

// Limits on the number of records a policy may hold. Xen itself serialises
// at most CPUID_MAX_SERIALISED_LEAVES (120 in current Xen) leaves and
// MSR_MAX_SERIALISED_ENTRIES (2) MSRs; a guest-side collection enumerates
// more subleaves (and the hypervisor leaves), so the limits here are one
// order of magnitude above Xen's while still bounding what a parser will
// allocate for a hostile blob.
const (
	MaxLeaves = 1024
	MaxMSRs   = 64
)

// Policy is a CPU policy: CPUID leaves sorted by (leaf, subleaf) and MSR
// entries sorted by index, each unique. The zero value is an empty policy
// ready for use. A Policy is not safe for concurrent mutation.
type Policy struct {
	leaves []Leaf
	msrs   []MSR
}

// New builds a policy from leaves and MSR entries given in any order. It
// fails with [ErrDuplicate] if a (leaf, subleaf) or MSR index appears twice,
// with [ErrMSRFlags] if an MSR has non-zero flags, and with [ErrTooMany] if
// a limit is exceeded. The slices are copied.
func New(leaves []Leaf, msrs []MSR) (*Policy, error) {
	p := &Policy{leaves: slices.Clone(leaves), msrs: slices.Clone(msrs)}
	slices.SortFunc(p.leaves, func(a, b Leaf) int { return a.Key().Compare(b.Key()) })
	slices.SortFunc(p.msrs, func(a, b MSR) int { return cmpU32(a.Index, b.Index) })
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return p, nil
}

func cmpU32(a, b uint32) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// Validate checks the policy's invariants: record counts within
// [MaxLeaves] and [MaxMSRs], records strictly sorted (so unique), MSR flags
// zero. Policies built through this package's API always validate.
func (p *Policy) Validate() error {
	if len(p.leaves) > MaxLeaves {
		return fmt.Errorf("%w: %d CPUID leaves (limit %d)", ErrTooMany, len(p.leaves), MaxLeaves)
	}
	if len(p.msrs) > MaxMSRs {
		return fmt.Errorf("%w: %d MSRs (limit %d)", ErrTooMany, len(p.msrs), MaxMSRs)
	}
	for i := 1; i < len(p.leaves); i++ {
		switch p.leaves[i-1].Key().Compare(p.leaves[i].Key()) {
		case 0:
			return fmt.Errorf("%w: CPUID leaf %v", ErrDuplicate, p.leaves[i].Key())
		case 1:
			return fmt.Errorf("%w: CPUID leaf %v after %v", ErrUnsorted, p.leaves[i].Key(), p.leaves[i-1].Key())
		}
	}
	for i, m := range p.msrs {
		if m.Flags != 0 {
			return fmt.Errorf("%w: MSR %#x has flags %#x", ErrMSRFlags, m.Index, m.Flags)
		}
		if i == 0 {
			continue
		}
		switch prev := p.msrs[i-1].Index; {
		case prev == m.Index:
			return fmt.Errorf("%w: MSR %#x", ErrDuplicate, m.Index)
		case prev > m.Index:
			return fmt.Errorf("%w: MSR %#x after %#x", ErrUnsorted, m.Index, prev)
		}
	}
	return nil
}

// Leaves returns a copy of the policy's CPUID leaves in (leaf, subleaf)
// order.
func (p *Policy) Leaves() []Leaf { return slices.Clone(p.leaves) }

// MSRs returns a copy of the policy's MSR entries in index order.
func (p *Policy) MSRs() []MSR { return slices.Clone(p.msrs) }

// NumLeaves returns the number of CPUID leaves in the policy.
func (p *Policy) NumLeaves() int { return len(p.leaves) }

// NumMSRs returns the number of MSR entries in the policy.
func (p *Policy) NumMSRs() int { return len(p.msrs) }

func (p *Policy) findLeaf(k LeafKey) (int, bool) {
	return slices.BinarySearchFunc(p.leaves, k, func(l Leaf, k LeafKey) int { return l.Key().Compare(k) })
}

func (p *Policy) findMSR(idx uint32) (int, bool) {
	return slices.BinarySearchFunc(p.msrs, idx, func(m MSR, idx uint32) int { return cmpU32(m.Index, idx) })
}

// Leaf returns the leaf with the given inputs, and whether it is present.
func (p *Policy) Leaf(leaf, subleaf uint32) (Leaf, bool) {
	i, ok := p.findLeaf(LeafKey{leaf, subleaf})
	if !ok {
		return Leaf{}, false
	}
	return p.leaves[i], true
}

// MSR returns the MSR entry with the given index, and whether it is present.
func (p *Policy) MSR(idx uint32) (MSR, bool) {
	i, ok := p.findMSR(idx)
	if !ok {
		return MSR{}, false
	}
	return p.msrs[i], true
}

// SetLeaf inserts l, or replaces the leaf with the same (leaf, subleaf). It
// fails with [ErrTooMany] if the policy already holds [MaxLeaves] leaves.
func (p *Policy) SetLeaf(l Leaf) error {
	i, ok := p.findLeaf(l.Key())
	if ok {
		p.leaves[i] = l
		return nil
	}
	if len(p.leaves) >= MaxLeaves {
		return fmt.Errorf("%w: adding CPUID leaf %v (limit %d)", ErrTooMany, l.Key(), MaxLeaves)
	}
	p.leaves = slices.Insert(p.leaves, i, l)
	return nil
}

// SetMSR inserts m, or replaces the entry with the same index. It fails with
// [ErrMSRFlags] if m.Flags is non-zero and with [ErrTooMany] if the policy
// already holds [MaxMSRs] entries.
func (p *Policy) SetMSR(m MSR) error {
	if m.Flags != 0 {
		return fmt.Errorf("%w: MSR %#x has flags %#x", ErrMSRFlags, m.Index, m.Flags)
	}
	i, ok := p.findMSR(m.Index)
	if ok {
		p.msrs[i] = m
		return nil
	}
	if len(p.msrs) >= MaxMSRs {
		return fmt.Errorf("%w: adding MSR %#x (limit %d)", ErrTooMany, m.Index, MaxMSRs)
	}
	p.msrs = slices.Insert(p.msrs, i, m)
	return nil
}

// DeleteLeaf removes the leaf with the given inputs, if present.
func (p *Policy) DeleteLeaf(leaf, subleaf uint32) {
	if i, ok := p.findLeaf(LeafKey{leaf, subleaf}); ok {
		p.leaves = slices.Delete(p.leaves, i, i+1)
	}
}

// DeleteMSR removes the MSR entry with the given index, if present.
func (p *Policy) DeleteMSR(idx uint32) {
	if i, ok := p.findMSR(idx); ok {
		p.msrs = slices.Delete(p.msrs, i, i+1)
	}
}

// Equal reports whether p and q hold exactly the same records.
func (p *Policy) Equal(q *Policy) bool {
	return slices.Equal(p.leaves, q.leaves) && slices.Equal(p.msrs, q.msrs)
}

// Clone returns a deep copy of p.
func (p *Policy) Clone() *Policy {
	return &Policy{leaves: slices.Clone(p.leaves), msrs: slices.Clone(p.msrs)}
}
