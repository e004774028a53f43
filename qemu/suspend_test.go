package qemu

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gozen-dev/gozen/qemu/rig"
)

// xlHelpers are the shell functions of the lifecycle scripts: now (dom0's
// clock in ns), up (dom0's uptime), start NAME (xl create with the console
// log streamed as "GZ|NAME| line"), state NAME, ticks NAME, ask NAME TAG
// (the counter guest's clock bracketed by dom0's) and xlrun TAG CMD... (an
// xl command's output and how it ended, with dom0's clock around it).
const xlHelpers = `
now() { /gozen/dom0tool now; }
up() { cut -d' ' -f1 /proc/uptime; }
C=/var/log/xen/console
start() {
	echo "GOZEN-GUEST-START $1 at $(up)"
	xl create /gozen/$1.cfg >/tmp/xl-create-$1.log 2>&1 || sed "s/^/GOZEN-XL|$1| /" /tmp/xl-create-$1.log
	i=0; while [ ! -e $C/guest-$1.log ] && [ $i -lt 300 ]; do sleep 0.1; i=$((i+1)); done
	tail -n +1 -f $C/guest-$1.log | while IFS= read -r l; do echo "GZ|$1| $l"; done &
}
state() { xl list "$1" 2>/dev/null | awk 'NR==2 {print $5}'; }
ticks() { grep -c '^TICK' $C/guest-$1.log; }
# ask NAME TAG: dom0's clock before and after the guest's answer to TAG
ask() {
	K=/local/domain/$(xl domid $1)/data/counter
	t0=$(now); xenstore-write $K/ask $2
	i=0
	while [ $i -lt 500 ]; do
		a=$(xenstore-read $K/answer 2>/dev/null)
		case $a in "$2 "*) break ;; esac
		i=$((i+1)); sleep 0.02
	done
	t1=$(now)
	echo "GOZEN-SUS clock $2 $t0 $t1 answer=[$a]"
}
# xlrun TAG CMD...: run an xl command, print its output and how it ended
xlrun() {
	tag=$1; shift
	t0=$(now); timeout 180 "$@" >/tmp/xl-$tag.log 2>&1; rc=$?; t1=$(now)
	sed "s/^/GOZEN-SUS xl-$tag| /" /tmp/xl-$tag.log
	echo "GOZEN-SUS $tag rc=$rc $t0 $t1"
}

`

