package qemu

import (
	"context"
	"fmt"
	"regexp"
	"testing"
	"time"

	"github.com/gozen-dev/gozen/evtchn/evtchntest"
	"github.com/gozen-dev/gozen/gnttab/gnttabtest"
	"github.com/gozen-dev/gozen/qemu/rig"
)

// conformanceTag starts the lines of qemu/guests/conformance.
const conformanceTag = "CONFORMANCE"

// conformancePingPongs is the number of round trips of evtchn/PingPong in
// the guests, about 70-100 s at the 2.3-3.4 ms an inter-domain round trip
// takes under emulation (the host's evtchntest.PingPongs, 100,000, would
// take four minutes). It runs long enough to meet rare races: it is the
// case that found Xen's conservative notification of a freshly bound port
// (see evxen's BindInterdomain), which made its last round stall in every
// run with 30,000 round trips before the fix.
const conformancePingPongs = 30_000

// conformanceCases is the exact list of cases qemu/guests/conformance
// reports in each domain: every case of the two suites, then leftovers.
func conformanceCases() []string {
	var out []string
	for _, c := range evtchntest.Cases() {
		out = append(out, "evtchn/"+c.Name)
	}
	for _, c := range gnttabtest.Cases() {
		out = append(out, "gnttab/"+c.Name)
	}
	return append(out, "leftovers")
}

var conformanceReady = regexp.MustCompile(`CONFORMANCE ready domid=(\d+) half=([AB]) peer=(\d+) cases=(\d+)`)

// TestTierBConformance runs the conformance suites of package evtchn and
// package gnttab against the Xen implementations (evxen, gntxen) in two
// Gozen domUs: one runs half A of every case and the other half B, the
// halves exchanging ports, grant refs and go-aheads through xenstore
// (twodom/xslink). dom0 tells each domain the other's domid. Every case
// must pass on both sides, and each domain must end holding the ports and
// grants it held before the first case.
func TestTierBConformance(t *testing.T) {
	elf := buildGuest(t, "./qemu/guests/conformance")
	want := conformanceCases()
	args := fmt.Sprintf("-peer xs -pingpongs %d", conformancePingPongs)
	guests := []rig.Guest{
		{Name: "confa", ELF: elf, Memory: 64, Cmdline: "-half A " + args},
		{Name: "confb", ELF: elf, Memory: 64, Cmdline: "-half B " + args},
	}
	script := rig.Script(`
gozen-guest confa /gozen/confa.cfg 480 &
pa=$!
a=$(wait-for domid confa 90)
gozen-guest confb /gozen/confb.cfg 480 &
pb=$!
b=$(wait-for domid confb 90)
echo "GOZEN-CONF-DOMUS a=$a b=$b"
xenstore-write /local/domain/$a/data/conformance-peer $b /local/domain/$b/data/conformance-peer $a
wait $pa
wait $pb
`)
	start := time.Now()
	run, err := rig.BootDomUs(context.Background(), guests, script, rig.Options{Timeout: 12 * time.Minute, Stream: liveLog(t)})
	saveSerial(t, run)
	if err != nil {
		t.Fatalf("FAIL tier B run: %v", err)
	}
	t.Logf("rig run took %v", time.Since(start).Round(time.Second))
	checkWaits(t, run)
	ids := map[string]string{}
	for _, name := range []string{"confa", "confb"} {
		g := run.Guests[name]
		if g == nil {
			t.Errorf("FAIL guest %s did not run", name)
			continue
		}
		for _, l := range g.Lines {
			if m := conformanceReady.FindStringSubmatch(l.Text); m != nil {
				ids[name] = m[1]
				if m[4] != fmt.Sprint(len(want)-1) {
					t.Errorf("FAIL guest %s runs %s cases, want %d", name, m[4], len(want)-1)
				}
				t.Logf("guest %s: domain %s runs half %s with domain %s", name, m[1], m[2], m[3])
			}
		}
		t.Run(name, func(t *testing.T) { checkCases(t, g, conformanceTag, want) })
	}
	if ids["confa"] == "" || ids["confa"] == ids["confb"] {
		t.Errorf("FAIL the guests did not report two domains: %v", ids)
	}
}

// conformanceConsole is a console of qemu/guests/conformance in which
// every case passed, as it prints it, with the lines around the cases.
func conformanceConsole() []string {
	lines := []string{
		"CONFORMANCE ready domid=1 half=A peer=2 cases=18",
		"CONFORMANCE baseline ports=2 grants=0 shares=0 mappings=0",
	}
	for _, c := range conformanceCases() {
		switch c {
		case "leftovers":
			lines = append(lines, "CONFORMANCE PASS leftovers ports=2 grants=0 shares=0 mappings=0, as before the first case")
		case "evtchn/PingPong":
			lines = append(lines, "CONFORMANCE PASS evtchn/PingPong half=A secs=69.2 | 30000 round trips in 1m9.2s, 2306.8 us each, slowest 14.2ms")
		default:
			lines = append(lines, "CONFORMANCE PASS "+c+" half=A secs=0.2")
		}
	}
	// a failure's continuation and log lines are not cases
	lines = append(lines, "CONFORMANCE   goroutine 7 [running]:", "CONFORMANCE gnttab/UnshareRace log: mapped 3 times",
		"CONFORMANCE evtchn/PingPong events during the case: upcalls=1 delivered=1 dropped=0 (notifications for ports not bound)",
		"CONFORMANCE events upcalls=10621 delivered=10636 dropped=18 rewakes=347")
	return append(lines, fmt.Sprintf("CONFORMANCE DONE pass=%d fail=0", len(conformanceCases())))
}
