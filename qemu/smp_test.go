package qemu

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/gozen-dev/gozen/qemu/rig"
)

// smpCases are the cases qemu/guests/smp runs by default.
var smpCases = []string{"count", "workers", "stress"}

// TestTierASMP boots qemu/guests/smp as a PVH dom0 with 1, 2 and 4 vCPUs
// (dom0_max_vcpus, QEMU -smp): with 1 it must behave as before SMP, with
// more every vCPU must run goroutines and the stress must lose no wake-up.
func TestTierASMP(t *testing.T) {
	elf := buildGuest(t, "./qemu/guests/smp")
	for _, n := range []int{1, 2, 4} {
		t.Run(fmt.Sprintf("vcpus=%d", n), func(t *testing.T) {
			g, err := rig.BootDom0(context.Background(), elf, "", 256, rig.Options{Timeout: 5 * time.Minute, VCPUs: n})
			if err != nil {
				t.Fatalf("FAIL tier A boot: %v\n%s", err, g.Text())
			}
			want := fmt.Sprintf("SMP vcpus=%d numcpu=%d gomaxprocs=%d", n, n, n)
			if !g.Has(want) {
				t.Errorf("FAIL the guest did not print %q", want)
			}
			checkCases(t, g, "SMP", smpCases)
		})
	}
}
