package netstack_test

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gozen-dev/gozen/netstack"
	"github.com/gozen-dev/gozen/netstack/dhcp"
	"github.com/gozen-dev/gozen/netstack/pipenic"
)

// dhcpServer is a tiny DHCP server on a stack: it offers 10.0.0.50/24 with
// router and DNS 10.0.0.1 and the given lease times, and records the
// requests it saw.
type dhcpServer struct {
	conn          net.PacketConn
	lease, t1, t2 uint32
	mutate        func(*dhcp.Message) // changes replies, for hostile tests

	mu   sync.Mutex
	seen []*dhcp.Message
	from []net.Addr
}

var leaseIP = netip.MustParseAddr("10.0.0.50")

func startDHCPServer(t *testing.T, st *netstack.Stack, lease, t1, t2 uint32) *dhcpServer {
	t.Helper()
	c, err := st.Socket(context.Background(), "udp", syscall.AF_INET, syscall.SOCK_DGRAM, &net.UDPAddr{Port: dhcp.ServerPort}, nil)
	if err != nil {
		t.Fatal(err)
	}
	s := &dhcpServer{conn: c.(net.PacketConn), lease: lease, t1: t1, t2: t2}
	t.Cleanup(func() { s.conn.Close() })
	go s.serve()
	return s
}

func (s *dhcpServer) serve() {
	buf := make([]byte, 1500)
	for {
		n, from, err := s.conn.ReadFrom(buf)
		if err != nil {
			return
		}
		m, err := dhcp.Parse(buf[:n])
		if err != nil || m.Op != dhcp.OpRequest {
			continue
		}
		s.mu.Lock()
		s.seen = append(s.seen, m)
		s.from = append(s.from, from)
		s.mu.Unlock()
		r := &dhcp.Message{
			Op: dhcp.OpReply, XID: m.XID, CHAddr: m.CHAddr, YIAddr: leaseIP, Broadcast: m.Broadcast,
			ServerID: ipA, SubnetMask: netip.MustParseAddr("255.255.255.0"),
			Routers: []netip.Addr{ipA}, DNS: []netip.Addr{ipA, netip.MustParseAddr("8.8.8.8")},
			LeaseTime: s.lease, T1: s.t1, T2: s.t2,
		}
		switch m.Type {
		case dhcp.Discover:
			r.Type = dhcp.Offer
		case dhcp.Request:
			r.Type = dhcp.Ack
		default:
			continue
		}
		if s.mutate != nil {
			s.mutate(r)
		}
		dst := net.Addr(&net.UDPAddr{IP: net.IPv4bcast, Port: dhcp.ClientPort})
		if !m.Broadcast && m.CIAddr.IsValid() && !m.CIAddr.IsUnspecified() {
			dst = &net.UDPAddr{IP: net.IP(m.CIAddr.AsSlice()), Port: dhcp.ClientPort}
		}
		s.conn.WriteTo(r.Marshal(), dst)
	}
}

func (s *dhcpServer) requests() []*dhcp.Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]*dhcp.Message(nil), s.seen...)
}

// dhcpRig is a static server stack a and a pipenic NIC for a DHCP client.
func dhcpRig(t *testing.T) (*netstack.Stack, *pipenic.NIC) {
	nicA, nicB := pipenic.Pair(1500, offCsum)
	a, err := netstack.New(nicA, netstack.Config{Addr: netip.PrefixFrom(ipA, 24)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close(); nicA.Close(); nicB.Close() })
	return a, nicB
}