// suspendScript drives xl save and restore against two counter guests
// (qemu/guests/counter) in one dom0:
//
//   - refuse (-refuse, a device that cannot quiesce): `xl save` in the
//     background; the guest acknowledges, refuses, and keeps running, and
//     libxl gives up after its 60 s wait for the domain to suspend;
//   - counter, meanwhile: `xl save -c` (a checkpoint: the domain keeps
//     running), then `xl save` to a file in dom0's tmpfs and `xl restore`
//     from it, with the guest's clock bracketed by dom0's through xenstore
//     before and after each (ask), then xl shutdown.
//
// The guests are started with xl create (its monitor in the background:
// xl's monitor exits when the domain suspends, and xl restore starts a new
// one) and their console logs streamed by start: xenconsoled appends to
// guest-NAME.log for every domain of that name, restored ones too.
const suspendScript = xlHelpers + `
start counter
start refuse
wait-for log counter 'COUNTER ready' 60
wait-for log refuse 'COUNTER ready' 60
echo "GOZEN-SUS features suspend=$(xenstore-read /local/domain/$(xl domid counter)/control/feature-suspend)"

xlrun refuse xl save refuse /tmp/refuse.save &
rp=$!

wait-for log counter '^TICK seq=20 ' 60
ask counter before
xlrun checkpoint xl save -c counter /tmp/counter.ckpt
echo "GOZEN-SUS checkpoint-file size=$(stat -c %s /tmp/counter.ckpt 2>/dev/null)"
rm -f /tmp/counter.ckpt
wait-for log counter 'COUNTER resumed' 60
sleep 1
id=$(xl domid counter)
echo "GOZEN-SUS after-checkpoint domid=$id state=$(state counter) resumed=[$(xenstore-read /local/domain/$id/data/counter/resumed 2>&1)]"
ask counter checkpoint
wait-for log counter '^TICK' 30 $(($(ticks counter) + 10))

xlrun save xl save counter /tmp/counter.save
echo "GOZEN-SUS save-file size=$(stat -c %s /tmp/counter.save 2>/dev/null) listed=$(xl list counter >/dev/null 2>&1 && echo yes || echo no)"
sleep 1
xlrun restore xl restore /tmp/counter.save
rm -f /tmp/counter.save
wait-for log counter 'COUNTER resumed kind=new-domain' 60
id=$(xl domid counter)
wait-for xs /local/domain/$id/data/counter/resumed '2 new-domain' 30
echo "GOZEN-SUS after-restore domid=$id state=$(state counter) resumed=[$(xenstore-read /local/domain/$id/data/counter/resumed 2>&1)] feature-suspend=$(xenstore-read /local/domain/$id/control/feature-suspend 2>&1)"
ask counter restore
wait-for log counter '^TICK' 30 $(($(ticks counter) + 20))
echo "GOZEN-SUS after-restore-ticks state=$(state counter)"

wait $rp
wait-for log refuse 'suspend refused' 10
a=$(ticks refuse); sleep 1; b=$(ticks refuse)
echo "GOZEN-SUS refuse-after state=$(state refuse) ticks $a $b"

for g in counter refuse; do
	timeout 30 xl shutdown -w $g >/dev/null 2>&1
	sleep 1.5
	r=none; grep -q 'COUNTER done' $C/guest-$g.log && r=0
	echo "GOZEN-GUEST-END $g reason=$r at $(up)"
	xl destroy $g 2>/dev/null
done
:
`

var (
	susLineRE  = regexp.MustCompile(`^GOZEN-SUS (\S+) rc=(-?\d+) (\d+) (\d+)$`)
	susClockRE = regexp.MustCompile(`^GOZEN-SUS clock (\S+) (\d+) (\d+) answer=\[(\S*) ?(\d*)\]$`)
	// (Xen's own console lines may be spliced into the end of a line)
	tickRE      = regexp.MustCompile(`^TICK seq=(\d+) now=(\d+)`)
	resumedRE   = regexp.MustCompile(`COUNTER resumed kind=(\S+) seq=(\d+) domid=(\d+)`)
	susAfterRE  = regexp.MustCompile(`^GOZEN-SUS after-(checkpoint|restore) domid=(\d+) state=(\S*) resumed=\[([^\]]*)\]`)
	susRefuseRE = regexp.MustCompile(`^GOZEN-SUS refuse-after state=(\S*) ticks (\d+) (\d+)$`)
)

// clockTolerance bounds how far the guest's time.Now may be outside dom0's
// bracket around its answer. Both clocks are Xen's: the guest's is the
// wall clock Xen published at its boot plus Xen system time (boot/clock),
// dom0 Linux's is the wall clock it read from Xen at its boot advanced by
// the same pvclock; they differ by those two reads' rounding and by the
// drift of Linux's timekeeping against the pvclock over the run, which are
// milliseconds. What this looks for, a clock stopped over the suspend or
// set back by the resume, is the downtime: seconds (a 64 MiB save and
// restore under emulation). TestTierBBoot's comparison, through the
// serial line's arrival times, allows 1 s.
const clockTolerance = 250 * time.Millisecond

