package cpupolicy

import (
	"fmt"
	"strings"
)

// Difference describes one CPUID leaf or MSR that differs between two
// policies a and b. A record missing on one side counts as all zero for the
// register comparison; InA and InB tell whether it was present.
type Difference struct {
	Key      LeafKey // the CPUID leaf, when !IsMSR
	MSR      uint32  // the MSR index, when IsMSR
	IsMSR    bool
	InA, InB bool
	Regs     []RegDiff // registers (or MSR halves) whose values differ
}

// RegDiff is one 32-bit register that differs. For feature words, Removed
// lists the bits set in a but not in b and Added those set in b but not a.
type RegDiff struct {
	Word           Word
	A, B           uint32
	Removed, Added []Feature
}

// String renders the difference on one line, for example
// "00000007:00000000 ebx 009c6fbf -> 009c4fbf -avx2".
func (d Difference) String() string {
	var sb strings.Builder
	if d.IsMSR {
		fmt.Fprintf(&sb, "MSR %08x", d.MSR)
	} else {
		sb.WriteString(d.Key.String())
	}
	switch {
	case !d.InA:
		sb.WriteString(" (only in b)")
	case !d.InB:
		sb.WriteString(" (only in a)")
	}
	for _, r := range d.Regs {
		fmt.Fprintf(&sb, " %v %08x -> %08x", r.Word.Reg, r.A, r.B)
		for _, f := range r.Removed {
			sb.WriteString(" -" + f.String())
		}
		for _, f := range r.Added {
			sb.WriteString(" +" + f.String())
		}
	}
	return sb.String()
}

func regDiff(w Word, a, b uint32) RegDiff {
	d := RegDiff{Word: w, A: a, B: b}
	if isFeatureWord(w) {
		d.Removed = bitsOf(w, a&^b)
		d.Added = bitsOf(w, b&^a)
	}
	return d
}

func isFeatureWord(w Word) bool {
	for _, fw := range FeatureWords {
		if fw == w {
			return true
		}
	}
	return false
}

// Diff lists the records that differ between a and b: leaves in (leaf,
// subleaf) order, then MSRs in index order. Equal policies give nil.
func Diff(a, b *Policy) []Difference {
	var out []Difference
	i, j := 0, 0
	for i < len(a.leaves) || j < len(b.leaves) {
		var la, lb Leaf
		d := Difference{}
		switch {
		case j >= len(b.leaves) || (i < len(a.leaves) && a.leaves[i].Key().Compare(b.leaves[j].Key()) < 0):
			la, d.InA = a.leaves[i], true
			lb.Leaf, lb.Subleaf = la.Leaf, la.Subleaf
			i++
		case i >= len(a.leaves) || a.leaves[i].Key().Compare(b.leaves[j].Key()) > 0:
			lb, d.InB = b.leaves[j], true
			la.Leaf, la.Subleaf = lb.Leaf, lb.Subleaf
			j++
		default:
			la, lb, d.InA, d.InB = a.leaves[i], b.leaves[j], true, true
			i++
			j++
		}
		d.Key = la.Key()
		for r := EAX; r <= EDX; r++ {
			if va, vb := la.Reg(r), lb.Reg(r); va != vb {
				d.Regs = append(d.Regs, regDiff(Word{la.Leaf, la.Subleaf, r}, va, vb))
			}
		}
		if len(d.Regs) > 0 || !d.InA || !d.InB {
			out = append(out, d)
		}
	}
	i, j = 0, 0
	for i < len(a.msrs) || j < len(b.msrs) {
		var ma, mb MSR
		d := Difference{IsMSR: true}
		switch {
		case j >= len(b.msrs) || (i < len(a.msrs) && a.msrs[i].Index < b.msrs[j].Index):
			ma, d.InA = a.msrs[i], true
			mb.Index = ma.Index
			i++
		case i >= len(a.msrs) || a.msrs[i].Index > b.msrs[j].Index:
			mb, d.InB = b.msrs[j], true
			ma.Index = mb.Index
			j++
		default:
			ma, mb, d.InA, d.InB = a.msrs[i], b.msrs[j], true, true
			i++
			j++
		}
		d.MSR = ma.Index
		if lo, hi := uint32(ma.Value), uint32(mb.Value); lo != hi {
			d.Regs = append(d.Regs, regDiff(Word{ma.Index, 0, MSRLow}, lo, hi))
		}
		if lo, hi := uint32(ma.Value>>32), uint32(mb.Value>>32); lo != hi {
			d.Regs = append(d.Regs, regDiff(Word{ma.Index, 0, MSRHigh}, lo, hi))
		}
		if len(d.Regs) > 0 || !d.InA || !d.InB {
			out = append(out, d)
		}
	}
	return out
}

// compatIgnored are feature bits that reflect guest OS state rather than a
// host capability (CR4.OSXSAVE, CR4.PKE), so they never make a policy
// incompatible.
var compatIgnored = map[Feature]bool{
	{Word: FeatureWords[1], Bit: 27}: true, // osxsave
	{Word: FeatureWords[6], Bit: 4}:  true, // ospke
}

// compatReversed are ARCH_CAPABILITIES bits whose presence announces a
// weakness (RSBA, RRSBA: the RSB may fall back to other predictors). A guest
// that did not see them must not land on a host that has them; a guest that
// saw them can run anywhere.
var compatReversed = map[Feature]bool{
	{Word: FeatureWords[16], Bit: 2}:  true, // rsba
	{Word: FeatureWords[16], Bit: 19}: true, // rrsba
}

// Compatible answers whether a guest that saw the policy guest can run on a
// host offering host: every feature bit set in one of guest's feature words
// ([FeatureWords]) must be set in host too. It returns the offending bits,
// named, in featureset order. Bits reflecting guest OS state (osxsave,
// ospke) are ignored, and for the weakness-announcing ARCH_CAPABILITIES bits
// (rsba, rrsba) the direction is reversed: the host's bit is reported if
// the guest lacks it.
func Compatible(guest, host *Policy) (ok bool, missing []Feature) {
	for _, w := range FeatureWords {
		g, _ := w.Value(guest)
		h, _ := w.Value(host)
		for b := uint8(0); b < 32; b++ {
			f := Feature{Word: w, Bit: b}
			gb, hb := g&(1<<b) != 0, h&(1<<b) != 0
			if compatIgnored[f] {
				continue
			}
			if compatReversed[f] {
				gb, hb = hb, gb
			}
			if gb && !hb {
				f.Name = FeatureName(w, b)
				missing = append(missing, f)
			}
		}
	}
	return len(missing) == 0, missing
}
