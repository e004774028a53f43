package netstack

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/gozen-dev/gozen/netstack/dhcp"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/adapters/gonet"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/arp"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/tcp"
	"gvisor.dev/gvisor/pkg/tcpip/transport/udp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// nicID is the gVisor NIC number of a Stack's one NIC.
const nicID tcpip.NICID = 1

// listenBacklog is the accept queue length of listeners.
const listenBacklog = 256

// ErrClosed is wrapped by the errors of a closed Stack.
var ErrClosed = errors.New("netstack: stack closed")

// Stack is a TCP/IP stack (gVisor's) over one NIC, whose Socket method
// serves as net.SocketFunc.
type Stack struct {
	s    *stack.Stack
	link *link
	cfg  Config

	ctx    context.Context // ends at Close
	cancel context.CancelFunc

	mu       sync.Mutex
	closed   bool
	addr     Addressing
	v4       tcpip.AddressWithPrefix // the configured IPv4 address, if any
	v4Routes []tcpip.Route
	v6Routes map[tcpip.Route]bool
	dhcpConn *gonet.UDPConn
	dhcp     *dhcp.Client
	lease    *dhcp.Lease
	done     chan struct{} // closed when the DHCP goroutine ends
	relink   chan struct{} // LinkChanged's signal to the DHCP goroutine
}

// New builds a stack over nic with ARP, IPv4, ICMP echo replies, TCP, UDP
// and, if cfg.IPv6, IPv6, and configures its address: the static one of
// cfg, or one from DHCP, in which case New waits up to cfg.DHCPTimeout for
// the first lease and keeps renewing it until Close.
func New(nic NIC, cfg Config) (*Stack, error) {
	if nic == nil {
		return nil, errors.New("netstack: nil NIC")
	}
	if mac := nic.MAC(); len(mac) != 6 || mac[0]&1 != 0 {
		return nil, fmt.Errorf("netstack: NIC MAC %v is not an Ethernet unicast address", mac)
	}
	if mtu := nic.MTU(); mtu < 576 || mtu > 0xffff {
		return nil, fmt.Errorf("netstack: NIC MTU %d out of range [576, 65535]", mtu)
	}
	st := &Stack{cfg: cfg, v6Routes: map[tcpip.Route]bool{}, done: make(chan struct{}), relink: make(chan struct{}, 1)}
	st.ctx, st.cancel = context.WithCancel(context.Background())
	netProtos := []stack.NetworkProtocolFactory{ipv4.NewProtocol, arp.NewProtocol}
	if cfg.IPv6 {
		netProtos = append(netProtos, ipv6.NewProtocolWithOptions(ipv6.Options{
			AutoGenLinkLocal: true,
			NDPConfigs: ipv6.NDPConfigurations{
				HandleRAs:              ipv6.HandlingRAsEnabledWhenForwardingDisabled,
				DiscoverDefaultRouters: true,
				DiscoverOnLinkPrefixes: true,
				AutoGenGlobalAddresses: true,
			},
			NDPDisp: (*ndpDispatcher)(st),
		}))
	}
	st.s = stack.New(stack.Options{
		NetworkProtocols:   netProtos,
		TransportProtocols: []stack.TransportProtocolFactory{tcp.NewProtocol, udp.NewProtocol, icmp.NewProtocol4, icmp.NewProtocol6},
		HandleLocal:        true,
	})
	sack := tcpip.TCPSACKEnabled(true)
	st.s.SetTransportProtocolOption(tcp.ProtocolNumber, &sack)
	st.link = newLink(nic, cfg.IPv6)
	if err := st.s.CreateNICWithOptions(nicID, st.link, stack.NICOptions{Name: "eth0"}); err != nil {
		st.Close()
		return nil, fmt.Errorf("netstack: create NIC: %s", err)
	}
	if cfg.IPv6 {
		st.v6Routes[tcpip.Route{Destination: mustSubnet("fe80::/64"), NIC: nicID}] = true
		st.applyRoutes()
	}
	if cfg.Static() {
		if err := st.setAddressing(Addressing{Source: "static", Addr: cfg.Addr, Gateway: cfg.Gateway, DNS: cfg.DNS}); err != nil {
			st.Close()
			return nil, err
		}
		close(st.done)
		return st, nil
	}
	if err := st.startDHCP(); err != nil {
		st.Close()
		return nil, err
	}
	return st, nil
}

func mustSubnet(s string) tcpip.Subnet {
	p := netip.MustParsePrefix(s)
	return prefixSubnet(p)
}