// TestTierBSuspend: xl save -c (checkpoint), xl save and xl restore of a
// Gozen domU that counts, and xl save of one that refuses to suspend, in
// one rig boot. The counter must go on across both with no tick lost or
// repeated, its clock must agree with dom0's before and after, xenstore
// must work after the restore (the guest writes, dom0 reads, and a watch
// made before the save fires), and xl list must show it running; the
// refused save must fail the way libxl fails it (60 s, then xl resumes
// the domain) with the domain running throughout.
func TestTierBSuspend(t *testing.T) {
	counter := buildGuest(t, "./qemu/guests/counter")
	guests := []rig.Guest{
		{Name: "counter", ELF: counter, Memory: 64},
		{Name: "refuse", ELF: counter, Memory: 64, Cmdline: "-refuse"},
	}
	run, err := rig.BootDomUs(context.Background(), guests, suspendScript, rig.Options{Timeout: 12 * time.Minute})
	saveSerial(t, run)
	if err != nil {
		t.Fatalf("FAIL tier B run: %v\n%s", err, run.SerialText())
	}
	checkWaits(t, run)
	serial := run.SerialText()
	c, r := run.Guests["counter"], run.Guests["refuse"]
	if c == nil || r == nil {
		t.Fatalf("FAIL a guest never started\n%s", serial)
	}
	xl := map[string][2]int64{} // tag -> dom0 clock before, after
	rcs := map[string]int{}
	var clocks []string
	var refuseAfter []string
	for _, l := range run.Serial {
		if m := susRefuseRE.FindStringSubmatch(l.Text); m != nil {
			refuseAfter = m
		}
		if m := susLineRE.FindStringSubmatch(l.Text); m != nil {
			rc, _ := strconv.Atoi(m[2])
			t0, _ := strconv.ParseInt(m[3], 10, 64)
			t1, _ := strconv.ParseInt(m[4], 10, 64)
			rcs[m[1]], xl[m[1]] = rc, [2]int64{t0, t1}
		}
		if strings.HasPrefix(l.Text, "GOZEN-SUS clock ") {
			clocks = append(clocks, l.Text)
		}
	}
	took := func(tag string) time.Duration { return time.Duration(xl[tag][1] - xl[tag][0]).Round(time.Millisecond) }

	if !strings.Contains(serial, "GOZEN-SUS features suspend=1") {
		t.Errorf("FAIL control/feature-suspend is not 1")
	} else {
		t.Log("PASS control/feature-suspend=1")
	}

	t.Run("checkpoint", func(t *testing.T) {
		if rc, ok := rcs["checkpoint"]; !ok || rc != 0 {
			t.Fatalf("FAIL xl save -c: rc %d (ran %v)\n%s", rc, ok, xlOutput(serial, "checkpoint"))
		}
		res := resumes(c)
		if len(res) < 1 || (res[0][0] != "same-domain" && res[0][0] != "cancelled") {
			t.Fatalf("FAIL after xl save -c the guest's resume found %v, want same-domain or cancelled:\n%s", res, c.Text())
		}
		a := afterLine(serial, "checkpoint")
		switch {
		case a == nil:
			t.Errorf("FAIL no after-checkpoint line")
		case !running(a[3]) || a[4] != "1 "+res[0][0] || a[2] != res[0][2]:
			t.Errorf("FAIL after xl save -c: domid %s (guest says %s), state %q, data/counter/resumed %q", a[2], res[0][2], a[3], a[4])
		default:
			t.Logf("PASS xl save -c in %v: the domain kept running as domain %s (state %s), the guest found %s and wrote data/counter/resumed=%q",
				took("checkpoint"), a[2], a[3], res[0][0], a[4])
		}
	})

	t.Run("save-restore", func(t *testing.T) {
		for _, tag := range []string{"save", "restore"} {
			if rc, ok := rcs[tag]; !ok || rc != 0 {
				t.Fatalf("FAIL xl %s: rc %d (ran %v)\n%s", tag, rc, ok, xlOutput(serial, tag))
			}
		}
		if !strings.Contains(serial, "listed=no") {
			t.Errorf("FAIL the saved domain was still listed after xl save")
		}
		res := resumes(c)
		if len(res) != 2 || res[1][0] != "new-domain" {
			t.Fatalf("FAIL after xl restore the guest's resumes were %v, want a second one finding new-domain:\n%s", res, c.Text())
		}
		a := afterLine(serial, "restore")
		switch {
		case a == nil:
			t.Errorf("FAIL no after-restore line")
		case !running(a[3]) || a[4] != "2 new-domain" || a[2] != res[1][2]:
			t.Errorf("FAIL after xl restore: domid %s (guest says %s), state %q, data/counter/resumed %q", a[2], res[1][2], a[3], a[4])
		case !strings.Contains(serial, "feature-suspend=1"):
			t.Errorf("FAIL control/feature-suspend not advertised again in the restored domain")
		default:
			t.Logf("PASS xl save in %v, xl restore in %v: the guest runs as domain %s (was %s; state %s), found new-domain, "+
				"wrote data/counter/resumed=%q through the reconnected xenstore and advertised feature-suspend again",
				took("save"), took("restore"), a[2], res[0][2], a[3], a[4])
		}
		if m := regexp.MustCompile(`GOZEN-SUS after-restore-ticks state=(\S*)\n`).FindStringSubmatch(serial); m == nil || !running(m[1]) {
			t.Errorf("FAIL xl list does not show the restored domain running: %v", m)
		}
	})

	t.Run("ticks", func(t *testing.T) {
		seqs, nows := ticks(c)
		if len(seqs) < 50 {
			t.Fatalf("FAIL only %d ticks:\n%s", len(seqs), c.Text())
		}
		var bad []string
		var maxGap time.Duration
		for i := range seqs {
			if seqs[i] != int64(i+1) {
				bad = append(bad, fmt.Sprintf("line %d has seq=%d", i+1, seqs[i]))
			}
			if i > 0 {
				if nows[i] < nows[i-1] {
					bad = append(bad, fmt.Sprintf("time went back %v at seq=%d", time.Duration(nows[i-1]-nows[i]), seqs[i]))
				}
				maxGap = max(maxGap, time.Duration(nows[i]-nows[i-1]))
			}
		}
		if len(bad) > 0 {
			t.Errorf("FAIL the ticks are not 1..%d in order, once each, time going forward: %s", len(seqs), strings.Join(bad[:min(len(bad), 10)], "; "))
		} else {
			t.Logf("PASS %d ticks numbered 1..%d, none lost or repeated, time.Now never went back across checkpoint, save and restore (longest gap, the restore's downtime: %v)",
				len(seqs), len(seqs), maxGap.Round(time.Millisecond))
		}
		last := resumes(c)
		if len(last) == 2 {
			after, _ := strconv.Atoi(last[1][1])
			if n := int64(len(seqs)) - int64(after); n < 20 {
				t.Errorf("FAIL only %d ticks after the restore", n)
			}
		}
	})

	t.Run("clock", func(t *testing.T) {
		want := []string{"before", "checkpoint", "restore"}
		if len(clocks) != len(want) {
			t.Fatalf("FAIL %d clock answers, want %d: %q", len(clocks), len(want), clocks)
		}
		for i, l := range clocks {
			m := susClockRE.FindStringSubmatch(l)
			if m == nil || m[1] != want[i] || m[4] != want[i] {
				t.Errorf("FAIL clock %s: no answer from the guest: %q", want[i], l)
				continue
			}
			t0, _ := strconv.ParseInt(m[2], 10, 64)
			t1, _ := strconv.ParseInt(m[3], 10, 64)
			g, _ := strconv.ParseInt(m[5], 10, 64)
			lo, hi := time.Duration(g-t0), time.Duration(t1-g)
			if lo < -clockTolerance || hi < -clockTolerance {
				t.Errorf("FAIL clock %s: the guest's time.Now is %v after dom0's before the question and %v before dom0's after the answer (tolerance %v)",
					want[i], lo, hi, clockTolerance)
			} else {
				t.Logf("PASS clock %s: guest time.Now within dom0's bracket of %v (%v after its start, %v before its end; tolerance %v)",
					want[i], time.Duration(t1-t0).Round(time.Millisecond), lo.Round(time.Microsecond), hi.Round(time.Microsecond), clockTolerance)
			}
		}
	})

	t.Run("refused", func(t *testing.T) {
		rc, ok := rcs["refuse"]
		out := xlOutput(serial, "refuse")
		switch {
		case !ok:
			t.Fatalf("FAIL the refused xl save never ended")
		case !r.Has("control: suspend refused, the domain keeps running") || !r.Has("refuses to suspend"):
			t.Errorf("FAIL the guest did not report the refusal:\n%s", r.Text())
		case rc == 0 || !strings.Contains(out, "guest did not suspend, timed out") || !strings.Contains(out, "Failed to save domain, resuming domain"):
			t.Errorf("FAIL xl save of the refusing domain: rc %d, output:\n%s", rc, out)
		case took("refuse") < 55*time.Second:
			t.Errorf("FAIL xl save gave up after %v, before libxl's 60 s wait", took("refuse"))
		default:
			l, _ := r.Find("suspend refused")
			t.Logf("PASS a refused suspend: the guest said %q; xl save exited %d after %v: %q, %q",
				l.Text, rc, took("refuse"), "guest did not suspend, timed out", "Failed to save domain, resuming domain")
		}
		m := refuseAfter
		if m == nil {
			t.Fatal("FAIL no refuse-after line")
		}
		a, _ := strconv.Atoi(m[2])
		b, _ := strconv.Atoi(m[3])
		if !running(m[1]) || b <= a {
			t.Errorf("FAIL after the refused save the domain is %q and ticked %d -> %d", m[1], a, b)
		} else {
			t.Logf("PASS after the refused save the domain runs (state %s) and counts (%d -> %d ticks in 1 s)", m[1], a, b)
		}
		seqs, _ := ticks(r)
		for i, s := range seqs {
			if s != int64(i+1) {
				t.Errorf("FAIL the refusing guest's ticks skip at line %d (seq=%d)", i+1, s)
				break
			}
		}
	})

	for _, g := range []*rig.GuestResult{c, r} {
		if !g.Has("COUNTER done") {
			t.Errorf("FAIL %s did not end with xl shutdown:\n%s", g.Name, g.Text())
		}
	}
}

