package qemu

import (
	"context"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gozen-dev/gozen/qemu/rig"
)

// TestTierBBoot boots Gozen images as xl-created PVH domUs from a Linux
// dom0: apps/hello in 48 MiB, every way of exiting, an idle domain's CPU
// use, the guest clock against dom0's and the platform's suspend/resume
// steps (qemu/guests/resume). TestTierBFootprint boots hello at its
// memory floor and under it.
func TestTierBBoot(t *testing.T) {
	hello := buildGuest(t, "hello")
	exit := buildGuest(t, "./qemu/guests/exit")
	idle := buildGuest(t, "./qemu/guests/idle")
	xentest := buildGuest(t, "./qemu/guests/xentest")
	v4vping := buildGuest(t, "./qemu/guests/v4vsession")
	resume := buildGuest(t, "./qemu/guests/resume")
	guests := []rig.Guest{
		{Name: "hello", ELF: hello, Memory: 48},
		{Name: "ret", ELF: exit},
		{Name: "exit3", ELF: exit, Cmdline: "-code 3", ExpectCrash: true},
		{Name: "panic", ELF: exit, Cmdline: "-panic", ExpectCrash: true},
		{Name: "fault", ELF: exit, Cmdline: "-fault nilwrite", ExpectCrash: true},
		{Name: "idle", ELF: idle, Cmdline: "-sleep 8s"},
		{Name: "xentest", ELF: xentest, Memory: 128, Timeout: 3 * time.Minute},
		{Name: "v4vstock", ELF: v4vping, Cmdline: "-serve", ExpectCrash: true},
		{Name: "resume", ELF: resume, Timeout: 2 * time.Minute},
	}
	script := rig.Script(`
gozen-guest hello /gozen/hello.cfg 60 &
p=$!
while kill -0 $p 2>/dev/null; do echo "GOZEN-DOM0-NOW $(/gozen/dom0tool now)"; sleep 0.2; done
for g in ret exit3 panic fault v4vstock; do gozen-guest $g /gozen/$g.cfg 60; done
gozen-guest idle /gozen/idle.cfg 60 &
p=$!
wait-for log idle 'idle: sleeping' 30
a=$(xl list idle | awk 'NR==2 {print $6}'); sleep 5; b=$(xl list idle | awk 'NR==2 {print $6}')
echo "GOZEN-IDLE-CPU $a $b 5"
wait $p
gozen-guest xentest /gozen/xentest.cfg 180
gozen-guest resume /gozen/resume.cfg 120
`)
	run, err := rig.BootDomUs(context.Background(), guests, script, rig.Options{Timeout: 9 * time.Minute})
	saveSerial(t, run)
	if err != nil {
		t.Fatalf("FAIL tier B run: %v\n%s", err, run.SerialText())
	}
	checkWaits(t, run)
	g := run.Guests["hello"]
	if g == nil {
		t.Fatalf("FAIL hello never started\n%s", run.SerialText())
	}
	checkHello(t, g, "domU")
	if !g.Has("49152 KiB RAM") {
		t.Errorf("FAIL hello did not run in a 48 MiB domain:\n%s", g.Text())
	} else {
		t.Log("PASS hello ran with memory = 48")
	}
	checkClockAgainstDom0(t, run)

	for _, tt := range []struct{ name, reason, want string }{
		{"ret", rig.ReasonPoweroff, "returning from main"},
		{"exit3", rig.ReasonCrash, "exit status 3"},
		{"panic", rig.ReasonCrash, "panic: exit-test: deliberate panic"},
		// a CPU exception in a domU: the report reaches xl's console
		{"fault", rig.ReasonCrash, "gozen: FAULT #PF page fault (vector 14) error 0x0000000000000002 not-present write"},
		{"fault", rig.ReasonCrash, "main.nilWrite"},
	} {
		g := run.Guests[tt.name]
		switch {
		case g == nil:
			t.Errorf("FAIL guest %s never started", tt.name)
		case g.Reason != tt.reason || !g.Has(tt.want):
			t.Errorf("FAIL guest %s ended %q (want %q), output:\n%s", tt.name, g.Reason, tt.reason, g.Text())
		default:
			t.Logf("PASS guest %s ended with %s and printed %q", tt.name, g.Reason, tt.want)
		}
	}

	m := regexp.MustCompile(`GOZEN-IDLE-CPU ([0-9.]+) ([0-9.]+) (\d+)`).FindStringSubmatch(run.SerialText())
	if m == nil {
		t.Fatalf("FAIL no idle CPU measurement\n%s", run.SerialText())
	}
	a, _ := strconv.ParseFloat(m[1], 64)
	b, _ := strconv.ParseFloat(m[2], 64)
	secs, _ := strconv.ParseFloat(m[3], 64)
	if use := (b - a) / secs; use >= 0.05 {
		t.Errorf("FAIL a sleeping guest used %.1f%% of a CPU (xl list %s -> %s s)", use*100, m[1], m[2])
	} else {
		t.Logf("PASS a sleeping guest used %.1f%% of a CPU over %v s (xl list %s -> %s s)", use*100, secs, m[1], m[2])
	}
	if g := run.Guests["idle"]; g == nil || !g.Has("idle: woke after") || g.Reason != rig.ReasonPoweroff {
		t.Errorf("FAIL idle guest did not wake and power off: %+v", g)
	}
	if g := run.Guests["v4vstock"]; g == nil || !g.Has("Argo not available in this hypervisor") || g.Reason != rig.ReasonCrash {
		t.Errorf("FAIL v4vsession on the stock hypervisor did not report Argo missing: %+v", g)
	} else {
		l, _ := g.Find("Argo not available")
		t.Logf("PASS stock hypervisor: %s", l.Text)
	}
	t.Run("primitives", func(t *testing.T) {
		g := run.Guests["xentest"]
		if g == nil {
			t.Fatal("FAIL xentest never started")
		}
		checkXentest(t, g)
	})
	t.Run("resume", func(t *testing.T) {
		g := run.Guests["resume"]
		if g == nil {
			t.Fatal("FAIL resume never started")
		}
		checkCases(t, g, "RESUME", []string{"cancelled", "same-domain", "refused", "leftovers"})
	})
}

