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

// benchMemory is the memory, in MiB, of every domU the guest benchmarks
// compare: the Gozen domU and the Linux PVH domU get the same. It is the
// smallest the rig's reference Linux domU (Debian's 6.1 kernel with the
// tiny initramfs of qemu/mkinitramfs.sh, and with BenchmarkVchan's
// libxenvchan additions) reaches its init with, measured in 4 MiB steps on
// 2026-12-01: at 72 MiB Xen's domain builder refuses the 58 MiB
// decompressed kernel, at 76-84 MiB the kernel runs out of memory while
// booting. Gozen's hello needs 44 MiB (see README).
const benchMemory = 88

// bootOwnLine is the bootmark guest's report of its own part of the boot.
var bootOwnLine = regexp.MustCompile(`^\(d\d+\) BOOTMARK entry-to-main-ns=(\d+)$`)

// BenchmarkBootTime measures, in one tier-B rig run, the time from `xl
// create` to a Gozen image's main and to a Linux PVH domU's init, both
// marked on port 0xE9 (Xen prints those lines at once on its serial line),
// with the same memory (benchMemory) and one vCPU each, and reports their
// ratio. It also reports Gozen's own part, from the PVH entry to main, as
// the guest measures it (boot.SinceEntry); the rest of its boot time is the
// toolstack's and Xen's (xl, the domain builder, loading the image). Run it
// with -benchtime 1x: one rig run holds `rounds` boots of each.
func BenchmarkBootTime(b *testing.B) {
	const rounds = 3
	mark := buildGuest(b, "./qemu/guests/bootmark")
	guests := []rig.Guest{
		{Name: "gozen", ELF: mark, Memory: benchMemory},
		{Name: "linux", Linux: true, Memory: benchMemory},
	}
	var sh strings.Builder
	fmt.Fprintf(&sh, "for i in $(seq 1 %d); do for g in gozen linux; do\n", rounds)
	sh.WriteString(`  echo "GOZEN-BENCH-CREATE $g"
  xl create /gozen/$g.cfg >/dev/null 2>&1
  wait-for gone $g 60
done; done
`)
	for i := 0; i < b.N; i++ {
		run, err := rig.BootDomUs(context.Background(), guests, rig.Script(sh.String()), rig.Options{Timeout: 5 * time.Minute})
		if err != nil {
			b.Fatalf("rig run: %v\n%s", err, run.SerialText())
		}
		saveSerial(b, run)
		checkWaits(b, run)
		marks := regexp.MustCompile(`^\(d\d+\) ([GL])$`)
		var sums = map[string]time.Duration{}
		var counts = map[string]int{}
		var own time.Duration
		owns := 0
		var pending, last string
		var created time.Time
		for _, l := range run.Serial {
			text := strings.TrimSpace(l.Text)
			if g, ok := strings.CutPrefix(text, "GOZEN-BENCH-CREATE "); ok {
				pending, last, created = g, g, l.Wall
				continue
			}
			if m := bootOwnLine.FindStringSubmatch(text); m != nil && last == "gozen" {
				ns, _ := strconv.ParseInt(m[1], 10, 64)
				own += time.Duration(ns)
				owns++
				continue
			}
			if m := marks.FindStringSubmatch(text); m != nil && pending != "" {
				want := map[string]string{"gozen": "G", "linux": "L"}[pending]
				if m[1] == want {
					sums[pending] += l.Wall.Sub(created)
					counts[pending]++
					pending = ""
				}
			}
		}
		if counts["gozen"] != rounds || counts["linux"] != rounds || owns != rounds {
			b.Fatalf("saw %d Gozen and %d Linux boot marks and %d entry-to-main reports, want %d each\n%s",
				counts["gozen"], counts["linux"], owns, rounds, run.SerialText())
		}
		gz := sums["gozen"].Seconds() / rounds
		lx := sums["linux"].Seconds() / rounds
		ownS := own.Seconds() / rounds
		b.ReportMetric(gz, "gozen-s/boot")
		b.ReportMetric(ownS, "gozen-entry-to-main-s/boot")
		b.ReportMetric(gz-ownS, "gozen-before-entry-s/boot")
		b.ReportMetric(lx, "linux-s/boot")
		b.ReportMetric(gz/lx, "gozen/linux")
		b.Logf("%d MiB domUs, mean of %d boots each: xl create to main %.3f s (before the PVH entry %.3f s, "+
			"entry to main %.4f s); xl create to Linux init %.3f s; gozen/linux %.2f", benchMemory, rounds, gz, gz-ownS, ownS, lx, gz/lx)
	}
}

