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
id=$(wait-for domid xs 30)
D=/local/domain/$id/data
wait-for xs $D/ready watch 90; xenstore-write $D/w/x hello; echo "GOZEN-XS dom0 wrote $D/w/x"
wait-for xs $D/ready tx 90; xenstore-write $D/tx/x dom0; xenstore-write $D/tx/dom0done 1; echo "GOZEN-XS dom0 wrote $D/tx/x"
wait $p
`

// xstestCases are the cases qemu/guests/xstest runs.
var xstestCases = []string{"round-trips", "watch", "transaction", "permissions", "concurrent", "latency", "anomalies"}

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
			checkWaits(t, run)
			if !strings.Contains(run.SerialText(), "ready at") || !strings.Contains(run.SerialText(), "with "+store) {
				t.Errorf("FAIL dom0 did not run %s", store)
			}
			g := run.Guests["xs"]
			if g == nil {
				t.Fatalf("FAIL xstest never started\n%s", run.SerialText())
			}
			checkCases(t, g, "xstest:", xstestCases)
			if l, ok := g.Find("BENCH xenstore READ"); ok {
				t.Logf("BENCH %s: %s", store, strings.TrimPrefix(l.Text, "xstest: BENCH "))
			} else {
				t.Errorf("FAIL no latency measurement")
			}
		})
	}
}
