package dhcp

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"time"
)

// ErrBadReply is wrapped by the errors for a well-formed reply to the
// client's transaction that cannot be used: a missing or impossible
// address, mask, router, name server, server identifier or lease time.
var ErrBadReply = errors.New("dhcp: unusable reply")

// ErrNak is wrapped by the error of a request the server refused (DHCPNAK).
var ErrNak = errors.New("dhcp: server sent NAK")

// Client is a DHCPv4 client for one Ethernet interface.
type Client struct {
	// Conn sends and receives the messages: a UDP socket bound to port
	// 68 on the interface that may send to 255.255.255.255.
	Conn net.PacketConn
	// MAC is the interface's Ethernet address.
	MAC net.HardwareAddr
	// Hostname, when not empty, is sent as option 12.
	Hostname string
	// Retransmit is the first retransmission interval, which doubles up
	// to 64 s after every unanswered try (RFC 2131 section 4.1); 0 means
	// 4 s.
	Retransmit time.Duration
}

var (
	broadcastAddr = &net.UDPAddr{IP: net.IPv4bcast, Port: ServerPort}
	paramRequest  = []byte{optSubnetMask, optRouter, optDNS, optLeaseTime, optServerID, optT1, optT2}
)

func (c *Client) retransmit() time.Duration {
	if c.Retransmit > 0 {
		return c.Retransmit
	}
	return 4 * time.Second
}

func (c *Client) newMessage(t MessageType, xid uint32) *Message {
	return &Message{
		Op:        OpRequest,
		XID:       xid,
		Broadcast: true,
		CHAddr:    c.MAC,
		Type:      t,
		Hostname:  c.Hostname,
		ParamReq:  paramRequest,
		ClientID:  append([]byte{1}, c.MAC...),
	}
}

// Acquire gets a new lease: it broadcasts DISCOVER until an OFFER comes,
// then REQUESTs the offered address until the server ACKs it. It gives up
// when ctx is done, or with an error on a malformed or unusable reply or a
// NAK.
func (c *Client) Acquire(ctx context.Context) (*Lease, error) {
	xid := rand.Uint32()
	var offer *Message
	err := c.exchange(ctx, time.Time{}, c.newMessage(Discover, xid), broadcastAddr, func(m *Message) (bool, error) {
		if m.Type != Offer {
			return false, nil
		}
		if _, err := leaseOf(m, netip.Addr{}); err != nil {
			return false, fmt.Errorf("dhcp: offer from %v: %w", m.ServerID, err)
		}
		offer = m
		return true, nil
	})
	if err != nil {
		return nil, fmt.Errorf("dhcp: discover: %w", err)
	}
	req := c.newMessage(Request, xid)
	req.RequestedIP = offer.YIAddr
	req.ServerID = offer.ServerID
	l, err := c.request(ctx, time.Time{}, req, broadcastAddr, offer.ServerID)
	if err != nil {
		return nil, fmt.Errorf("dhcp: request %v from %v: %w", offer.YIAddr, offer.ServerID, err)
	}
	return l, nil
}

// Renew asks the server of l to extend it (RENEWING, unicast to the
// server from the leased address), until deadline (zero: no deadline) or
// ctx ends.
func (c *Client) Renew(ctx context.Context, l *Lease, deadline time.Time) (*Lease, error) {
	req := c.newMessage(Request, rand.Uint32())
	req.Broadcast = false
	req.CIAddr = l.Addr.Addr()
	dst := &net.UDPAddr{IP: net.IP(l.Server.AsSlice()), Port: ServerPort}
	nl, err := c.request(ctx, deadline, req, dst, l.Server)
	if err != nil {
		return nil, fmt.Errorf("dhcp: renew %v: %w", l.Addr, err)
	}
	return nl, nil
}

// Rebind asks any server to extend l (REBINDING, broadcast), until
// deadline (zero: no deadline) or ctx ends.
func (c *Client) Rebind(ctx context.Context, l *Lease, deadline time.Time) (*Lease, error) {
	req := c.newMessage(Request, rand.Uint32())
	req.CIAddr = l.Addr.Addr()
	nl, err := c.request(ctx, deadline, req, broadcastAddr, netip.Addr{})
	if err != nil {
		return nil, fmt.Errorf("dhcp: rebind %v: %w", l.Addr, err)
	}
	return nl, nil
}

// Release gives l back to its server (one unicast DHCPRELEASE, not
// answered).
func (c *Client) Release(l *Lease) error {
	m := c.newMessage(Release, rand.Uint32())
	m.Broadcast = false
	m.CIAddr = l.Addr.Addr()
	m.ServerID = l.Server
	m.ParamReq = nil
	m.Hostname = ""
	dst := &net.UDPAddr{IP: net.IP(l.Server.AsSlice()), Port: ServerPort}
	if _, err := c.Conn.WriteTo(m.Marshal(), dst); err != nil {
		return fmt.Errorf("dhcp: release %v: %w", l.Addr, err)
	}
	return nil
}