// checkClockAgainstDom0 compares the guest's time.Now() (printed on Xen's
// serial line through port 0xE9) with dom0's clock (printed on the same
// line every 0.2 s), using the host arrival times of both lines.
func checkClockAgainstDom0(t *testing.T, run *rig.Run) {
	t.Helper()
	var guest, dom0 *rig.Line
	var guestNs, dom0Ns int64
	for i := range run.Serial {
		l := &run.Serial[i]
		if m := unixNsRE.FindStringSubmatch(l.Text); m != nil && guest == nil {
			guest = l
			guestNs, _ = strconv.ParseInt(m[1], 10, 64)
		}
	}
	if guest == nil {
		t.Error("FAIL the guest's unix-ns line is not on the serial console")
		return
	}
	best := time.Hour
	for i := range run.Serial {
		l := &run.Serial[i]
		if v, ok := strings.CutPrefix(l.Text, "GOZEN-DOM0-NOW "); ok {
			if d := l.Wall.Sub(guest.Wall).Abs(); d < best {
				best, dom0 = d, l
				dom0Ns, _ = strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			}
		}
	}
	if dom0 == nil {
		t.Error("FAIL no dom0 clock lines")
		return
	}
	off := time.Duration((guestNs - guest.Wall.UnixNano()) - (dom0Ns - dom0.Wall.UnixNano()))
	if off.Abs() > time.Second {
		t.Errorf("FAIL guest clock is %v off dom0's", off)
	} else {
		t.Logf("PASS guest time.Now() within %v of dom0's clock", off)
	}
}
