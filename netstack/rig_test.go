package netstack_test

import (
	"context"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/gozen-dev/gozen/netstack"
	"github.com/gozen-dev/gozen/netstack/pipenic"
)

// rig is two stacks over a pipenic pair: a at 10.0.0.1/24, b at
// 10.0.0.2/24.
type rig struct {
	a, b       *netstack.Stack
	nicA, nicB *pipenic.NIC
}

var (
	ipA = netip.MustParseAddr("10.0.0.1")
	ipB = netip.MustParseAddr("10.0.0.2")
)

// offload variants of the rig.
var (
	offNone = netstack.Offloads{}
	offCsum = netstack.Offloads{TXChecksum: true}
	offGSO  = netstack.Offloads{TXChecksum: true, GSOTCPv4: true, GSOTCPv6: true}
)

func newRig(t testing.TB, off netstack.Offloads) *rig {
	t.Helper()
	nicA, nicB := pipenic.Pair(1500, off)
	a, err := netstack.New(nicA, netstack.Config{Addr: netip.PrefixFrom(ipA, 24), IPv6: true})
	if err != nil {
		t.Fatal(err)
	}
	b, err := netstack.New(nicB, netstack.Config{Addr: netip.PrefixFrom(ipB, 24), Gateway: ipA, DNS: []netip.Addr{ipA}, IPv6: true})
	if err != nil {
		a.Close()
		t.Fatal(err)
	}
	r := &rig{a: a, b: b, nicA: nicA, nicB: nicB}
	t.Cleanup(r.close)
	return r
}

func (r *rig) close() {
	r.a.Close()
	r.b.Close()
	r.nicA.Close()
	r.nicB.Close()
}

func tcpAddr(a netip.Addr, port int) *net.TCPAddr {
	return &net.TCPAddr{IP: net.IP(a.AsSlice()), Port: port}
}

func udpAddr(a netip.Addr, port int) *net.UDPAddr {
	return &net.UDPAddr{IP: net.IP(a.AsSlice()), Port: port}
}

// listen opens a TCP listener on st as net.Listen("tcp", ":port") would.
func listen(t testing.TB, st *netstack.Stack, port int) net.Listener {
	t.Helper()
	c, err := st.Socket(context.Background(), "tcp", syscall.AF_INET6, syscall.SOCK_STREAM, &net.TCPAddr{Port: port}, nil)
	if err != nil {
		t.Fatal(err)
	}
	l, ok := c.(net.Listener)
	if !ok {
		t.Fatalf("Socket listen returned %T, want net.Listener", c)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// dial connects from st to addr as net.Dial("tcp", addr) would.
func dial(t testing.TB, st *netstack.Stack, addr *net.TCPAddr) net.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	fam := syscall.AF_INET
	if addr.IP.To4() == nil {
		fam = syscall.AF_INET6
	}
	c, err := st.Socket(ctx, "tcp", fam, syscall.SOCK_STREAM, nil, addr)
	if err != nil {
		t.Fatal(err)
	}
	conn, ok := c.(net.Conn)
	if !ok {
		t.Fatalf("Socket dial returned %T, want net.Conn", c)
	}
	return conn
}
