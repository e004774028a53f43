package qemu

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gozen-dev/gozen/internal/teststream"
	"github.com/gozen-dev/gozen/qemu/rig"
)

// examplesScript runs the vchan and V4V examples as their xl configs
// describe: dom0's libxenvchan client (qemu/vchanpeer) sends the test
// stream to apps/vchan-echo and checks what comes back, then xl shutdown
// ends it; apps/v4v-ping pings a second apps/v4v-ping, then xl shutdown
// ends the server.
const examplesScript = `
gozen-guest echo /gozen/echo.cfg 150 &
p=$!
wait-for log echo 'vchan-echo: waiting for domain 0' 60
g=$(wait-for domid echo 10)
echo "GOZEN-EX-ECHO-BEGIN"
/gozen/vchanpeer client $g /local/domain/$g/data/vchan/0/echo -send 1M -recv 1M -seed 5 -rseed 5 -timeout 60
echo "GOZEN-EX-ECHO-END rc=$?"
wait-for log echo 'vchan-echo: waiting for domain 0' 30 2
xl shutdown echo
wait $p

gozen-guest pong /gozen/pong.cfg 150 &
p=$!
wait-for log pong 'v4v-ping: answering pings' 60
s=$(wait-for domid pong 10)
echo "extra = \"-ping $s -count 3\"" >> /gozen/ping.cfg
gozen-guest ping /gozen/ping.cfg 60
xl shutdown pong
wait $p
`

// TestTierBExamples runs apps/vchan-echo and apps/v4v-ping as a user
// would: a libxenvchan client in dom0 gets its 1 MiB back intact and the
// server serves the next client after it; three pings come back; both
// servers power off on xl shutdown.
func TestTierBExamples(t *testing.T) {
	needGuest(t, needPeer)
	echo := buildGuest(t, "vchan-echo")
	ping := buildGuest(t, "v4v-ping")
	if _, err := rig.BuildVchanPeer(); err != nil {
		t.Fatalf("FAIL building the vchan peer: %v", err)
	}
	xen, err := rig.ArgoHypervisor()
	if err != nil {
		t.Fatalf("FAIL %v", err)
	}
	guests := []rig.Guest{
		{Name: "echo", ELF: echo, Cmdline: "-peer 0 -port echo"},
		{Name: "pong", ELF: ping, Cmdline: "-serve"},
		{Name: "ping", ELF: ping},
	}
	run, err := rig.BootDomUs(context.Background(), guests, examplesScript,
		rig.Options{Hypervisor: xen, XenArgs: rig.ArgoXenArgs, Timeout: 8 * time.Minute})
	saveSerial(t, run)
	if err != nil {
		t.Fatalf("FAIL rig run: %v", err)
	}
	checkWaits(t, run)

	t.Run("vchan-echo", func(t *testing.T) {
		g := run.Guests["echo"]
		if g == nil {
			t.Fatal("FAIL vchan-echo never started")
		}
		want := fmt.Sprintf("0x%08x", teststream.CRC(5, 1<<20))
		recv := firstWith(peerLines(run, "recv"), "recv")
		switch {
		case !strings.Contains(run.SerialText(), "GOZEN-EX-ECHO-END rc=0"):
			t.Errorf("FAIL the dom0 client failed: %v", peerLines(run))
		case recv == nil || recv["ok"] != "1" || recv["crc"] != want:
			t.Errorf("FAIL the echo differs from what dom0 sent (crc %s): %v", want, recv)
		case !g.Has("vchan-echo: echoed 1048576 bytes"):
			t.Errorf("FAIL the example did not report the echo:\n%s", g.Text())
		case g.Reason != rig.ReasonPoweroff:
			t.Errorf("FAIL xl shutdown: ended with %s:\n%s", g.Reason, g.Text())
		default:
			t.Logf("PASS dom0's libxenvchan client got its 1 MiB back (crc %s), the example listened again and powered off on xl shutdown", want)
		}
	})
	t.Run("v4v-ping", func(t *testing.T) {
		c, s := run.Guests["ping"], run.Guests["pong"]
		if c == nil || s == nil {
			t.Fatalf("FAIL guests missing: ping %v pong %v", c != nil, s != nil)
		}
		for seq := 1; seq <= 3; seq++ {
			if l, ok := c.Find(fmt.Sprintf("seq=%d time=", seq)); ok {
				t.Log(l.Text)
			} else {
				t.Errorf("FAIL ping %d did not come back:\n%s", seq, c.Text())
			}
		}
		if c.Reason != rig.ReasonPoweroff || s.Reason != rig.ReasonPoweroff {
			t.Errorf("FAIL ping ended with %s, pong with %s (after xl shutdown):\n%s", c.Reason, s.Reason, s.Text())
		}
	})
}