// benchLine matches the guests' "BENCH name value unit" lines.
var benchLine = regexp.MustCompile(`BENCH (\S+) ([0-9.]+) (\S+)`)

// reportBench reports every BENCH line of a guest as a benchmark metric.
func reportBench(b *testing.B, g *rig.GuestResult) int {
	n := 0
	for _, l := range g.Lines {
		if m := benchLine.FindStringSubmatch(l.Text); m != nil {
			var v float64
			fmt.Sscan(m[2], &v)
			b.ReportMetric(v, m[3]+"("+m[1]+")")
			n++
		}
	}
	return n
}

// primitivesRunError says why the figures of a xentest run that printed
// lines and ended for reason must not be reported: the run failed (any
// problem xentestProblems finds, a FAIL line first) or printed no BENCH
// line. It returns nil for a run whose figures count.
func primitivesRunError(lines []string, reason string) error {
	if problems := xentestProblems(lines, reason); len(problems) > 0 {
		return fmt.Errorf("xentest failed, no figures reported:\n%s", strings.Join(problems, "\n"))
	}
	for _, l := range lines {
		if benchLine.MatchString(l) {
			return nil
		}
	}
	return errors.New("xentest printed no BENCH lines")
}

// BenchmarkGuestPrimitives reports the guest's event-channel round trip,
// grant access+end-access rate and sleep overshoot (qemu/guests/xentest as
// a PVH dom0, tier A).
func BenchmarkGuestPrimitives(b *testing.B) {
	elf := buildGuest(b, "./qemu/guests/xentest")
	for i := 0; i < b.N; i++ {
		g, err := rig.BootDom0(context.Background(), elf, "", 256, rig.Options{Timeout: 5 * time.Minute})
		if err != nil {
			b.Fatalf("xentest: %v\n%s", err, g.Text())
		}
		if err := primitivesRunError(guestLines(g), g.Reason); err != nil {
			b.Fatalf("%v\n%s", err, g.Text())
		}
		reportBench(b, g)
	}
}

// linuxTries bounds the rig runs of a test or benchmark whose reference
// Linux domU panics.
const linuxTries = 4

// linuxPanicSig is the reference Linux domU's known failure under this
// emulation: its busybox init (PID 1) killed by SIGILL as a program it
// starts begins to run ("Attempted to kill init! exitcode=0x00000004"),
// seen in BenchmarkVchan, BenchmarkBlock and TestTierBVchanCat in about a
// third of the runs, never in a Gozen domU or dom0; the cause is not known.
const linuxPanicSig = "Attempted to kill init! exitcode=0x00000004"

// bootLinux runs a rig with reference Linux domUs among its guests, again
// (up to linuxTries runs) when one of them died of linuxPanicSig, which
// leaves that run without the Linux guest's part. Each such run is logged.
// It returns the last run and its error.
func bootLinux(tb testing.TB, guests []rig.Guest, script string, opts rig.Options) (*rig.Run, error) {
	tb.Helper()
	for try := 1; ; try++ {
		run, err := rig.BootDomUs(context.Background(), guests, rig.Script(script), opts)
		saveSerial(tb, run)
		panicked := ""
		for _, g := range guests {
			if r := run.Guests[g.Name]; g.Linux && r != nil && r.Has(linuxPanicSig) {
				panicked = g.Name
			}
		}
		if panicked == "" || try == linuxTries {
			if panicked != "" {
				err = fmt.Errorf("the reference Linux domU %s's init died of SIGILL in %d runs of %d (%w)", panicked, try, try, err)
			}
			return run, err
		}
		tb.Logf("run %d: the reference Linux domU %s's init died of SIGILL (%s); running again", try, panicked, linuxPanicSig)
	}
}

// bootBench is bootLinux for a benchmark: a failed run ends it.
func bootBench(b *testing.B, guests []rig.Guest, script string, opts rig.Options) *rig.Run {
	b.Helper()
	run, err := bootLinux(b, guests, script, opts)
	if err != nil {
		b.Fatalf("FAIL rig run: %v\n%s", err, run.SerialText())
	}
	return run
}
