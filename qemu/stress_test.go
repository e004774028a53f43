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

// stressDuration is how long TestTierBStress runs its loops: $GOZEN_STRESS
// (a Go duration; `make soak` sets 30m), 2 minutes by default.
func stressDuration(t *testing.T) time.Duration {
	v := os.Getenv("GOZEN_STRESS")
	if v == "" {
		return 2 * time.Minute
	}
	d, err := time.ParseDuration(v)
	if err != nil || d <= 0 {
		t.Fatalf("GOZEN_STRESS=%q: want a positive duration such as 30m", v)
	}
	return d
}

var (
	roundEndRE = regexp.MustCompile(`^GOZEN-GUEST-END (vg[ab]|v4v[sc]|st)(\d+) reason=(\S+)`)
	stressRE   = regexp.MustCompile(`STRESS PASS secs=(\d+) timers=(\d+) events=(\d+) copies=(\d+) chans=(\d+) allocs=(\d+)`)
)

// TestTierBStress is the inter-domain stress of the triple-fault hunt (and,
// with GOZEN_STRESS=30m, `make soak`): on the Argo hypervisor, for the set
// time and all at once, pairs of Gozen domUs run vchan sessions (64 KiB
// rings both ways checksummed, in-page rings, one-way bulk), pairs run
// V4V ping-pongs and ring floods, and single domains run the event stress
// (timers, loopback notifications, grant copies, channels, GC), each loop
// creating fresh domains round after round. Any crash, CPU fault report or
// triple fault stops the run at once (rig.ErrGuestFault) with the guest's
// last lines and Xen's dump; the test reports rounds, throughput and
// leftovers.
func TestTierBStress(t *testing.T) {
	vchanElf := buildGuest(t, "./qemu/guests/vchansession")
	v4vElf := buildGuest(t, "./qemu/guests/v4vsession")
	stressElf := buildGuest(t, "./qemu/guests/stress")
	xen, err := rig.ArgoHypervisor()
	if err != nil {
		t.Fatalf("FAIL %v", err)
	}
	dur := stressDuration(t)
	// GOZEN_STRESS_LOOPS picks loops (default all): vchan v4v stress
	loops := "vchan v4v stress"
	if l := os.Getenv("GOZEN_STRESS_LOOPS"); l != "" {
		loops = l
	}
	secs := int(dur.Seconds())
	srvArgs := "-listen -peer xs -port s1 -read 64K -write 64K -send 16M -recv 16M -seed 11 -rseed 12 -close first" +
		" -- -port s2 -read 1K -write 2K -send 1M -recv 1M -seed 13 -rseed 14 -close eof" +
		" -- -port s3 -read 64K -write 64K -send 16M -recv 0 -nocheck -close first"
	cliArgs := "-dial -peer @S@ -port s1 -send 16M -recv 16M -seed 12 -rseed 11 -close eof" +
		" -- -port s2 -send 1M -recv 1M -seed 14 -rseed 13 -close first" +
		" -- -port s3 -send 0 -recv 16M -nocheck -close eof"
	guests := []rig.Guest{
		{Name: "vga", ELF: vchanElf, Memory: 64, Cmdline: srvArgs},
		{Name: "vgb", ELF: vchanElf, Memory: 64, Cmdline: cliArgs},
		{Name: "v4vs", ELF: v4vElf, Memory: 64, Cmdline: "-serve"},
		{Name: "v4vc", ELF: v4vElf, Memory: 64, Cmdline: "@PING@"},
		{Name: "st", ELF: stressElf, Memory: 64, Cmdline: "-for 60s"},
	}
	// GOZEN_STRESS_XL adds xl config lines to every guest (experiments:
	// tsc_mode, for instance)
	if a := os.Getenv("GOZEN_STRESS_ARGS"); a != "" {
		for i := range guests {
			guests[i].Cmdline = a + " " + guests[i].Cmdline
		}
	}
	xenArgs := rig.ArgoXenArgs
	if pin := os.Getenv("GOZEN_STRESS_PIN"); pin != "" {
		// dom0 on pCPU 0; servers on pCPU 1, clients on pCPU 2, or
		// (GOZEN_STRESS_PIN=shared) every domU on pCPU 1
		cpus := []string{"1", "2", "1", "2", "1"}
		if pin == "shared" {
			cpus = []string{"1", "1", "1", "1", "1"}
		}
		for i, c := range cpus {
			guests[i].Config += "cpus = \"" + c + "\"\n"
		}
		xenArgs += " dom0_vcpus_pin"
	}
	if x := os.Getenv("GOZEN_STRESS_XL"); x != "" {
		for i := range guests {
			guests[i].Config += strings.ReplaceAll(x, ";", "\n") + "\n"
		}
	}
	script := rig.Script(fmt.Sprintf(`
up() { cut -d. -f1 /proc/uptime; }
end=$(( $(up) + %d ))
loops="%s"
clone() { sed "s/^name = .*/name = \"$2\"/" /gozen/$1.cfg > /tmp/$2.cfg; }
waitlog() { i=0; until grep -q "$2" /var/log/xen/console/guest-$1.log 2>/dev/null || [ $i -ge 900 ]; do sleep 0.1; i=$((i+1)); done; }
vchan_loop() {
	r=0
	while [ $(up) -lt $end ]; do
		r=$((r+1)); clone vga vga$r; clone vgb vgb$r
		gozen-guest vga$r /tmp/vga$r.cfg 300 & sp=$!
		waitlog vga$r 'vchan-echo: ready'
		s=$(xl domid vga$r); sed -i "s/@S@/$s/" /tmp/vgb$r.cfg
		gozen-guest vgb$r /tmp/vgb$r.cfg 300 & cp=$!
		i=0; until c=$(xl domid vgb$r 2>/dev/null) || [ $i -ge 900 ]; do sleep 0.1; i=$((i+1)); done
		xenstore-write /local/domain/$s/data/vchan-peer $c
		wait $cp; wait $sp
	done
	echo "GOZEN-STRESS-LOOP vchan rounds=$r"
}
v4v_loop() {
	r=0
	while [ $(up) -lt $end ]; do
		r=$((r+1)); clone v4vs v4vs$r; clone v4vc v4vc$r
		gozen-guest v4vs$r /tmp/v4vs$r.cfg 300 & sp=$!
		waitlog v4vs$r 'v4v-ping: serving'
		id=$(xl domid v4vs$r)
		sed -i "s/@PING@/-ping $id -count 2000 -flood 500 -quit/" /tmp/v4vc$r.cfg
		gozen-guest v4vc$r /tmp/v4vc$r.cfg 300
		wait $sp
	done
	echo "GOZEN-STRESS-LOOP v4v rounds=$r"
}
stress_loop() {
	r=0
	while [ $(up) -lt $end ]; do
		r=$((r+1)); clone st st$r
		left=$(( end - $(up) )); [ $left -gt 60 ] && left=60; [ $left -lt 5 ] && left=5
		sed -i "s/-for 60s/-for ${left}s/" /tmp/st$r.cfg
		gozen-guest st$r /tmp/st$r.cfg $((left + 120))
	done
	echo "GOZEN-STRESS-LOOP stress rounds=$r"
}
a=; b=; c=
case " $loops " in *" vchan "*) vchan_loop & a=$! ;; esac
case " $loops " in *" v4v "*) v4v_loop & b=$! ;; esac
case " $loops " in *" stress "*) stress_loop & c=$! ;; esac
# the toolstack watching, as the vchan test's CPU monitor does
( while [ $(up) -lt $end ]; do xl list >/dev/null || echo "GOZEN-STRESS-XL-LIST-FAILED rc=$?"; sleep 2; done ) & m=$!
for p in $a $b $c $m; do wait $p; done
echo "GOZEN-STRESS-DOMAINS-LEFT $(xl list | awk 'NR>2' | wc -l)"
dmesg | grep -i 'segfault\|general protection' | sed 's/^/GOZEN-STRESS-DMESG /'
`, secs, loops))
	run, err := rig.BootDomUs(context.Background(), guests, script,
		rig.Options{Hypervisor: xen, XenArgs: xenArgs, Timeout: dur + 10*time.Minute, Stream: liveLog(t)})
	saveSerial(t, run)
	if err != nil {
		t.Fatalf("FAIL stress run: %v", err)
	}

	rounds := map[string]int{}
	bad := map[string][]string{}
	for _, l := range run.Serial {
		m := roundEndRE.FindStringSubmatch(l.Text)
		if m == nil {
			continue
		}
		rounds[m[1]]++
		if m[3] != "0" {
			bad[m[1]] = append(bad[m[1]], m[1]+m[2]+" ended with reason "+m[3])
		}
	}
	var vchanMB, vchanSecs float64
	var v4vPass, stressPass int
	var timers, events, copies uint64
	for name, g := range run.Guests {
		switch {
		case strings.HasPrefix(name, "vga") || strings.HasPrefix(name, "vgb"):
			if !g.Has("VCHAN DONE pass=3 fail=0") {
				bad["vchan"] = append(bad["vchan"], name+" did not pass its 3 sessions:\n"+g.Text())
			}
			for _, l := range g.Lines {
				f := fieldsOf(l.Text)
				if f["recv"] != "" && f["secs"] != "" {
					n, _ := strconv.ParseFloat(f["recv"], 64)
					s, _ := strconv.ParseFloat(f["secs"], 64)
					vchanMB += n / 1e6
					vchanSecs += s
				}
				if f["teardown"] != "" || strings.Contains(l.Text, "teardown") {
					for _, k := range []string{"grants", "shares", "mappings", "ports"} {
						if v, ok := f[k]; ok && v != "0" {
							bad["vchan"] = append(bad["vchan"], name+" left "+k+"="+v)
						}
					}
				}
			}
		case strings.HasPrefix(name, "v4vc"):
			if g.Has("v4v-ping: FAIL") || !g.Has("v4v-ping: PASS flood") {
				bad["v4v"] = append(bad["v4v"], name+":\n"+g.Text())
			} else {
				v4vPass++
			}
		case strings.HasPrefix(name, "st"):
			if !g.Has("STRESS DONE pass=1 fail=0") {
				bad["stress"] = append(bad["stress"], name+":\n"+g.Text())
				continue
			}
			stressPass++
			for _, l := range g.Lines {
				if m := stressRE.FindStringSubmatch(l.Text); m != nil {
					n, _ := strconv.ParseUint(m[2], 10, 64)
					timers += n
					n, _ = strconv.ParseUint(m[3], 10, 64)
					events += n
					n, _ = strconv.ParseUint(m[4], 10, 64)
					copies += n
				}
			}
		}
	}
	for _, l := range run.Serial {
		switch {
		case strings.HasPrefix(l.Text, "GOZEN-STRESS-DMESG"), strings.HasPrefix(l.Text, "GOZEN-STRESS-XL-LIST-FAILED"),
			strings.Contains(l.Text, "Segmentation fault"):
			bad["dom0"] = append(bad["dom0"], l.Text)
		case strings.HasPrefix(l.Text, "GOZEN-STRESS-DOMAINS-LEFT") && !strings.HasSuffix(l.Text, " 0"):
			bad["dom0"] = append(bad["dom0"], "domains left running: "+l.Text)
		}
	}
	for k, v := range bad {
		t.Errorf("FAIL %s: %s", k, strings.Join(v, "\n"))
	}
	if (strings.Contains(loops, "vchan") && rounds["vgb"] == 0) || (strings.Contains(loops, "v4v") && rounds["v4vc"] == 0) ||
		(strings.Contains(loops, "stress") && rounds["st"] == 0) {
		t.Errorf("FAIL a loop never completed a round: %v", rounds)
	}
	rate := 0.0
	if vchanSecs > 0 {
		rate = vchanMB / vchanSecs
	}
	if !t.Failed() {
		t.Logf("PASS stress for %v with zero faults: vchan %d rounds (%.0f MB received, %.1f MB/s per stream), "+
			"V4V %d rounds, event stress %d rounds (%d timers, %d notification round trips, %d grant copies); leftovers none",
			dur, rounds["vgb"], vchanMB, rate, v4vPass, stressPass, timers, events, copies)
	}
}