func prefixSubnet(p netip.Prefix) tcpip.Subnet {
	p = p.Masked()
	a := toAddr(p.Addr())
	sn, err := tcpip.NewSubnet(a, tcpip.MaskFromBytes(net.CIDRMask(p.Bits(), p.Addr().BitLen())))
	if err != nil {
		panic(err) // p is masked, so the subnet is valid
	}
	return sn
}

func toAddr(a netip.Addr) tcpip.Address {
	if a.Is4() {
		return tcpip.AddrFrom4(a.As4())
	}
	return tcpip.AddrFrom16(a.As16())
}

// setAddressing replaces the IPv4 address, routes and name servers.
func (st *Stack) setAddressing(a Addressing) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.closed {
		return ErrClosed
	}
	if st.v4.Address.Len() > 0 && (!a.Addr.IsValid() || toAddr(a.Addr.Addr()) != st.v4.Address || a.Addr.Bits() != st.v4.PrefixLen) {
		st.s.RemoveAddress(nicID, st.v4.Address)
		st.v4 = tcpip.AddressWithPrefix{}
	}
	st.v4Routes = nil
	if a.Addr.IsValid() {
		awp := tcpip.AddressWithPrefix{Address: toAddr(a.Addr.Addr()), PrefixLen: a.Addr.Bits()}
		if st.v4 != awp {
			err := st.s.AddProtocolAddress(nicID, tcpip.ProtocolAddress{Protocol: ipv4.ProtocolNumber, AddressWithPrefix: awp}, stack.AddressProperties{})
			if err != nil {
				return fmt.Errorf("netstack: add address %v: %s", a.Addr, err)
			}
			st.v4 = awp
		}
		st.v4Routes = append(st.v4Routes, tcpip.Route{Destination: prefixSubnet(a.Addr), NIC: nicID})
		if a.Gateway.IsValid() {
			st.v4Routes = append(st.v4Routes, tcpip.Route{Destination: header.IPv4EmptySubnet, Gateway: toAddr(a.Gateway), NIC: nicID})
		}
	}
	st.addr = a
	st.applyRoutesLocked()
	return nil
}

func (st *Stack) applyRoutes() {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.applyRoutesLocked()
}

// applyRoutesLocked installs the IPv4 and IPv6 routes; more specific
// subnets come first, as gVisor takes the first match.
func (st *Stack) applyRoutesLocked() {
	rt := append([]tcpip.Route(nil), st.v4Routes...)
	var v6 []tcpip.Route
	for r := range st.v6Routes {
		v6 = append(v6, r)
	}
	// Prefix length descending, gateway routes (default) last.
	for i := 1; i < len(v6); i++ {
		for j := i; j > 0 && v6[j].Destination.Prefix() > v6[j-1].Destination.Prefix(); j-- {
			v6[j], v6[j-1] = v6[j-1], v6[j]
		}
	}
	st.s.SetRouteTable(append(rt, v6...))
}

// Addressing returns the IPv4 configuration in use.
func (st *Stack) Addressing() Addressing {
	st.mu.Lock()
	defer st.mu.Unlock()
	a := st.addr
	a.DNS = append([]netip.Addr(nil), a.DNS...)
	return a
}

// DNS returns the name servers as "host:53" strings, for
// net.SetDefaultNS.
func (st *Stack) DNS() []string {
	var s []string
	for _, d := range st.Addressing().DNS {
		s = append(s, netip.AddrPortFrom(d, 53).String())
	}
	return s
}

// Close closes every connection and listener, gives a DHCP lease back,
// stops the NIC's receive goroutine and gVisor's goroutines, and waits for
// them.
func (st *Stack) Close() error {
	st.mu.Lock()
	if st.closed {
		st.mu.Unlock()
		return nil
	}
	st.closed = true
	client, lease, conn := st.dhcp, st.lease, st.dhcpConn
	st.mu.Unlock()
	st.cancel()
	if client != nil {
		<-st.done
		if lease != nil {
			client.Release(lease)
		}
	}
	if conn != nil {
		conn.Close()
	}
	st.link.Close()
	st.s.Destroy()
	return nil
}

// Stats are counters of a Stack.
type Stats struct {
	Link LinkStats
	// IP counts IPv4 and IPv6 packets.
	IPReceived, IPSent, IPMalformed, IPInvalidAddress uint64
	// TCP
	TCPActiveOpens, TCPPassiveOpens, TCPEstablished      uint64
	TCPSegmentsSent, TCPSegmentsReceived, TCPRetransmits uint64
	TCPChecksumErrors, TCPResetsSent                     uint64
	// UDP
	UDPReceived, UDPSent, UDPChecksumErrors, UDPUnknownPort uint64
	// ICMP echo
	ICMPEchoRequestsReceived, ICMPEchoRepliesSent uint64
}