// request sends req until an ACK or NAK for it arrives; server, if
// valid, is the only server whose answer counts.
func (c *Client) request(ctx context.Context, deadline time.Time, req *Message, dst net.Addr, server netip.Addr) (*Lease, error) {
	var lease *Lease
	err := c.exchange(ctx, deadline, req, dst, func(m *Message) (bool, error) {
		if server.IsValid() && m.ServerID.IsValid() && m.ServerID != server {
			return false, nil
		}
		switch m.Type {
		case Nak:
			return false, ErrNak
		case Ack:
			l, err := leaseOf(m, server)
			if err != nil {
				return false, fmt.Errorf("ack from %v: %w", m.ServerID, err)
			}
			if want := req.RequestedIP; want.IsValid() && l.Addr.Addr() != want {
				return false, fmt.Errorf("%w: ack for %v, requested %v", ErrBadReply, l.Addr.Addr(), want)
			}
			if want := req.CIAddr; want.IsValid() && !want.IsUnspecified() && l.Addr.Addr() != want {
				return false, fmt.Errorf("%w: ack for %v, renewing %v", ErrBadReply, l.Addr.Addr(), want)
			}
			lease = l
			return true, nil
		}
		return false, nil
	})
	return lease, err
}

// exchange sends m to dst and reads replies until accept says done or
// fails, resending m with doubling intervals while nothing is accepted,
// until ctx ends or deadline (if not zero) passes.
func (c *Client) exchange(ctx context.Context, deadline time.Time, m *Message, dst net.Addr, accept func(*Message) (bool, error)) error {
	stop := context.AfterFunc(ctx, func() { c.Conn.SetReadDeadline(time.Now()) })
	defer stop()
	interval := c.retransmit()
	buf := make([]byte, 1500)
	start := time.Now()
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		if !deadline.IsZero() && !time.Now().Before(deadline) {
			return fmt.Errorf("no answer before %v: %w", deadline.Format(time.RFC3339), os.ErrDeadlineExceeded)
		}
		m.Secs = uint16(min(time.Since(start)/time.Second, 0xffff))
		if _, err := c.Conn.WriteTo(m.Marshal(), dst); err != nil {
			return fmt.Errorf("send %v: %w", m.Type, err)
		}
		// Up to ±1 s of jitter on the RFC's intervals, less on short
		// (test) ones.
		jitter := min(interval/4, time.Second)
		wait := interval + time.Duration(rand.Int64N(int64(2*jitter)+1)) - jitter
		until := time.Now().Add(wait)
		if !deadline.IsZero() && deadline.Before(until) {
			until = deadline
		}
		for {
			c.Conn.SetReadDeadline(until)
			if ctx.Err() != nil {
				return ctx.Err()
			}
			n, _, err := c.Conn.ReadFrom(buf)
			if err != nil {
				if errors.Is(err, os.ErrDeadlineExceeded) || isTimeout(err) {
					break
				}
				return fmt.Errorf("receive: %w", err)
			}
			r, ok, err := match(buf[:n], m.XID, c.MAC)
			if err != nil {
				return err
			}
			if !ok {
				continue
			}
			done, err := accept(r)
			if err != nil || done {
				return err
			}
		}
		interval = min(2*interval, 64*time.Second)
	}
}

func isTimeout(err error) bool {
	var t interface{ Timeout() bool }
	return errors.As(err, &t) && t.Timeout()
}

// match parses a datagram that arrived on port 68 and reports whether it
// answers transaction xid of mac. Datagrams too short to carry a
// transaction id, or of other transactions or clients, are not ours and
// are skipped; a reply to ours that does not parse is an error.
func match(b []byte, xid uint32, mac net.HardwareAddr) (*Message, bool, error) {
	if len(b) < 34 || b[0] != OpReply || uint32(b[4])<<24|uint32(b[5])<<16|uint32(b[6])<<8|uint32(b[7]) != xid {
		return nil, false, nil
	}
	if string(b[28:34]) != string(mac) {
		return nil, false, nil
	}
	m, err := Parse(b)
	if err != nil {
		return nil, false, err
	}
	return m, true, nil
}