// fieldsOf splits "KEY key=value ..." lines into their key=value fields.
func fieldsOf(s string) map[string]string {
	f := map[string]string{}
	for _, w := range strings.Fields(s) {
		if k, v, ok := strings.Cut(w, "="); ok {
			f[k] = v
		}
	}
	return f
}

// TestTierAStress runs the event stress (timers, loopback notifications,
// grant copies, channels, GC) in a Gozen PVH dom0 for $GOZEN_STRESS_A
// (default 30s): a hang, a lost wake-up or a fault fails it.
func TestTierAStress(t *testing.T) {
	elf := buildGuest(t, "./qemu/guests/stress")
	dur := 30 * time.Second
	if v := os.Getenv("GOZEN_STRESS_A"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("GOZEN_STRESS_A=%q: %v", v, err)
		}
		dur = d
	}
	args := fmt.Sprintf("-for %v -every 5s", dur)
	if o := os.Getenv("GOZEN_STRESS_ONLY"); o != "" {
		args += " -only " + o
	}
	g, err := rig.BootDom0(context.Background(), elf, args, 256,
		rig.Options{Timeout: dur + 2*time.Minute, Stream: liveLog(t)})
	if err != nil {
		t.Fatalf("FAIL stress in dom0: %v\n%s", err, g.Text())
	}
	if !g.Has("STRESS DONE pass=1 fail=0") || g.Reason != rig.ReasonPoweroff {
		t.Fatalf("FAIL stress in dom0 ended with %s:\n%s", g.Reason, g.Text())
	}
	l, _ := g.Find("STRESS PASS")
	t.Logf("PASS event stress in dom0 for %v: %s", dur, l.Text)
}
