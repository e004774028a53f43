package qemu

import (
	"context"
	"testing"
	"time"

	"github.com/gozen-dev/gozen/qemu/rig"
)

// xentestCases are the cases qemu/guests/xentest runs, in its order. A
// run passes only if each of them, and no other, printed one PASS line.
// Keep it in step with the guest's main.
var xentestCases = []string{
	"evtchn-loopback",
	"evtchn-close-wakes",
	"evtchn-bad-port",
	"irq-deferred",
	"irq-halt-skip",
	"virq-timer",
	"sleep-precision",
	"gnttab-setup",
	"gnttab-cycles",
	"gnttab-copy",
	"gnttab-selfmap-refused",
	"gnttab-map-ungranted",
	"gnttab-leftovers",
	"evtchn-leftovers",
}

// xentestProblems returns what is wrong with a run of xentest that printed
// lines and ended for reason, or nothing if it passed: a case that failed,
// is missing, was not expected or reported twice, no "XENTEST DONE" line
// or one whose counts disagree with the case lines, or an ending other
// than poweroff.
func xentestProblems(lines []string, reason string) []string {
	return caseProblems("XENTEST", xentestCases, lines, reason)
}

// checkXentest turns qemu/guests/xentest's lines into test results.
func checkXentest(t *testing.T, g *rig.GuestResult) {
	t.Helper()
	checkCases(t, g, "XENTEST", xentestCases)
}

// TestTierAPrimitives runs the event-channel and grant-table self-test as
// a PVH dom0.
func TestTierAPrimitives(t *testing.T) {
	elf := buildGuest(t, "./qemu/guests/xentest")
	g, err := rig.BootDom0(context.Background(), elf, "", 256, rig.Options{Timeout: 12 * time.Minute})
	if err != nil {
		t.Fatalf("FAIL boot: %v\n%s", err, g.Text())
	}
	checkXentest(t, g)
}
