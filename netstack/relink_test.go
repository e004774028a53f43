package netstack_test

import (
	"net"
	"net/netip"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gozen-dev/gozen/netstack"
	"github.com/gozen-dev/gozen/netstack/dhcp"
	"github.com/gozen-dev/gozen/netstack/pipenic"
)

// movedNIC is a NIC whose MAC a test changes, as a re-attached vif's.
type movedNIC struct {
	netstack.NIC
	mac atomic.Pointer[net.HardwareAddr]
}

func (n *movedNIC) MAC() net.HardwareAddr {
	if m := n.mac.Load(); m != nil {
		return *m
	}
	return n.NIC.MAC()
}

var newMAC = net.HardwareAddr{0x00, 0x16, 0x3e, 0xaa, 0xbb, 0xcc}

// movedRig is a static stack a and, over a movedNIC, a stack b configured
// by cfgB.
func movedRig(t *testing.T, cfgB netstack.Config, setup func(a *netstack.Stack)) (a, b *netstack.Stack, nb *movedNIC) {
	t.Helper()
	nicA, nicB := pipenic.Pair(1500, offCsum)
	a, err := netstack.New(nicA, netstack.Config{Addr: netip.PrefixFrom(ipA, 24)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(); nicA.Close(); nicB.Close() })
	if setup != nil {
		setup(a)
	}
	nb = &movedNIC{NIC: nicB}
	if b, err = netstack.New(nb, cfgB); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return a, b, nb
}

// TestLinkChangedStatic: after a MAC change and LinkChanged, the stack
// announces its address from the new MAC (a gratuitous ARP request, which
// Linux peers take; gVisor's take only the ARP request b sends to resolve
// a, its neighbours being forgotten), reaches its peer and is reached by
// it; the old connection survives.
func TestLinkChangedStatic(t *testing.T) {
	nicA, nicB := pipenic.Pair(1500, offCsum)
	var announced atomic.Int32
	nicB.SetFilter(func(f *netstack.Frame) bool {
		b := slices.Concat(f.Data...)
		if len(b) == 42 && string(b[:6]) == "\xff\xff\xff\xff\xff\xff" && b[12] == 0x08 && b[13] == 0x06 &&
			b[21] == 1 && string(b[22:28]) == string(newMAC) && string(b[28:32]) == string(ipB.AsSlice()) && string(b[38:42]) == string(ipB.AsSlice()) {
			announced.Add(1)
		}
		return true
	})
	a, err := netstack.New(nicA, netstack.Config{Addr: netip.PrefixFrom(ipA, 24)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(); nicA.Close(); nicB.Close() })
	nb := &movedNIC{NIC: nicB}
	b, err := netstack.New(nb, netstack.Config{Addr: netip.PrefixFrom(ipB, 24)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	go echoServer(listen(t, a, 7))
	go echoServer(listen(t, b, 8))
	c := dial(t, b, tcpAddr(ipA, 7)) // a learns b's first MAC
	echoRoundTrip(t, c, 1<<16, 1)
	nb.mac.Store(&newMAC)
	b.LinkChanged()
	if n := announced.Load(); n != 1 {
		t.Errorf("%d announcements from the new MAC", n)
	}
	for i, st := range []*netstack.Stack{b, a} {
		peer := []netip.Addr{ipA, ipB}[i]
		c := dial(t, st, tcpAddr(peer, 7+i))
		echoRoundTrip(t, c, 1<<16, uint64(2+i))
		c.Close()
	}
	echoRoundTrip(t, c, 1<<16, 4)
	c.Close()
}

// TestLinkChangedDHCP: LinkChanged checks the lease at once, with a
// rebind when the MAC is the same, with a new DISCOVER from the new MAC
// when it changed.
func TestLinkChangedDHCP(t *testing.T) {
	for _, moved := range []bool{false, true} {
		t.Run(map[bool]string{false: "same MAC", true: "new MAC"}[moved], func(t *testing.T) {
			var srv *dhcpServer
			a, b, nb := movedRig(t, netstack.Config{DHCPTimeout: 20 * time.Second, DHCPRetransmit: 200 * time.Millisecond},
				func(a *netstack.Stack) { srv = startDHCPServer(t, a, 3600, 0, 0) })
			before := len(srv.requests())
			if moved {
				nb.mac.Store(&newMAC)
			}
			b.LinkChanged()
			want := func(m *dhcp.Message) bool { // a rebind: broadcast, ciaddr set
				return m.Type == dhcp.Request && m.CIAddr == leaseIP && slices.Equal(m.CHAddr, nicMAC(nb))
			}
			if moved {
				want = func(m *dhcp.Message) bool { return m.Type == dhcp.Discover && slices.Equal(m.CHAddr, newMAC) }
			}
			deadline := time.Now().Add(20 * time.Second)
			for !slices.ContainsFunc(srv.requests()[before:], want) {
				if time.Now().After(deadline) {
					t.Fatalf("server saw %+v after LinkChanged", srv.requests()[before:])
				}
				time.Sleep(10 * time.Millisecond)
			}
			for b.Addressing().Source != "dhcp" {
				if time.Now().After(deadline) {
					t.Fatalf("addressing %v", b.Addressing())
				}
				time.Sleep(10 * time.Millisecond)
			}
			go echoServer(listen(t, b, 7))
			c := dial(t, a, tcpAddr(leaseIP, 7))
			echoRoundTrip(t, c, 1<<16, 1)
			c.Close()
		})
	}
}

func nicMAC(n *movedNIC) net.HardwareAddr { return n.MAC() }
