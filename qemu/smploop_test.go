package qemu

import (
	"context"
	"fmt"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gozen-dev/gozen/qemu/rig"
)

var smpSkippedRE = regexp.MustCompile(`HLTs skipped (\d+)`)

// TestTierBSMPOversubLoop is the soak of the SMP idle path under the
// heaviest hosting load: with GOZEN_SMP_LOOP=N it boots tier B once and
// runs N smp guests (4 vCPUs, or GOZEN_SMP_LOOP_VCPUS) one after another
// (the default cases, oversub: more Ms than vCPUs, every vCPU on the
// rig's one shared pCPU, then an idle second), each given 100 s; a guest
// that does not finish is dumped (Xen's timers and run queues, vCPU
// registers and stacks, local APICs) and destroyed. It reports how many
// finished and how many idle HLTs the entry slots skipped (trap.HaltsSkipped).
// Without GOZEN_SMP_LOOP it is skipped: it is a soak, not part of make test.
func TestTierBSMPOversubLoop(t *testing.T) {
	v := os.Getenv("GOZEN_SMP_LOOP")
	if v == "" {
		t.Skip("GOZEN_SMP_LOOP unset (the number of sequential oversub guests to run)")
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("GOZEN_SMP_LOOP=%q: want a positive count", v)
	}
	vcpus := 4
	if s := os.Getenv("GOZEN_SMP_LOOP_VCPUS"); s != "" {
		if vcpus, err = strconv.Atoi(s); err != nil || vcpus < 1 {
			t.Fatalf("GOZEN_SMP_LOOP_VCPUS=%q: want a positive count", s)
		}
	}
	elf := buildGuest(t, "./qemu/guests/smp")
	var guests []rig.Guest
	var script strings.Builder
	for i := 1; i <= n; i++ {
		name := fmt.Sprintf("ov%d", i)
		guests = append(guests, rig.Guest{Name: name, ELF: elf, Memory: 160, VCPUs: vcpus, Cmdline: "-idle 1s -oversub"})
		fmt.Fprintf(&script, "gozen-guest %s /gozen/%s.cfg 100\n", name, name)
	}
	run, err := rig.BootDomUs(context.Background(), guests, rig.Script(script.String()),
		rig.Options{Timeout: time.Duration(n)*110*time.Second + 5*time.Minute})
	saveSerial(t, run)
	if err != nil {
		t.Fatalf("FAIL tier B run: %v", err)
	}
	done, skipped := 0, 0
	for _, g := range guests {
		r := run.Guests[g.Name]
		switch {
		case r == nil:
			t.Errorf("FAIL %s never started", g.Name)
		case !r.Has("SMP IDLE done") || r.Reason != rig.ReasonPoweroff:
			t.Errorf("FAIL %s did not finish (%s):\n%s", g.Name, r.Reason, r.Text())
		default:
			done++
			if m := smpSkippedRE.FindStringSubmatch(r.Text()); m != nil {
				k, _ := strconv.Atoi(m[1])
				skipped += k
			}
		}
	}
	t.Logf("%d of %d oversub guests (%d vCPUs) finished; %d HLTs were skipped (an interrupt taken just before them)", done, n, vcpus, skipped)
}