// leaseOf checks an OFFER or ACK and makes the lease it grants; server,
// if valid, stands in for a missing server identifier.
func leaseOf(m *Message, server netip.Addr) (*Lease, error) {
	ip := m.YIAddr
	if !usable(ip) {
		return nil, fmt.Errorf("%w: address %v", ErrBadReply, ip)
	}
	bits := 0
	if m.SubnetMask.IsValid() {
		var ok bool
		if bits, ok = maskBits(m.SubnetMask); !ok || bits == 0 {
			return nil, fmt.Errorf("%w: subnet mask %v", ErrBadReply, m.SubnetMask)
		}
	} else {
		switch a := ip.As4(); {
		case a[0] < 128:
			bits = 8
		case a[0] < 192:
			bits = 16
		default:
			bits = 24
		}
	}
	pfx := netip.PrefixFrom(ip, bits)
	if bits < 31 && (ip == pfx.Masked().Addr() || ip == lastAddr(pfx)) {
		return nil, fmt.Errorf("%w: address %v is the network or broadcast address of %v", ErrBadReply, ip, pfx.Masked())
	}
	l := &Lease{Addr: pfx, Server: m.ServerID, Acquired: time.Now()}
	if !l.Server.IsValid() {
		l.Server = server
	}
	if !usable(l.Server) {
		return nil, fmt.Errorf("%w: server identifier %v", ErrBadReply, m.ServerID)
	}
	if len(m.Routers) > 0 {
		r := m.Routers[0]
		if !usable(r) || !pfx.Contains(r) || r == ip {
			return nil, fmt.Errorf("%w: router %v for %v", ErrBadReply, r, pfx)
		}
		l.Router = r
	}
	for _, d := range m.DNS {
		if !usable(d) {
			return nil, fmt.Errorf("%w: name server %v", ErrBadReply, d)
		}
	}
	l.DNS = m.DNS
	switch m.LeaseTime {
	case 0:
		return nil, fmt.Errorf("%w: no lease time", ErrBadReply)
	case 0xffffffff:
		l.Duration, l.T1, l.T2 = Infinite, Infinite, Infinite
		return l, nil
	}
	sec := func(s uint32) time.Duration { return time.Duration(s) * time.Second }
	l.Duration = sec(m.LeaseTime)
	l.T1, l.T2 = sec(m.T1), sec(m.T2)
	if m.T1 == 0 || m.T2 == 0 || m.T1 >= m.T2 || m.T2 >= m.LeaseTime {
		// RFC 2131 section 4.4.5 defaults.
		l.T1 = l.Duration / 2
		l.T2 = l.Duration * 7 / 8
	}
	return l, nil
}

// usable reports whether a is an IPv4 unicast address a host may use.
func usable(a netip.Addr) bool {
	if !a.Is4() || a.IsUnspecified() || a.IsLoopback() || a.IsMulticast() || a == netip.AddrFrom4([4]byte{255, 255, 255, 255}) {
		return false
	}
	return a.As4()[0] < 240
}

// maskBits returns the prefix length of a contiguous subnet mask.
func maskBits(mask netip.Addr) (int, bool) {
	a := mask.As4()
	m := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	bits := 0
	for m&(1<<31) != 0 {
		bits++
		m <<= 1
	}
	return bits, m == 0
}

func lastAddr(p netip.Prefix) netip.Addr {
	a := p.Masked().Addr().As4()
	v := uint32(a[0])<<24 | uint32(a[1])<<16 | uint32(a[2])<<8 | uint32(a[3])
	v |= 1<<(32-p.Bits()) - 1
	return netip.AddrFrom4([4]byte{byte(v >> 24), byte(v >> 16), byte(v >> 8), byte(v)})
}

// Keep holds on to l until ctx ends: at T1 it renews with the server, from
// T2 it rebinds with any server, and when the lease expires or is refused
// it acquires a new one. changed is called with every new lease, and with
// nil when the address must no longer be used. Keep returns ctx's error.
func (c *Client) Keep(ctx context.Context, l *Lease, changed func(*Lease)) error {
	for {
		if l == nil {
			nl, err := c.Acquire(ctx)
			if err != nil {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				if !sleep(ctx, c.retransmit()) {
					return ctx.Err()
				}
				continue
			}
			l = nl
			changed(l)
		}
		if l.Duration == Infinite {
			<-ctx.Done()
			return ctx.Err()
		}
		t1, t2, end := l.Acquired.Add(l.T1), l.Acquired.Add(l.T2), l.Expiry()
		if !sleep(ctx, time.Until(t1)) {
			return ctx.Err()
		}
		nl, err := c.extend(ctx, l, t2, c.Renew)
		if nl == nil && !errors.Is(err, ErrNak) && ctx.Err() == nil {
			nl, err = c.extend(ctx, l, end, c.Rebind)
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if nl == nil {
			l = nil
			changed(nil)
			continue
		}
		l = nl
		changed(l)
	}
}

// extend calls renew (Renew or Rebind) until it gets a lease, a NAK, or
// the deadline passes; a bad reply is skipped.
func (c *Client) extend(ctx context.Context, l *Lease, deadline time.Time, renew func(context.Context, *Lease, time.Time) (*Lease, error)) (*Lease, error) {
	for time.Now().Before(deadline) {
		nl, err := renew(ctx, l, deadline)
		if err == nil || errors.Is(err, ErrNak) || ctx.Err() != nil {
			return nl, err
		}
		if !errors.Is(err, os.ErrDeadlineExceeded) && !sleep(ctx, min(c.retransmit(), time.Until(deadline))) {
			return nil, ctx.Err()
		}
	}
	return nil, os.ErrDeadlineExceeded
}

func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}
