package qemu

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/gozen-dev/gozen/qemu/rig"
)

// xstestScript runs qemu/guests/xstest and plays dom0's part: it makes a
// node private to dom0 first, then answers the guest's data/ready signals
// with xenstore-write (see the guest's doc comment).
const xstestScript = `
xenstore-write /gozen-private secret && xenstore-chmod /gozen-private n0
gozen-guest xs /gozen/xs.cfg 170 &
p=$!
id=; i=0; while [ -z "$id" ] && [ $i -lt 300 ]; do id=$(xl domid xs 2>/dev/null); [ -z "$id" ] && sleep 0.1; i=$((i+1)); done
D=/local/domain/$id/data
waitready() { i=0; until [ "$(xenstore-read $D/ready 2>/dev/null)" = "$1" ] || [ $i -ge 900 ]; do sleep 0.1; i=$((i+1)); done; }
waitready watch; xenstore-write $D/w/x hello; echo "GOZEN-XS dom0 wrote $D/w/x"
waitready tx; xenstore-write $D/tx/x dom0; xenstore-write $D/tx/dom0done 1; echo "GOZEN-XS dom0 wrote $D/tx/x"
wait $p
`

// TestTierBXenstore runs the xenstore client against both stores Debian
// ships: round trips, a watch fired by dom0, a transaction that conflicts
// with dom0 and is retried, permission errors, 1,000 concurrent requests,
// and READ latency.
func TestTierBXenstore(t *testing.T) {
	elf := buildGuest(t, "./qemu/guests/xstest")
	for _, store := range []string{"xenstored", "oxenstored"} {
		t.Run(store, func(t *testing.T) {
			guests := []rig.Guest{{Name: "xs", ELF: elf, Timeout: 3 * time.Minute}}
			run, err := rig.BootDomUs(context.Background(), guests, xstestScript, rig.Options{Store: store, Timeout: 6 * time.Minute})
			saveSerial(t, run)
			if err != nil {
				t.Fatalf("FAIL tier B run with %s: %v\n%s", store, err, run.SerialText())
			}
			if !strings.Contains(run.SerialText(), "ready at") || !strings.Contains(run.SerialText(), "with "+store) {
				t.Errorf("FAIL dom0 did not run %s", store)
			}
			g := run.Guests["xs"]
			if g == nil {
				t.Fatalf("FAIL xstest never started\n%s", run.SerialText())
			}
			checkPassLines(t, g, "xstest: ", []string{"round trips", "watch", "transaction", "permissions", "concurrent"})
			if l, ok := g.Find("BENCH xenstore READ"); ok {
				t.Logf("BENCH %s: %s", store, strings.TrimPrefix(l.Text, "xstest: BENCH "))
			} else {
				t.Errorf("FAIL no latency measurement")
			}
			if !g.Has("xstest: done, 0 failed") || g.Reason != rig.ReasonPoweroff {
				t.Errorf("FAIL xstest did not finish cleanly (ended %s):\n%s", g.Reason, g.Text())
			}
		})
	}
}

// checkPassLines logs the guest's PASS line of each case and fails the
// test for a FAIL line or a missing case.
func checkPassLines(t *testing.T, g *rig.GuestResult, prefix string, cases []string) {
	t.Helper()
	for _, l := range g.Lines {
		if i := strings.Index(l.Text, prefix+"FAIL"); i >= 0 {
			t.Errorf("%s", l.Text[i+len(prefix):])
		}
	}
	for _, c := range cases {
		if l, ok := g.Find(prefix + "PASS " + c); ok {
			t.Log(l.Text[strings.Index(l.Text, "PASS"):])
		} else {
			t.Errorf("FAIL %s: no PASS line from the guest:\n%s", c, g.Text())
		}
	}
}
