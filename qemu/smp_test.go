package qemu

import (
	"context"
	"fmt"
	"regexp"
	"runtime"
	"strconv"
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

var smpBenchRE = regexp.MustCompile(`SMP BENCH vcpus=(\d+) workers=(\d+) blocks=(\d+) bytes=(\d+) ns=(\d+)`)

// BenchmarkSMP runs the guest's CPU-bound parallel benchmark (SHA-256 of
// independent 64 KiB blocks on GOMAXPROCS goroutines) in a PVH dom0 with 1
// vCPU and with 2 (QEMU gets as many CPUs, so each vCPU has its own TCG
// thread), and reports each one's best of three rounds and the speedup.
// Run it with -benchtime 1x.
func BenchmarkSMP(b *testing.B) {
	elf := buildGuest(b, "./qemu/guests/smp")
	for i := 0; i < b.N; i++ {
		best := map[int]time.Duration{}
		var mb float64
		for _, n := range []int{1, 2} {
			g, err := rig.BootDom0(context.Background(), elf, "-bench", 256, rig.Options{Timeout: 5 * time.Minute, VCPUs: n})
			if err != nil {
				b.Fatalf("tier A boot with %d vCPUs: %v\n%s", n, err, g.Text())
			}
			for _, l := range g.Lines {
				m := smpBenchRE.FindStringSubmatch(l.Text)
				if m == nil {
					continue
				}
				if v, _ := strconv.Atoi(m[1]); v != n {
					b.Fatalf("the guest ran on %s vCPUs, want %d: %s", m[1], n, l.Text)
				}
				ns, _ := strconv.ParseInt(m[5], 10, 64)
				bytes, _ := strconv.ParseFloat(m[4], 64)
				mb = bytes / (1 << 20)
				if d := time.Duration(ns); best[n] == 0 || d < best[n] {
					best[n] = d
				}
			}
			if best[n] == 0 {
				b.Fatalf("no SMP BENCH line with %d vCPUs:\n%s", n, g.Text())
			}
			b.Logf("%d vCPU(s): %.1f MiB hashed in %v (best of 3), %.2f MiB/s", n, mb, best[n], mb/best[n].Seconds())
		}
		speedup := best[1].Seconds() / best[2].Seconds()
		b.ReportMetric(mb/best[1].Seconds(), "MiB/s-1vcpu")
		b.ReportMetric(mb/best[2].Seconds(), "MiB/s-2vcpu")
		b.ReportMetric(speedup, "speedup")
		b.Logf("speedup on 2 vCPUs: %.2fx (host: %d CPUs; QEMU TCG, one thread per vCPU)", speedup, runtime.NumCPU())
	}
}