// resumes returns the guest's resume lines: kind, seq and domid of each.
func resumes(g *rig.GuestResult) [][3]string {
	var r [][3]string
	for _, l := range g.Lines {
		if m := resumedRE.FindStringSubmatch(l.Text); m != nil {
			r = append(r, [3]string{m[1], m[2], m[3]})
		}
	}
	return r
}

// ticks returns the guest's tick numbers and times, in console order.
func ticks(g *rig.GuestResult) (seqs, nows []int64) {
	for _, l := range g.Lines {
		if m := tickRE.FindStringSubmatch(strings.TrimSpace(l.Text)); m != nil {
			s, _ := strconv.ParseInt(m[1], 10, 64)
			n, _ := strconv.ParseInt(m[2], 10, 64)
			seqs, nows = append(seqs, s), append(nows, n)
		}
	}
	return seqs, nows
}

// afterLine returns the fields of the after-checkpoint or after-restore
// line: kind, domid, state, data/counter/resumed.
func afterLine(serial, which string) []string {
	for _, l := range strings.Split(serial, "\n") {
		if _, rest, ok := strings.Cut(l, " "); ok {
			if m := susAfterRE.FindStringSubmatch(rest); m != nil && m[1] == which {
				return m
			}
		}
	}
	return nil
}

// xlOutput returns what the xl command run as tag printed.
func xlOutput(serial, tag string) string {
	var b strings.Builder
	for _, l := range strings.Split(serial, "\n") {
		if _, rest, ok := strings.Cut(l, "GOZEN-SUS xl-"+tag+"| "); ok {
			b.WriteString(rest)
			b.WriteByte('\n')
		}
	}
	return b.String()
}

// running reports whether an xl list state column (rbpscd, "-" for each
// flag unset) shows a live domain: running, blocked or runnable, not
// paused, shut down, crashed or dying.
func running(state string) bool {
	return len(state) == 6 && !strings.ContainsAny(state, "pscd")
}
