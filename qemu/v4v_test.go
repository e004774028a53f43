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

// TestTierBV4V runs qemu/guests/v4vsession between two Gozen PVH domUs on a Xen
// built with Argo: 10,000 checksummed ping-pongs of 1 B to 8 KiB, a flood
// that fills a ring and recovers through the space notification, the
// no-ring error, and a throughput benchmark.
func TestTierBV4V(t *testing.T) {
	elf := buildGuest(t, "./qemu/guests/v4vsession")
	vchanElf := buildGuest(t, "./qemu/guests/vchansession")
	xen, err := rig.ArgoHypervisor()
	if err != nil {
		t.Fatalf("FAIL %v", err)
	}
	guests := []rig.Guest{
		{Name: "v4vserver", ELF: elf, Cmdline: "-serve", Memory: 64},
		{Name: "v4vclient", ELF: elf, Memory: 64},
		// vchan between two Gozen domUs in the same run, for comparison
		{Name: "vga", ELF: vchanElf, Memory: 64, Cmdline: "-listen -peer xs -port cmp -read 64K -write 64K -send 32M -recv 0 -nocheck -close first"},
		{Name: "vgb", ELF: vchanElf, Memory: 64, Cmdline: "-dial -peer @S@ -port cmp -send 0 -recv 32M -nocheck -close eof"},
	}
	script := rig.Script(`
gozen-guest v4vserver /gozen/v4vserver.cfg 400 &
sp=$!
wait-for log v4vserver 'v4v-ping: serving' 60
id=$(wait-for domid v4vserver 10)
echo "GOZEN-V4V-SERVER-DOMID $id"
echo "extra = \"-ping $id -count 10000 -flood 2000 -bench -quit\"" >> /gozen/v4vclient.cfg
gozen-guest v4vclient /gozen/v4vclient.cfg 400
wait $sp
gozen-guest vga /gozen/vga.cfg 300 &
sp=$!
wait-for log vga 'vchan-echo: ready' 90
s=$(wait-for domid vga 10)
sed -i "s/@S@/$s/" /gozen/vgb.cfg
gozen-guest vgb /gozen/vgb.cfg 300 &
cp=$!
c=$(wait-for domid vgb 90)
xenstore-write /local/domain/$s/data/vchan-peer $c
wait $cp
wait $sp
`)
	run, err := rig.BootDomUs(context.Background(), guests, script,
		rig.Options{Hypervisor: xen, XenArgs: rig.ArgoXenArgs, Timeout: 10 * time.Minute})
	saveSerial(t, run)
	if err != nil {
		t.Fatalf("FAIL rig run: %v", err)
	}
	checkWaits(t, run)
	c, s := run.Guests["v4vclient"], run.Guests["v4vserver"]
	if c == nil || s == nil {
		t.Fatalf("FAIL guests missing: client %v server %v", c != nil, s != nil)
	}
	checkCases(t, c, v4vTag, v4vClientCases)
	for _, want := range []string{"PASS pingpong 10000 ping-pongs", "PASS flood of 2000 messages", "BENCH stream size=8192"} {
		if _, ok := c.Find(want); !ok {
			t.Errorf("FAIL client output lacks %q:\n%s", want, c.Text())
		}
	}
	for _, l := range c.Lines {
		if strings.Contains(l.Text, "BENCH") || strings.Contains(l.Text, "rtt") {
			t.Log(l.Text)
		}
	}
	if !s.Has("server quitting") || s.Reason != rig.ReasonPoweroff {
		t.Errorf("FAIL server did not quit cleanly (%s):\n%s", s.Reason, s.Text())
	}

	// V4V beside vchan between two Gozen domUs, same rig run.
	var v4vMBps float64
	for _, l := range c.Lines {
		if m := v4vStreamRE.FindStringSubmatch(l.Text); m != nil {
			v4vMBps, _ = strconv.ParseFloat(m[1], 64)
		}
	}
	for _, name := range []string{"vga", "vgb"} {
		if g := run.Guests[name]; g == nil {
			t.Errorf("FAIL vchan guest %s never started", name)
		} else {
			for _, p := range caseProblems("VCHAN", sessionCases(1), guestLines(g), g.Reason) {
				t.Errorf("FAIL vchan guest %s: %s", name, p)
			}
		}
	}
	vc := run.Guests["vgb"]
	var vchanMBps float64
	if vc != nil {
		if f := firstWith(guestFields(vc, 1, "recv"), "recv"); f != nil {
			vchanMBps, _ = strconv.ParseFloat(f["MBps"], 64)
		}
	}
	if v4vMBps == 0 || vchanMBps == 0 {
		t.Errorf("FAIL no throughput to compare: V4V %v MB/s, vchan %v MB/s", v4vMBps, vchanMBps)
		return
	}
	t.Logf("PASS same rig run, two Gozen domUs: V4V 8 KiB messages %.1f MB/s, vchan 64 KiB rings %.1f MB/s, V4V/vchan = %.2f",
		v4vMBps, vchanMBps, v4vMBps/vchanMBps)
}

// v4vTag starts v4vsession's lines; v4vClientCases are the cases its
// client runs with -count, -flood and -bench.
const v4vTag = "v4v-ping:"

var v4vClientCases = []string{"no-ring", "pingpong", "flood", "bench"}

var v4vStreamRE = regexp.MustCompile(`BENCH stream size=8192 \S+ msgs/s ([0-9.]+) MB/s`)
