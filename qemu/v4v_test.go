package qemu

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/gozen-dev/gozen/qemu/rig"
)

// TestTierBV4V runs apps/v4v-ping between two Gozen PVH domUs on a Xen
// built with Argo: 10,000 checksummed ping-pongs of 1 B to 8 KiB, a flood
// that fills a ring and recovers through the space notification, the
// no-ring error, and a throughput benchmark.
func TestTierBV4V(t *testing.T) {
	elf := buildGuest(t, "v4v-ping")
	xen, err := rig.ArgoHypervisor()
	if err != nil {
		t.Fatalf("FAIL %v", err)
	}
	guests := []rig.Guest{
		{Name: "v4vserver", ELF: elf, Cmdline: "-serve", Memory: 64},
		{Name: "v4vclient", ELF: elf, Memory: 64},
	}
	script := rig.Script(`
gozen-guest v4vserver /gozen/v4vserver.cfg 400 &
sp=$!
L=/var/log/xen/console/guest-v4vserver.log
i=0; until grep -q 'v4v-ping: serving' $L 2>/dev/null || [ $i -ge 600 ]; do sleep 0.1; i=$((i+1)); done
id=$(xl domid v4vserver)
echo "GOZEN-V4V-SERVER-DOMID $id"
echo "extra = \"-ping $id -count 10000 -flood 2000 -bench -quit\"" >> /gozen/v4vclient.cfg
gozen-guest v4vclient /gozen/v4vclient.cfg 400
wait $sp
`)
	run, err := rig.BootDomUs(context.Background(), guests, script,
		rig.Options{Hypervisor: xen, XenArgs: rig.ArgoXenArgs, Timeout: 10 * time.Minute})
	saveSerial(t, run)
	if err != nil {
		t.Fatalf("FAIL rig run: %v", err)
	}
	c, s := run.Guests["v4vclient"], run.Guests["v4vserver"]
	if c == nil || s == nil {
		t.Fatalf("FAIL guests missing: client %v server %v", c != nil, s != nil)
	}
	for _, want := range []string{"PASS no-ring", "PASS 10000 ping-pongs", "PASS flood of 2000 messages", "BENCH stream size=8192"} {
		if l, ok := c.Find(want); ok {
			t.Log(l.Text)
		} else {
			t.Errorf("FAIL client output lacks %q:\n%s", want, c.Text())
		}
	}
	for _, l := range c.Lines {
		if strings.Contains(l.Text, "BENCH") || strings.Contains(l.Text, "rtt") {
			t.Log(l.Text)
		}
		if strings.Contains(l.Text, "FAIL") {
			t.Error(l.Text)
		}
	}
	if c.Reason != rig.ReasonPoweroff {
		t.Errorf("FAIL client ended with %s", c.Reason)
	}
	if !s.Has("server quitting") || s.Reason != rig.ReasonPoweroff {
		t.Errorf("FAIL server did not quit cleanly (%s):\n%s", s.Reason, s.Text())
	}
}
