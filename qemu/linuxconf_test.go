package qemu

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gozen-dev/gozen/qemu/rig"
)

// linuxConfPingPongs is PingPong's round trips between dom0 and a domU
// (dom0 has its own pCPU, so a round trip is faster than between domUs).
const linuxConfPingPongs = 10_000

// linuxConfScript runs the conformance suites between dom0 and a Gozen
// domU: the guest (qemu/guests/conformance) runs half A, and
// cmd/xenconform in dom0 runs half B on Linux's /dev/xen devices (evlinux,
// gntlinux, xslinux), so dom0 maps the guest's grants and binds to its
// ports. Its lines are printed as GOZEN-XC| lines.
var linuxConfScript = fmt.Sprintf(`
gozen-guest lconf /gozen/lconf.cfg 480 &
p=$!
d=$(wait-for domid lconf 90)
/gozen/xenconform -half B -peer $d -self 0 -pingpongs %d 2>&1 | sed 's/^/GOZEN-XC| /'
wait $p
`, linuxConfPingPongs)

// TestTierBLinuxConformance runs the evtchn and gnttab conformance suites
// with one half in a Gozen domU (evxen, gntxen) and the other in dom0's
// user space through Linux's Xen devices (evlinux, gntlinux): every case
// must pass on both sides, with no leftovers.
func TestTierBLinuxConformance(t *testing.T) {
	elf := buildGuest(t, "./qemu/guests/conformance")
	want := conformanceCases()
	guests := []rig.Guest{{Name: "lconf", ELF: elf, Memory: 64, Timeout: 480 * time.Second,
		Cmdline: fmt.Sprintf("-half A -peer 0 -pingpongs %d", linuxConfPingPongs)}}
	run, err := rig.BootDomUs(context.Background(), guests, rig.Script(linuxConfScript), rig.Options{Timeout: 12 * time.Minute})
	saveSerial(t, run)
	if err != nil {
		t.Fatalf("FAIL tier B run: %v\n%s", err, run.SerialText())
	}
	checkWaits(t, run)
	g := run.Guests["lconf"]
	if g == nil {
		t.Fatalf("FAIL the guest never started\n%s", run.SerialText())
	}
	t.Run("gozen", func(t *testing.T) { checkCases(t, g, conformanceTag, want) })
	var dom0 []string
	for _, l := range run.Serial {
		if s, ok := strings.CutPrefix(l.Text, "GOZEN-XC| "); ok {
			dom0 = append(dom0, s)
		}
	}
	t.Run("linux", func(t *testing.T) {
		for _, p := range caseProblems(conformanceTag, want, dom0, rig.ReasonPoweroff) {
			t.Errorf("FAIL dom0's xenconform: %s", p)
		}
		if t.Failed() {
			t.Logf("dom0's lines:\n%s", strings.Join(dom0, "\n"))
		} else {
			t.Logf("PASS all %d cases and leftovers in dom0's xenconform (evlinux, gntlinux over /dev/xen)", len(want)-1)
		}
	})
}