// Stats returns the stack's counters.
func (st *Stack) Stats() Stats {
	s := st.s.Stats()
	return Stats{
		Link:                     st.link.snapshot(),
		IPReceived:               s.IP.PacketsReceived.Value(),
		IPSent:                   s.IP.PacketsSent.Value(),
		IPMalformed:              s.IP.MalformedPacketsReceived.Value(),
		IPInvalidAddress:         s.IP.InvalidDestinationAddressesReceived.Value(),
		TCPActiveOpens:           s.TCP.ActiveConnectionOpenings.Value(),
		TCPPassiveOpens:          s.TCP.PassiveConnectionOpenings.Value(),
		TCPEstablished:           s.TCP.CurrentEstablished.Value(),
		TCPSegmentsSent:          s.TCP.SegmentsSent.Value(),
		TCPSegmentsReceived:      s.TCP.ValidSegmentsReceived.Value(),
		TCPRetransmits:           s.TCP.Retransmits.Value(),
		TCPChecksumErrors:        s.TCP.ChecksumErrors.Value(),
		TCPResetsSent:            s.TCP.ResetsSent.Value(),
		UDPReceived:              s.UDP.PacketsReceived.Value(),
		UDPSent:                  s.UDP.PacketsSent.Value(),
		UDPChecksumErrors:        s.UDP.ChecksumErrors.Value(),
		UDPUnknownPort:           s.UDP.UnknownPortErrors.Value(),
		ICMPEchoRequestsReceived: s.ICMP.V4.PacketsReceived.EchoRequest.Value(),
		ICMPEchoRepliesSent:      s.ICMP.V4.PacketsSent.EchoReply.Value(),
	}
}

// Socket has the signature of net.SocketFunc (tamago-go's net package):
// it returns a *gonet.TCPConn for a TCP dial (raddr set), a
// *gonet.TCPListener for a TCP listen (laddr set, raddr nil), and a
// *gonet.UDPConn for UDP, connected when raddr is set. network is "tcp",
// "tcp4", "tcp6", "udp", "udp4" or "udp6"; sotype is syscall.SOCK_STREAM
// or SOCK_DGRAM; a wildcard or missing laddr and port 0 mean any address
// and an ephemeral port. family (syscall.AF_INET or AF_INET6) only picks
// the protocol of a wildcard listener; the addresses decide otherwise.
func (st *Stack) Socket(ctx context.Context, network string, family, sotype int, laddr, raddr net.Addr) (interface{}, error) {
	if st.ctx.Err() != nil {
		return nil, ErrClosed
	}
	base := strings.TrimRight(network, "46")
	switch {
	case base == "tcp" && sotype == syscall.SOCK_STREAM, base == "udp" && sotype == syscall.SOCK_DGRAM:
	default:
		return nil, fmt.Errorf("netstack: socket %q type %d: %w", network, sotype, syscall.EPROTONOSUPPORT)
	}
	lip, lport, err := splitAddr(laddr)
	if err != nil {
		return nil, err
	}
	rip, rport, err := splitAddr(raddr)
	if err != nil {
		return nil, err
	}
	proto, err := st.netProto(network, family, lip, rip)
	if err != nil {
		return nil, err
	}
	lfa := st.fullAddr(lip, lport)
	rfa := st.fullAddr(rip, rport)
	if base == "tcp" {
		if raddr == nil {
			return st.listenTCP(lfa, proto)
		}
		if !rip.IsValid() {
			return nil, fmt.Errorf("netstack: dial %s %v: no remote address", network, raddr)
		}
		var c *gonet.TCPConn
		if laddr != nil && (lport != 0 || (lip.IsValid() && !lip.IsUnspecified())) {
			c, err = gonet.DialTCPWithBind(ctx, st.s, lfa, rfa, proto)
		} else {
			c, err = gonet.DialContextTCP(ctx, st.s, rfa, proto)
		}
		if err != nil {
			return nil, err
		}
		return c, nil
	}
	var rp *tcpip.FullAddress
	if raddr != nil {
		if !rip.IsValid() {
			return nil, fmt.Errorf("netstack: dial %s %v: no remote address", network, raddr)
		}
		rp = &rfa
	}
	var lp *tcpip.FullAddress
	if laddr != nil || raddr == nil {
		lp = &lfa
	}
	// Tied to the one NIC, so that 255.255.255.255 has a way out.
	return st.newUDP(proto, lp, rp, nicID)
}