func TestDHCP(t *testing.T) {
	a, nicB := dhcpRig(t)
	srv := startDHCPServer(t, a, 3600, 0, 0)
	b, err := netstack.New(nicB, netstack.Config{DHCPTimeout: 20 * time.Second, DHCPRetransmit: 200 * time.Millisecond, Hostname: "gozen"})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	got := b.Addressing().String()
	if want := "dhcp 10.0.0.50/24 gw 10.0.0.1 dns 10.0.0.1,8.8.8.8"; got != want {
		t.Errorf("Addressing %q, want %q", got, want)
	}
	if dns := strings.Join(b.DNS(), " "); dns != "10.0.0.1:53 8.8.8.8:53" {
		t.Errorf("DNS %q", dns)
	}
	reqs := srv.requests()
	if len(reqs) < 2 || reqs[0].Type != dhcp.Discover || reqs[len(reqs)-1].Type != dhcp.Request ||
		reqs[len(reqs)-1].RequestedIP != leaseIP || reqs[len(reqs)-1].ServerID != ipA || reqs[0].Hostname != "gozen" {
		t.Errorf("server saw %+v", reqs)
	}
	// The leased address works: TCP from the server's stack to it.
	go echoServer(listen(t, b, 7))
	c := dial(t, a, tcpAddr(leaseIP, 7))
	echoRoundTrip(t, c, 1<<20, 1)
	c.Close()
}

func TestDHCPRenewal(t *testing.T) {
	a, nicB := dhcpRig(t)
	srv := startDHCPServer(t, a, 4, 1, 3)
	b, err := netstack.New(nicB, netstack.Config{DHCPTimeout: 20 * time.Second, DHCPRetransmit: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	// Wait for two renewals: REQUESTs with ciaddr set, unicast from the
	// leased address.
	deadline := time.Now().Add(20 * time.Second)
	for {
		renewals := 0
		for _, m := range srv.requests() {
			if m.Type == dhcp.Request && m.CIAddr == leaseIP {
				renewals++
			}
		}
		if renewals >= 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d renewals seen; server saw %+v", renewals, srv.requests())
		}
		time.Sleep(100 * time.Millisecond)
	}
	srv.mu.Lock()
	last := srv.from[len(srv.from)-1].(*net.UDPAddr)
	srv.mu.Unlock()
	if !last.IP.Equal(leaseIP.AsSlice()) || last.Port != dhcp.ClientPort {
		t.Errorf("renewal came from %v, want %v:68", last, leaseIP)
	}
	if got := b.Addressing(); got.Source != "dhcp" || got.Addr.Addr() != leaseIP {
		t.Errorf("after renewals: %v", got)
	}
}

func TestDHCPHostileReply(t *testing.T) {
	cases := []struct {
		name   string
		mutate func(*dhcp.Message)
	}{
		{"zero address", func(m *dhcp.Message) { m.YIAddr = netip.IPv4Unspecified() }},
		{"broadcast address", func(m *dhcp.Message) { m.YIAddr = netip.MustParseAddr("10.0.0.255") }},
		{"no lease time", func(m *dhcp.Message) { m.LeaseTime = 0 }},
		{"bad mask", func(m *dhcp.Message) { m.SubnetMask = netip.MustParseAddr("255.0.255.0") }},
		{"router off subnet", func(m *dhcp.Message) { m.Routers = []netip.Addr{netip.MustParseAddr("192.168.1.1")} }},
		{"multicast dns", func(m *dhcp.Message) { m.DNS = []netip.Addr{netip.MustParseAddr("224.0.0.1")} }},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			a, nicB := dhcpRig(t)
			srv := startDHCPServer(t, a, 3600, 0, 0)
			srv.mutate = tc.mutate
			b, err := netstack.New(nicB, netstack.Config{DHCPTimeout: 10 * time.Second, DHCPRetransmit: 200 * time.Millisecond})
			if err == nil {
				b.Close()
				t.Fatalf("New succeeded with %v", b.Addressing())
			}
			if !strings.Contains(err.Error(), "unusable reply") {
				t.Errorf("error %v, want an unusable reply", err)
			}
		})
	}
}

func TestDHCPTimeout(t *testing.T) {
	_, nicB := dhcpRig(t)
	_, err := netstack.New(nicB, netstack.Config{DHCPTimeout: 300 * time.Millisecond, DHCPRetransmit: 100 * time.Millisecond})
	if err == nil {
		t.Fatal("New without a DHCP server succeeded")
	}
}
