package qemu

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gozen-dev/gozen/arch/amd64/cpupolicy"
	"github.com/gozen-dev/gozen/qemu/rig"
)

// Markers around xen-cpuid's output on dom0's console.
const (
	xenCPUIDBegin = "GOZEN-XEN-CPUID-BEGIN"
	xenCPUIDEnd   = "GOZEN-XEN-CPUID-END"
)

// TestTierBCPUPolicy boots apps/cpupolicy as a PVH domU and, while it is
// alive, runs `xen-cpuid -p <domid>` in dom0 (Debian's xen-utils), then
// compares the two leaf for leaf with cpupolicy.CompareXen: one PASS/FAIL
// line per leaf class (basic, extended, hypervisor, MSRs) and one line per
// leaf that differs, with the reason. Differences confined to the fields
// Xen computes at run time (CompareXen's Dynamic) pass; anything else fails.
func TestTierBCPUPolicy(t *testing.T) {
	elf := buildGuest(t, "cpupolicy")
	guests := []rig.Guest{{Name: "cpupolicy", ELF: elf, Memory: 48, Cmdline: "-hold 60s"}}
	script := rig.Script(`
gozen-guest cpupolicy /gozen/cpupolicy.cfg 120 &
p=$!
wait-for log cpupolicy 'cpupolicy: holding' 60
id=$(xl domid cpupolicy)
echo "` + xenCPUIDBegin + ` domid=$id"
xen-cpuid -p $id 2>&1
echo "` + xenCPUIDEnd + `"
echo "` + xenCPUIDBegin + ` system"
xen-cpuid -p 2>&1
echo "` + xenCPUIDEnd + `"
xl destroy cpupolicy
wait $p
`)
	run, err := rig.BootDomUs(context.Background(), guests, script, rig.Options{Timeout: 4 * time.Minute})
	saveSerial(t, run)
	if err != nil {
		t.Fatalf("FAIL tier B run: %v\n%s", err, run.SerialText())
	}
	checkWaits(t, run)
	g := run.Guests["cpupolicy"]
	if g == nil {
		t.Fatalf("FAIL the cpupolicy guest never started\n%s", run.SerialText())
	}
	txt, err := cpupolicy.ExtractText([]byte(g.Text()))
	if err != nil {
		t.Fatalf("FAIL the guest printed no policy: %v\n%s", err, g.Text())
	}
	var guest cpupolicy.Policy
	if err := guest.UnmarshalText(txt); err != nil {
		t.Fatalf("FAIL the guest's policy text does not decode: %v", err)
	}
	t.Logf("PASS the guest printed its policy: %d leaves, %d MSRs", guest.NumLeaves(), guest.NumMSRs())
	if !g.Has(fmt.Sprintf("Gozen policy: %d leaves, %d MSRs", guest.NumLeaves(), guest.NumMSRs())) {
		t.Errorf("FAIL the guest's dump header does not match its blob")
	}

	domOut, sysOut := xenCPUIDSections(run)
	if domOut == "" {
		t.Fatalf("FAIL no xen-cpuid output for the domain\n%s", run.SerialText())
	}
	saveText(t, "xen-cpuid-domain.txt", domOut)
	saveText(t, "xen-cpuid-system.txt", sysOut)
	saveText(t, "guest.txt", guest.String())
	dumps, err := cpupolicy.ParseXenCPUID(strings.NewReader(domOut))
	if err != nil || len(dumps) != 1 {
		t.Fatalf("FAIL parsing xen-cpuid -p <domid> (%d policies): %v\n%s", len(dumps), err, domOut)
	}
	xen := dumps[0]
	t.Logf("PASS xen-cpuid reports %q: %d leaves (%d non-zero printed), %d MSRs",
		xen.Name, xen.DeclaredLeaves, xen.Policy.NumLeaves(), xen.Policy.NumMSRs())

	c := cpupolicy.CompareXen(&guest, xen.Policy)
	t.Logf("comparison: %s", strings.TrimSpace(strings.SplitN(c.String(), "\n", 2)[0]))
	for _, cl := range leafClasses {
		var mism, dyn []cpupolicy.Difference
		for _, d := range c.Mismatches {
			if cl.has(d) {
				mism = append(mism, d)
			}
		}
		for _, d := range c.Dynamic {
			if cl.has(d) {
				dyn = append(dyn, d)
			}
		}
		n := cl.count(&guest, xen.Policy)
		for _, d := range dyn {
			t.Logf("  dynamic  %s: %s", d, dynamicReason(d))
		}
		for _, d := range mism {
			t.Logf("  MISMATCH %s", d)
		}
		switch {
		case cl.name == "hypervisor":
			// Xen's policy records only the limits of its hypervisor
			// leaves; their contents come from Xen's cpuid code for the
			// running vCPU, so CompareXen does not compare them.
			t.Logf("PASS %s leaves: %d seen by the guest, not in Xen's serialised policy (only hv_limit is), not compared",
				cl.name, len(c.Ignored))
		case len(mism) > 0:
			t.Errorf("FAIL %s: %d of %d differ outside run-time fields", cl.name, len(mism), n)
		default:
			t.Logf("PASS %s: %d records, %d equal, %d differ only in run-time fields",
				cl.name, n, n-len(dyn), len(dyn))
		}
	}
	if !c.OK() {
		t.Logf("guest policy:\n%s\nxen-cpuid -p %s:\n%s", guest.String(), xen.Name, domOut)
	}
}

