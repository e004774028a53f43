package cpupolicy

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
)

// Markers framing the base64 text form of a policy on a console, as the
// guest app prints it. [ExtractText] finds the text between them.
const (
	BeginMarker = "-----BEGIN GOZEN CPU POLICY-----"
	EndMarker   = "-----END GOZEN CPU POLICY-----"
)

// ErrNoMarkers is returned by [ExtractText] when the markers are missing.
var ErrNoMarkers = errors.New("cpupolicy: no BEGIN/END policy markers")

// ExtractText returns the text between the first [BeginMarker] line and the
// following [EndMarker] line of console output, ready for
// [Policy.UnmarshalText]. Carriage returns are tolerated.
func ExtractText(console []byte) ([]byte, error) {
	i := bytes.Index(console, []byte(BeginMarker))
	if i < 0 {
		return nil, fmt.Errorf("%w: %q not found", ErrNoMarkers, BeginMarker)
	}
	rest := console[i+len(BeginMarker):]
	j := bytes.Index(rest, []byte(EndMarker))
	if j < 0 {
		return nil, fmt.Errorf("%w: %q not found after %q", ErrNoMarkers, EndMarker, BeginMarker)
	}
	return bytes.TrimSpace(rest[:j]), nil
}

// XenComparison is the result of [CompareXen]: how a policy collected inside
// a guest matches the policy Xen reports for that domain.
type XenComparison struct {
	// Matched counts the non-zero leaves and MSRs found equal.
	Matched int
	// Mismatches are differences in bits that should be equal.
	Mismatches []Difference
	// Dynamic are differences only in fields Xen computes at run time from
	// vCPU or guest state (APIC IDs, OSXSAVE, OSPKE, XSAVE sizes for the
	// current XCR0/XSS), which a static policy cannot predict.
	Dynamic []Difference
	// Ignored lists the hypervisor leaves (0x40000000-0x4fffffff) the guest
	// saw. Xen's policy only records hv_limit/hv2_limit there, so they are
	// not compared.
	Ignored []LeafKey
}

// OK reports whether there are no mismatches.
func (c *XenComparison) OK() bool { return len(c.Mismatches) == 0 }

// String renders the comparison, one difference per line.
func (c *XenComparison) String() string {
	var sb strings.Builder
	fmt.Fprintf(&sb, "matched %d, mismatched %d, dynamic %d, hypervisor leaves ignored %d\n",
		c.Matched, len(c.Mismatches), len(c.Dynamic), len(c.Ignored))
	for _, d := range c.Mismatches {
		sb.WriteString("MISMATCH " + d.String() + "\n")
	}
	for _, d := range c.Dynamic {
		sb.WriteString("dynamic  " + d.String() + "\n")
	}
	return sb.String()
}

// dynamicMask returns the bits of register r of leaf k that Xen fills in at
// run time rather than from the domain's policy.
func dynamicMask(k LeafKey, r Reg) uint32 {
	switch {
	case k.Leaf == 1 && r == EBX:
		return 0xff000000 // initial APIC ID
	case k.Leaf == 1 && r == ECX:
		return 1 << 27 // OSXSAVE
	case k.Leaf == 1 && r == EDX, k.Leaf == 0x80000001 && r == EDX:
		return 1 << 9 // APIC, cleared while the local APIC is disabled
	case k.Leaf == 7 && k.Subleaf == 0 && r == ECX:
		return 1 << 4 // OSPKE
	case (k.Leaf == 0xb || k.Leaf == 0x1f) && r == EDX:
		return 0xffffffff // x2APIC ID
	case k.Leaf == 0xd && (k.Subleaf == 0 || k.Subleaf == 1) && r == EBX:
		return 0xffffffff // XSAVE area size for current XCR0 (| XSS)
	case k.Leaf == 0x8000001e && (r == EAX || r == EBX):
		return 0xffffffff // extended APIC ID, compute unit ID
	}
	return 0
}

func isHypervisorLeaf(leaf uint32) bool { return leaf >= 0x40000000 && leaf <= 0x4fffffff }

// normalise drops all-zero records (xen-cpuid does not print them) and the
// hypervisor range, returning the dropped hypervisor keys.
func normalise(p *Policy) (*Policy, []LeafKey) {
	q := &Policy{}
	var hv []LeafKey
	for _, l := range p.leaves {
		switch {
		case isHypervisorLeaf(l.Leaf):
			hv = append(hv, l.Key())
		case !l.IsZero():
			q.leaves = append(q.leaves, l)
		}
	}
	for _, m := range p.msrs {
		if m.Value != 0 {
			q.msrs = append(q.msrs, m)
		}
	}
	return q, hv
}

// alignSubleaves renames p's (leaf, 0) to (leaf, NoSubleaf) for every leaf
// ref records only without a subleaf while p records it only with subleaves.
// CPUID ignores ECX for such leaves, so the values are comparable.
func alignSubleaves(p, ref *Policy) {
	for _, r := range ref.leaves {
		if r.Subleaf != NoSubleaf {
			continue
		}
		if _, ok := p.Leaf(r.Leaf, NoSubleaf); ok {
			continue
		}
		if l, ok := p.Leaf(r.Leaf, 0); ok {
			p.DeleteLeaf(r.Leaf, 0)
			l.Subleaf = NoSubleaf
			_ = p.SetLeaf(l) // cannot exceed the limit: one removed, one added
		}
	}
}

// CompareXen compares, leaf for leaf, a policy collected inside a guest
// with the policy Xen reports for the domain (`xen-cpuid -p <domid>`, read
// with [ParseXenCPUID]). All-zero leaves and MSRs count as absent, as
// xen-cpuid omits them; hypervisor leaves are listed in Ignored; where one
// side records a leaf without subleaf and the other records subleaf 0, the
// two are compared; differences confined to run-time fields are reported as
// Dynamic rather than as Mismatches. In each Difference, a is the guest and
// b is Xen.
func CompareXen(guest, xen *Policy) *XenComparison {
	g, hv := normalise(guest)
	x, _ := normalise(xen)
	alignSubleaves(g, x)
	alignSubleaves(x, g)
	c := &XenComparison{Ignored: hv}
	diffs := Diff(g, x)
	for _, d := range diffs {
		significant := !d.InA || !d.InB
		for _, r := range d.Regs {
			if d.IsMSR || (r.A^r.B)&^dynamicMask(d.Key, r.Word.Reg) != 0 {
				significant = true
			}
		}
		if significant {
			c.Mismatches = append(c.Mismatches, d)
		} else {
			c.Dynamic = append(c.Dynamic, d)
		}
	}
	c.Matched = len(g.leaves) + len(g.msrs) - countInA(diffs)
	return c
}

func countInA(ds []Difference) int {
	n := 0
	for _, d := range ds {
		if d.InA {
			n++
		}
	}
	return n
}