// splitAddr takes a *net.TCPAddr or *net.UDPAddr apart; nil gives the
// invalid address and port 0.
func splitAddr(a net.Addr) (netip.Addr, uint16, error) {
	var ip net.IP
	var port int
	switch a := a.(type) {
	case nil:
		return netip.Addr{}, 0, nil
	case *net.TCPAddr:
		if a == nil {
			return netip.Addr{}, 0, nil
		}
		ip, port = a.IP, a.Port
	case *net.UDPAddr:
		if a == nil {
			return netip.Addr{}, 0, nil
		}
		ip, port = a.IP, a.Port
	default:
		return netip.Addr{}, 0, fmt.Errorf("netstack: address %v of type %T: %w", a, a, syscall.EAFNOSUPPORT)
	}
	if port < 0 || port > 0xffff {
		return netip.Addr{}, 0, fmt.Errorf("netstack: port %d out of range", port)
	}
	if len(ip) == 0 {
		return netip.Addr{}, uint16(port), nil
	}
	na, ok := netip.AddrFromSlice(ip)
	if !ok {
		return netip.Addr{}, 0, fmt.Errorf("netstack: bad IP %v", ip)
	}
	return na.Unmap(), uint16(port), nil
}

// netProto picks IPv4 or IPv6 for a socket.
func (st *Stack) netProto(network string, family int, lip, rip netip.Addr) (tcpip.NetworkProtocolNumber, error) {
	want6 := false
	switch {
	case strings.HasSuffix(network, "4"):
	case strings.HasSuffix(network, "6"):
		want6 = true
	case rip.IsValid():
		want6 = rip.Is6()
	case lip.IsValid() && !lip.IsUnspecified():
		want6 = lip.Is6()
	case lip.IsValid():
		want6 = lip.Is6() && st.cfg.IPv6
	default:
		want6 = family == syscall.AF_INET6 && st.cfg.IPv6
	}
	for _, a := range []netip.Addr{lip, rip} {
		if a.IsValid() && !a.IsUnspecified() && a.Is6() != want6 {
			return 0, fmt.Errorf("netstack: %s socket with address %v: %w", network, a, syscall.EAFNOSUPPORT)
		}
	}
	if want6 {
		if !st.cfg.IPv6 {
			return 0, fmt.Errorf("netstack: %s socket: IPv6 is off: %w", network, syscall.EAFNOSUPPORT)
		}
		return ipv6.ProtocolNumber, nil
	}
	return ipv4.ProtocolNumber, nil
}

// fullAddr makes a gVisor address; link-local IPv6 addresses name the NIC.
func (st *Stack) fullAddr(ip netip.Addr, port uint16) tcpip.FullAddress {
	fa := tcpip.FullAddress{Port: port}
	if ip.IsValid() && !ip.IsUnspecified() {
		fa.Addr = toAddr(ip)
		if ip.Is6() && ip.IsLinkLocalUnicast() {
			fa.NIC = nicID
		}
	}
	return fa
}

func (st *Stack) listenTCP(lfa tcpip.FullAddress, proto tcpip.NetworkProtocolNumber) (*gonet.TCPListener, error) {
	var wq waiter.Queue
	ep, terr := st.s.NewEndpoint(tcp.ProtocolNumber, proto, &wq)
	if terr != nil {
		return nil, fmt.Errorf("netstack: tcp endpoint: %s", terr)
	}
	ep.SocketOptions().SetReuseAddress(true)
	if terr := ep.Bind(lfa); terr != nil {
		ep.Close()
		return nil, &net.OpError{Op: "bind", Net: "tcp", Addr: fullTCPAddr(lfa), Err: errors.New(terr.String())}
	}
	if terr := ep.Listen(listenBacklog); terr != nil {
		ep.Close()
		return nil, &net.OpError{Op: "listen", Net: "tcp", Addr: fullTCPAddr(lfa), Err: errors.New(terr.String())}
	}
	return gonet.NewTCPListener(st.s, &wq, ep), nil
}

func fullTCPAddr(a tcpip.FullAddress) *net.TCPAddr {
	return &net.TCPAddr{IP: net.IP(a.Addr.AsSlice()), Port: int(a.Port)}
}