// leafClass groups records for the per-class PASS/FAIL lines.
type leafClass struct {
	name   string
	msr    bool
	lo, hi uint32
}

var leafClasses = []leafClass{
	{name: "basic leaves 0x0-0x3fffffff", lo: 0, hi: 0x3fffffff},
	{name: "hypervisor", lo: 0x40000000, hi: 0x4fffffff},
	{name: "extended leaves 0x80000000-", lo: 0x80000000, hi: 0xffffffff},
	{name: "MSRs", msr: true},
}

func (c leafClass) has(d cpupolicy.Difference) bool {
	if c.msr || d.IsMSR {
		return c.msr == d.IsMSR
	}
	return d.Key.Leaf >= c.lo && d.Key.Leaf <= c.hi
}

// count is the number of non-zero records of the class on either side.
func (c leafClass) count(a, b *cpupolicy.Policy) int {
	seen := map[string]bool{}
	for _, p := range []*cpupolicy.Policy{a, b} {
		if c.msr {
			for _, m := range p.MSRs() {
				if m.Value != 0 {
					seen[fmt.Sprint(m.Index)] = true
				}
			}
			continue
		}
		for _, l := range p.Leaves() {
			if l.Leaf >= c.lo && l.Leaf <= c.hi && !l.IsZero() {
				sub := l.Subleaf
				if sub == cpupolicy.NoSubleaf {
					sub = 0 // CompareXen aligns NoSubleaf and subleaf 0
				}
				seen[fmt.Sprint(l.Leaf, sub)] = true
			}
		}
	}
	return len(seen)
}

// dynamicReason explains a difference CompareXen classed as dynamic: the
// fields Xen fills in per vCPU or from the guest's control registers when
// the guest executes CPUID, which the domain's policy cannot hold.
func dynamicReason(d cpupolicy.Difference) string {
	var why []string
	for _, r := range d.Regs {
		k, x := d.Key, r.A^r.B
		switch {
		case k.Leaf == 1 && r.Word.Reg == cpupolicy.EBX:
			why = append(why, "EBX[31:24] is the vCPU's initial APIC ID, which Xen writes per vCPU at CPUID time (vcpu_id*2)")
		case k.Leaf == 1 && r.Word.Reg == cpupolicy.ECX:
			why = append(why, "ECX.OSXSAVE mirrors the guest's CR4.OSXSAVE, which the Go runtime sets")
		case (k.Leaf == 1 || k.Leaf == 0x80000001) && r.Word.Reg == cpupolicy.EDX:
			why = append(why, "EDX.APIC follows the vCPU's APIC_BASE MSR enable bit")
		case k.Leaf == 7 && r.Word.Reg == cpupolicy.ECX:
			why = append(why, "ECX.OSPKE mirrors the guest's CR4.PKE")
		case (k.Leaf == 0xb || k.Leaf == 0x1f) && r.Word.Reg == cpupolicy.EDX:
			why = append(why, "EDX is the vCPU's x2APIC ID, filled in per vCPU")
		case k.Leaf == 0xd && r.Word.Reg == cpupolicy.EBX:
			why = append(why, "EBX is the XSAVE area size for the guest's current XCR0 (| XSS), computed at CPUID time")
		case k.Leaf == 0x8000001e:
			why = append(why, "extended APIC ID / compute unit ID, filled in per vCPU")
		default:
			why = append(why, fmt.Sprintf("%v bits %08x", r.Word.Reg, x))
		}
	}
	return strings.Join(why, "; ")
}

// xenCPUIDSections returns dom0's xen-cpuid output for the domain and for
// the system policies, from between the markers on the serial console.
func xenCPUIDSections(run *rig.Run) (domain, system string) {
	var cur *strings.Builder
	var dom, sys strings.Builder
	for _, l := range run.Serial {
		switch {
		case strings.HasPrefix(l.Text, xenCPUIDBegin+" domid="):
			cur = &dom
		case strings.HasPrefix(l.Text, xenCPUIDBegin+" system"):
			cur = &sys
		case strings.HasPrefix(l.Text, xenCPUIDEnd):
			cur = nil
		case cur != nil && !strings.HasPrefix(l.Text, "GZ|") && !strings.HasPrefix(l.Text, "(XEN)"):
			cur.WriteString(l.Text + "\n")
		}
	}
	return dom.String(), sys.String()
}

// saveText keeps a text next to the serial log, build/<test>.<name>.
func saveText(t testing.TB, name, text string) {
	p := filepath.Join("..", "build", strings.ReplaceAll(t.Name(), "/", "_")+"."+name)
	if err := os.WriteFile(p, []byte(text), 0o644); err == nil {
		t.Logf("saved %s", p)
	}
}
