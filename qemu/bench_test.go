package qemu

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gozen-dev/gozen/qemu/rig"
)

// BenchmarkBootTime measures, in one tier-B rig run, the time from `xl
// create` to a Gozen image's main and to a Linux PVH domU's init, both
// marked on port 0xE9 (Xen prints those lines at once on its serial line),
// and reports their ratio. Run it with -benchtime 1x: one rig run holds
// `rounds` boots of each.
func BenchmarkBootTime(b *testing.B) {
	const rounds = 3
	mark := buildGuest(b, "./qemu/guests/bootmark")
	guests := []rig.Guest{
		{Name: "gozen", ELF: mark, Memory: 64},
		{Name: "linux", Linux: true, Memory: 256},
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
		checkWaits(b, run)
		marks := regexp.MustCompile(`^\(d\d+\) ([GL])$`)
		var sums = map[string]time.Duration{}
		var counts = map[string]int{}
		var pending string
		var created time.Time
		for _, l := range run.Serial {
			if g, ok := strings.CutPrefix(l.Text, "GOZEN-BENCH-CREATE "); ok {
				pending, created = g, l.Wall
				continue
			}
			if m := marks.FindStringSubmatch(strings.TrimSpace(l.Text)); m != nil && pending != "" {
				want := map[string]string{"gozen": "G", "linux": "L"}[pending]
				if m[1] == want {
					sums[pending] += l.Wall.Sub(created)
					counts[pending]++
					pending = ""
				}
			}
		}
		if counts["gozen"] != rounds || counts["linux"] != rounds {
			b.Fatalf("saw %d Gozen and %d Linux boot marks, want %d each\n%s", counts["gozen"], counts["linux"], rounds, run.SerialText())
		}
		gz := sums["gozen"].Seconds() / rounds
		lx := sums["linux"].Seconds() / rounds
		b.ReportMetric(gz, "gozen-s/boot")
		b.ReportMetric(lx, "linux-s/boot")
		b.ReportMetric(gz/lx, "gozen/linux")
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