// newUDP makes a UDP socket that may broadcast (as Go's net package does
// on Unix), bound to laddr and connected to raddr where given, and tied
// to the NIC when bindNIC is not 0.
func (st *Stack) newUDP(proto tcpip.NetworkProtocolNumber, laddr, raddr *tcpip.FullAddress, bindNIC tcpip.NICID) (*gonet.UDPConn, error) {
	var wq waiter.Queue
	ep, terr := st.s.NewEndpoint(udp.ProtocolNumber, proto, &wq)
	if terr != nil {
		return nil, fmt.Errorf("netstack: udp endpoint: %s", terr)
	}
	ep.SocketOptions().SetBroadcast(true)
	if bindNIC != 0 {
		if terr := ep.SocketOptions().SetBindToDevice(int32(bindNIC)); terr != nil {
			ep.Close()
			return nil, fmt.Errorf("netstack: udp bind to NIC: %s", terr)
		}
	}
	if laddr != nil {
		if terr := ep.Bind(*laddr); terr != nil {
			ep.Close()
			return nil, &net.OpError{Op: "bind", Net: "udp", Addr: &net.UDPAddr{IP: net.IP(laddr.Addr.AsSlice()), Port: int(laddr.Port)}, Err: errors.New(terr.String())}
		}
	}
	if raddr != nil {
		if terr := ep.Connect(*raddr); terr != nil {
			ep.Close()
			return nil, &net.OpError{Op: "connect", Net: "udp", Addr: &net.UDPAddr{IP: net.IP(raddr.Addr.AsSlice()), Port: int(raddr.Port)}, Err: errors.New(terr.String())}
		}
	}
	return gonet.NewUDPConn(&wq, ep), nil
}

// startDHCP acquires the first lease and starts the goroutine that keeps
// it.
func (st *Stack) startDHCP() error {
	// The client sends from 0.0.0.0 until it has an address, to
	// 255.255.255.255, so the NIC needs a way out: a route for every
	// destination through it.
	st.mu.Lock()
	st.v4Routes = []tcpip.Route{{Destination: header.IPv4EmptySubnet, NIC: nicID}}
	st.applyRoutesLocked()
	st.mu.Unlock()
	if err := st.addUnspecified(); err != nil {
		return err
	}
	conn, err := st.newUDP(ipv4.ProtocolNumber, &tcpip.FullAddress{Port: dhcp.ClientPort}, nil, nicID)
	if err != nil {
		return fmt.Errorf("netstack: dhcp: %w", err)
	}
	client := &dhcp.Client{Conn: conn, MAC: net.HardwareAddr(st.link.LinkAddress()), Hostname: st.cfg.Hostname, Retransmit: st.cfg.DHCPRetransmit}
	st.mu.Lock()
	st.dhcp, st.dhcpConn = client, conn
	st.mu.Unlock()
	timeout := st.cfg.DHCPTimeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	ctx, cancel := context.WithTimeout(st.ctx, timeout)
	lease, err := client.Acquire(ctx)
	cancel()
	if err != nil {
		close(st.done)
		return fmt.Errorf("netstack: %w", err)
	}
	st.applyLease(lease)
	go func() {
		defer close(st.done)
		st.keepDHCP(client, lease)
	}()
	return nil
}

// applyLease configures the address of a new DHCP lease, or removes the
// address when l is nil.
func (st *Stack) applyLease(l *dhcp.Lease) {
	a := Addressing{Source: "none"}
	if l != nil {
		a = Addressing{Source: "dhcp", Addr: l.Addr, Gateway: l.Router, DNS: l.DNS, Lease: l.Duration, Server: l.Server}
	}
	if l != nil {
		st.s.RemoveAddress(nicID, header.IPv4Any)
	}
	st.setAddressing(a)
	st.mu.Lock()
	st.lease = l
	if l == nil {
		st.addUnspecified()
		// Back to sending from 0.0.0.0 while looking for a new lease.
		st.v4Routes = []tcpip.Route{{Destination: header.IPv4EmptySubnet, NIC: nicID}}
		st.applyRoutesLocked()
	}
	st.mu.Unlock()
}

// addUnspecified gives the NIC the address 0.0.0.0, the source of a DHCP
// client's messages while it has no lease.
func (st *Stack) addUnspecified() error {
	unspec := tcpip.ProtocolAddress{Protocol: ipv4.ProtocolNumber, AddressWithPrefix: tcpip.AddressWithPrefix{Address: header.IPv4Any}}
	if err := st.s.AddProtocolAddress(nicID, unspec, stack.AddressProperties{}); err != nil {
		if _, ok := err.(*tcpip.ErrDuplicateAddress); !ok {
			return fmt.Errorf("netstack: dhcp: add 0.0.0.0: %s", err)
		}
	}
	return nil
}
