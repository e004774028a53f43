package qemu

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gozen-dev/gozen/qemu/rig"
)

var (
	sleptRE  = regexp.MustCompile(`slept ([0-9.]+m?s)`)
	unixNsRE = regexp.MustCompile(`hello: unix-ns (\d+)`)
)

// checkHello asserts what apps/hello must print in any tier.
func checkHello(t *testing.T, g *rig.GuestResult, role string) {
	t.Helper()
	for _, want := range []string{"hello: Gozen on Xen 4.17", "running as PVH " + role, "RAM", "time.Now(): 20", "hello: powering off"} {
		if !g.Has(want) {
			t.Errorf("FAIL hello output lacks %q", want)
		} else {
			t.Logf("PASS hello printed %q", want)
		}
	}
	if g.Has("TSC frequency is unavailable") {
		t.Error("FAIL TamaGo's TSC warning printed")
	}
	l, ok := g.Find("slept ")
	if !ok {
		t.Fatal("FAIL no 'slept' line")
	}
	d, err := time.ParseDuration(sleptRE.FindStringSubmatch(l.Text)[1])
	if err != nil {
		t.Fatal(err)
	}
	// Never early; late only by what a loaded host's scheduling explains
	// (25 ms was seen in a clean run of TestTierBFootprint): how late is
	// latency, not correctness, and the clock's rate is checked against
	// the host's elsewhere (guestClockOffset).
	if d < time.Second || d > time.Second+250*time.Millisecond {
		t.Errorf("FAIL time.Sleep(1s) slept %v by the guest clock, want 1 s to 1.25 s", d)
	} else {
		t.Logf("PASS time.Sleep(1s) slept %v", d)
	}
	if g.Reason != rig.ReasonPoweroff {
		t.Errorf("FAIL hello ended with %q, want poweroff", g.Reason)
	} else {
		t.Log("PASS hello powered off")
	}
}

func TestTierAHello(t *testing.T) {
	elf := buildGuest(t, "hello")
	g, err := rig.BootDom0(context.Background(), elf, "", 128, rig.Options{Timeout: 90 * time.Second})
	if err != nil {
		t.Fatalf("FAIL tier A boot: %v\n%s", err, g.Text())
	}
	checkHello(t, g, "dom0")
	// The guest's wall clock against the host's, on Xen's serial line.
	if off, err := guestClockOffset(g.Lines, 1500*time.Millisecond); err != nil {
		t.Errorf("FAIL %v", err)
	} else {
		t.Logf("PASS guest clock within %v of the host's", off)
	}
}

// guestClockOffset reads apps/hello's "hello: unix-ns N" line, the
// guest's time.Now() printed straight to Xen's serial line, and returns
// how far it was from the host's clock when the line arrived. It is an
// error when the line is missing, unreadable or printed more than once, or
// when the offset exceeds limit either way.
func guestClockOffset(lines []rig.Line, limit time.Duration) (time.Duration, error) {
	var found []rig.Line
	var ns []int64
	for _, l := range lines {
		m := unixNsRE.FindStringSubmatch(l.Text)
		if m == nil {
			continue
		}
		v, err := strconv.ParseInt(m[1], 10, 64)
		if err != nil {
			return 0, fmt.Errorf("guest clock line %q: %w", l.Text, err)
		}
		found = append(found, l)
		ns = append(ns, v)
	}
	switch len(found) {
	case 0:
		return 0, errors.New("no 'hello: unix-ns' line: the guest's clock was not checked")
	case 1:
	default:
		return 0, fmt.Errorf("%d 'hello: unix-ns' lines, want one", len(found))
	}
	off := time.Duration(ns[0] - found[0].Wall.UnixNano())
	if off < -limit || off > limit {
		return off, fmt.Errorf("guest clock is %v off the host's (limit %v)", off, limit)
	}
	return off, nil
}

func TestTierAExit(t *testing.T) {
	elf := buildGuest(t, "./qemu/guests/exit")
	tests := []struct {
		args   string
		reason string
		want   []string
	}{
		{"", rig.ReasonPoweroff, []string{"returning from main"}},
		{"-code 0", rig.ReasonPoweroff, []string{"calling os.Exit 0"}},
		{"-code 3", rig.ReasonCrash, []string{"calling os.Exit 3", "exit status 3"}},
		{"-panic", rig.ReasonCrash, []string{"panic: exit-test: deliberate panic", "goroutine 1", "exit status 2"}},
		// CPU exceptions: a report, then a clean crash (never a triple fault)
		{"-fault nilwrite", rig.ReasonCrash, []string{"gozen: FAULT #PF page fault (vector 14) error 0x0000000000000002 not-present write",
			"cr2 0x0000000000000008", "main.nilWrite", "gozen: goroutine 1 g ", "crashing the domain"}},
		{"-fault divzero", rig.ReasonCrash, []string{"gozen: FAULT #DE divide error (vector 0)", "main.divideByZero", "main.main", "crashing the domain"}},
		{"-fault ud", rig.ReasonCrash, []string{"gozen: FAULT #UD invalid opcode (vector 6)", "code at rip: 0f 0b", "main.invalidOpcode", "crashing the domain"}},
		{"-fault gp", rig.ReasonCrash, []string{"gozen: FAULT #GP general protection (vector 13)", "main.nonCanonical", "crashing the domain"}},
		{"-fault stack", rig.ReasonCrash, []string{"gozen: FAULT #PF page fault (vector 14) error 0x0000000000000002 not-present write",
			"rsp 0x0000000000001000", "cr2 0x0000000000000ff8", "RSP OUTSIDE this stack", "main.stackOverflow", "crashing the domain"}},
	}
	for _, tt := range tests {
		t.Run(strings.ReplaceAll(tt.args, " ", "_"), func(t *testing.T) {
			g, err := rig.BootDom0(context.Background(), elf, tt.args, 128, rig.Options{Timeout: 60 * time.Second})
			if err != nil {
				t.Fatalf("FAIL boot: %v\n%s", err, g.Text())
			}
			if g.Reason != tt.reason {
				t.Errorf("FAIL args %q ended with %q, want %q\n%s", tt.args, g.Reason, tt.reason, g.Text())
			}
			for _, w := range tt.want {
				if !g.Has(w) {
					t.Errorf("FAIL args %q: no line with %q\n%s", tt.args, w, g.Text())
				}
			}
			if strings.Contains(g.Text(), "Triple fault") || strings.Contains(g.Text(), "fault while reporting") {
				t.Errorf("FAIL args %q: the fault was not handled\n%s", tt.args, g.Text())
			}
			if !t.Failed() {
				t.Logf("PASS args %q ended with %s", tt.args, g.Reason)
			}
		})
	}
}
