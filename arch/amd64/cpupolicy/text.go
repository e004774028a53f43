package cpupolicy

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
)

// DumpName is the name [Policy.String] gives the policy in its header line.
const DumpName = "Gozen"

// String dumps the policy in the layout `xen-cpuid -p` uses for a policy, so
// the two can be compared by eye or with [ParseXenCPUID]:
//
//	Gozen policy: 42 leaves, 2 MSRs
//	 CPUID:
//	  leaf     subleaf  -> eax      ebx      ecx      edx
//	  00000000:ffffffff -> 0000000d:756e6547:6c65746e:49656e69
//	 MSRs:
//	  index    -> value
//	  0000010a -> 0000000000000000
//
// Unlike xen-cpuid, all-zero leaves are printed too.
func (p *Policy) String() string {
	var sb strings.Builder
	p.dump(&sb, DumpName)
	return sb.String()
}

func (p *Policy) dump(sb *strings.Builder, name string) {
	fmt.Fprintf(sb, "%s policy: %d leaves, %d MSRs\n", name, len(p.leaves), len(p.msrs))
	sb.WriteString(" CPUID:\n")
	fmt.Fprintf(sb, "  %-8s %-8s -> %-8s %-8s %-8s %-8s\n", "leaf", "subleaf", "eax", "ebx", "ecx", "edx")
	for _, l := range p.leaves {
		fmt.Fprintf(sb, "  %08x:%08x -> %08x:%08x:%08x:%08x\n", l.Leaf, l.Subleaf, l.A, l.B, l.C, l.D)
	}
	sb.WriteString(" MSRs:\n")
	fmt.Fprintf(sb, "  %-8s -> %-16s\n", "index", "value")
	for _, m := range p.msrs {
		fmt.Fprintf(sb, "  %08x -> %016x\n", m.Index, m.Value)
	}
}

// Dump is one policy read from xen-cpuid's text output.
type Dump struct {
	// Name is the policy's name as printed: "Domain 5", "Host", "Raw",
	// "PV Max", ..., or DumpName for this package's own dump.
	Name string
	// DeclaredLeaves and DeclaredMSRs are the counts the header line
	// announced. xen-cpuid omits all-zero leaves, so the policy may hold
	// fewer leaves than declared.
	DeclaredLeaves, DeclaredMSRs int
	// Policy holds the records printed.
	Policy *Policy
}

// ErrSyntax is wrapped by errors from [ParseXenCPUID].
var ErrSyntax = errors.New("cpupolicy: bad xen-cpuid text")

var (
	reHeader = regexp.MustCompile(`^(.+) policy: (\d+) leaves, (\d+) MSRs$`)
	reLeaf   = regexp.MustCompile(`^  ([0-9a-f]{8}):([0-9a-f]{8}) -> ([0-9a-f]{8}):([0-9a-f]{8}):([0-9a-f]{8}):([0-9a-f]{8})$`)
	reMSR    = regexp.MustCompile(`^  ([0-9a-f]{8}) -> ([0-9a-f]{16})$`)
	reRecord = regexp.MustCompile(`^  [0-9a-fA-F]`)
)

// ParseXenCPUID reads the output of `xen-cpuid -p [domid]` (one policy, or
// the several system policies it prints without a domid) or of
// [Policy.String], and returns the policies in the order printed.
//
// Lines outside a policy (xen-cpuid's "Xen reports there are maximum ..."
// line, "... policy not supported by Xen", console noise around a guest's
// dump) are skipped. Inside a policy a blank or unrecognised line ends it,
// but a line that looks like a record and does not parse, a duplicate or
// unsorted record, more records than the header declared, or an MSR count
// different from the declared one is an error wrapping [ErrSyntax].
func ParseXenCPUID(r io.Reader) ([]Dump, error) {
	var (
		out     []Dump
		cur     *Dump
		section string // "", "cpuid" or "msrs"
		leaves  []Leaf
		msrs    []MSR
		lineNo  int
	)
	finish := func() error {
		if cur == nil {
			return nil
		}
		defer func() { cur, section, leaves, msrs = nil, "", nil, nil }()
		if len(leaves) > cur.DeclaredLeaves {
			return fmt.Errorf("%w: policy %q: %d leaves printed, %d declared", ErrSyntax, cur.Name, len(leaves), cur.DeclaredLeaves)
		}
		if len(msrs) != cur.DeclaredMSRs {
			return fmt.Errorf("%w: policy %q: %d MSRs printed, %d declared", ErrSyntax, cur.Name, len(msrs), cur.DeclaredMSRs)
		}
		p := &Policy{leaves: leaves, msrs: msrs}
		if err := p.Validate(); err != nil {
			return fmt.Errorf("%w: policy %q: %w", ErrSyntax, cur.Name, err)
		}
		cur.Policy = p
		out = append(out, *cur)
		return nil
	}
	hex32 := func(s string) uint32 { v, _ := strconv.ParseUint(s, 16, 32); return uint32(v) }
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		lineNo++
		line := strings.TrimRight(sc.Text(), " \t\r")
		if m := reHeader.FindStringSubmatch(line); m != nil {
			if err := finish(); err != nil {
				return nil, err
			}
			nl, err1 := strconv.Atoi(m[2])
			nm, err2 := strconv.Atoi(m[3])
			if err1 != nil || err2 != nil || nl > MaxLeaves || nm > MaxMSRs {
				return nil, fmt.Errorf("%w: line %d: bad counts in %q", ErrSyntax, lineNo, line)
			}
			cur = &Dump{Name: m[1], DeclaredLeaves: nl, DeclaredMSRs: nm}
			continue
		}
		if cur == nil {
			continue
		}
		switch {
		case line == " CPUID:":
			section = "cpuid"
			continue
		case line == " MSRs:":
			section = "msrs"
			continue
		case strings.HasPrefix(line, "  leaf ") && section == "cpuid",
			strings.HasPrefix(line, "  index ") && section == "msrs":
			continue // column headings
		}
		if section == "cpuid" {
			if m := reLeaf.FindStringSubmatch(line); m != nil {
				if len(leaves) >= cur.DeclaredLeaves {
					return nil, fmt.Errorf("%w: line %d: policy %q: more leaves than the %d declared", ErrSyntax, lineNo, cur.Name, cur.DeclaredLeaves)
				}
				leaves = append(leaves, Leaf{hex32(m[1]), hex32(m[2]), hex32(m[3]), hex32(m[4]), hex32(m[5]), hex32(m[6])})
				continue
			}
		}
		if section == "msrs" {
			if m := reMSR.FindStringSubmatch(line); m != nil {
				if len(msrs) >= cur.DeclaredMSRs {
					return nil, fmt.Errorf("%w: line %d: policy %q: more MSRs than the %d declared", ErrSyntax, lineNo, cur.Name, cur.DeclaredMSRs)
				}
				v, _ := strconv.ParseUint(m[2], 16, 64)
				msrs = append(msrs, MSR{Index: hex32(m[1]), Value: v})
				continue
			}
		}
		if section != "" && reRecord.MatchString(line) {
			return nil, fmt.Errorf("%w: line %d: malformed record %q", ErrSyntax, lineNo, line)
		}
		// Anything else ends the current policy.
		if err := finish(); err != nil {
			return nil, err
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("cpupolicy: reading xen-cpuid text: %w", err)
	}
	if err := finish(); err != nil {
		return nil, err
	}
	return out, nil
}
