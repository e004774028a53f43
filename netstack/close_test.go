package netstack_test

import (
	"runtime"
	"testing"
	"time"

	"github.com/gozen-dev/gozen/netstack"
	"github.com/gozen-dev/gozen/netstack/pipenic"
	"net/netip"
)

// TestCloseLeavesNoGoroutines checks that Close stops the receive
// goroutine, the DHCP goroutine and gVisor's workers.
func TestCloseLeavesNoGoroutines(t *testing.T) {
	before := runtime.NumGoroutine()
	nicA, nicB := pipenic.Pair(1500, offGSO)
	a, err := netstack.New(nicA, netstack.Config{Addr: netip.PrefixFrom(ipA, 24)})
	if err != nil {
		t.Fatal(err)
	}
	srv := startDHCPServer(t, a, 60, 0, 0)
	b, err := netstack.New(nicB, netstack.Config{DHCPRetransmit: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	l := listen(t, a, 7)
	go echoServer(l)
	c := dial(t, b, tcpAddr(ipA, 7))
	echoRoundTrip(t, c, 1<<20, 3)
	srv.conn.Close()
	b.Close()
	a.Close()
	nicA.Close()
	nicB.Close()
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines left over %d:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(20 * time.Millisecond)
	}
}
