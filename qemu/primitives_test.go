package qemu

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/gozen-dev/gozen/qemu/rig"
)

// checkXentest turns qemu/guests/xentest's lines into test results.
func checkXentest(t *testing.T, g *rig.GuestResult) {
	t.Helper()
	done := false
	for _, l := range g.Lines {
		i := strings.Index(l.Text, "XENTEST ")
		if i < 0 {
			continue
		}
		s := l.Text[i:]
		switch {
		case strings.HasPrefix(s, "XENTEST PASS"):
			t.Log(s)
		case strings.HasPrefix(s, "XENTEST FAIL"):
			t.Error(s)
		case strings.HasPrefix(s, "XENTEST DONE"):
			done = true
			t.Log(s)
		default:
			t.Log(s)
		}
	}
	if !done {
		t.Errorf("FAIL xentest did not finish (ended %s):\n%s", g.Reason, g.Text())
	}
	if g.Reason != rig.ReasonPoweroff {
		t.Errorf("FAIL xentest ended with %s", g.Reason)
	}
}

// TestTierAPrimitives runs the event-channel and grant-table self-test as
// a PVH dom0.
func TestTierAPrimitives(t *testing.T) {
	elf := buildGuest(t, "./qemu/guests/xentest")
	g, err := rig.BootDom0(context.Background(), elf, "", 256, rig.Options{Timeout: 5 * time.Minute})
	if err != nil {
		t.Fatalf("FAIL boot: %v\n%s", err, g.Text())
	}
	checkXentest(t, g)
}
