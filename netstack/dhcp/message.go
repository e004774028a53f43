// Package dhcp is a DHCPv4 client (RFC 2131, RFC 2132): the wire format of
// DHCP messages and a client that acquires a lease (DISCOVER, OFFER,
// REQUEST, ACK) and keeps it (renewal at T1, rebinding at T2) over any
// net.PacketConn bound to port 68 that may send broadcasts.
//
// Every reply is hostile input: Parse checks every length and option, and a
// reply that is malformed, does not answer the client's transaction or
// offers an unusable address is an error (wrapping ErrMalformed or
// ErrBadReply), never a panic.
package dhcp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"
)

// Ports of DHCP servers and clients.
const (
	ServerPort = 67
	ClientPort = 68
)

// ErrMalformed is wrapped by Parse errors: the bytes are not a well-formed
// DHCP message.
var ErrMalformed = errors.New("dhcp: malformed message")

// Op codes of the BOOTP header.
const (
	OpRequest = 1
	OpReply   = 2
)

// MessageType is the DHCP message type (option 53).
type MessageType uint8

// DHCP message types.
const (
	Discover MessageType = 1
	Offer    MessageType = 2
	Request  MessageType = 3
	Decline  MessageType = 4
	Ack      MessageType = 5
	Nak      MessageType = 6
	Release  MessageType = 7
	Inform   MessageType = 8
)

// String names the type.
func (t MessageType) String() string {
	names := [...]string{"", "DISCOVER", "OFFER", "REQUEST", "DECLINE", "ACK", "NAK", "RELEASE", "INFORM"}
	if int(t) < len(names) && t != 0 {
		return names[t]
	}
	return fmt.Sprintf("MessageType(%d)", uint8(t))
}

// Option codes used by the client.
const (
	optPad         = 0
	optSubnetMask  = 1
	optRouter      = 3
	optDNS         = 6
	optHostname    = 12
	optRequestedIP = 50
	optLeaseTime   = 51
	optOverload    = 52
	optMsgType     = 53
	optServerID    = 54
	optParamReq    = 55
	optMaxSize     = 57
	optT1          = 58
	optT2          = 59
	optClientID    = 61
	optEnd         = 255
)

// headerLen is the fixed BOOTP part before the magic cookie; minLen adds
// the cookie.
const (
	headerLen = 236
	minLen    = headerLen + 4
	// maxLen bounds what Parse accepts (a reply fits an unfragmented
	// datagram; 576 is the least every host takes).
	maxLen = 65507
	// flagBroadcast asks the server to broadcast its replies.
	flagBroadcast = 0x8000
)

var magicCookie = [4]byte{99, 130, 83, 99}

// Message is a DHCP message with the options the client uses decoded.
// Unknown options are skipped by Parse and not kept.
type Message struct {
	Op        uint8
	XID       uint32
	Secs      uint16
	Broadcast bool // the BROADCAST flag
	CIAddr    netip.Addr
	YIAddr    netip.Addr
	SIAddr    netip.Addr
	GIAddr    netip.Addr
	CHAddr    net.HardwareAddr // 6 bytes (Ethernet)

	Type        MessageType  // option 53; 0 when absent
	SubnetMask  netip.Addr   // option 1
	Routers     []netip.Addr // option 3
	DNS         []netip.Addr // option 6
	Hostname    string       // option 12
	RequestedIP netip.Addr   // option 50
	LeaseTime   uint32       // option 51, seconds; 0 when absent
	ServerID    netip.Addr   // option 54
	ParamReq    []byte       // option 55
	T1, T2      uint32       // options 58 and 59, seconds; 0 when absent
	ClientID    []byte       // option 61
}

func malformed(format string, a ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, a...)...)
}

// Parse decodes a DHCP message from b (a UDP payload).
func Parse(b []byte) (*Message, error) {
	if len(b) < minLen {
		return nil, malformed("%d bytes, want at least %d", len(b), minLen)
	}
	if len(b) > maxLen {
		return nil, malformed("%d bytes, more than %d", len(b), maxLen)
	}
	if b[1] != 1 || b[2] != 6 {
		return nil, malformed("hardware type %d length %d, want Ethernet (1, 6)", b[1], b[2])
	}
	if [4]byte(b[headerLen:minLen]) != magicCookie {
		return nil, malformed("bad magic cookie % x", b[headerLen:minLen])
	}
	m := &Message{
		Op:        b[0],
		XID:       binary.BigEndian.Uint32(b[4:]),
		Secs:      binary.BigEndian.Uint16(b[8:]),
		Broadcast: binary.BigEndian.Uint16(b[10:])&flagBroadcast != 0,
		CIAddr:    netip.AddrFrom4([4]byte(b[12:16])),
		YIAddr:    netip.AddrFrom4([4]byte(b[16:20])),
		SIAddr:    netip.AddrFrom4([4]byte(b[20:24])),
		GIAddr:    netip.AddrFrom4([4]byte(b[24:28])),
		CHAddr:    net.HardwareAddr(append([]byte(nil), b[28:34]...)),
	}
	if m.Op != OpRequest && m.Op != OpReply {
		return nil, malformed("op %d", m.Op)
	}
	seen := map[byte]bool{}
	opts := b[minLen:]
	for i := 0; ; {
		if i >= len(opts) {
			return nil, malformed("options end without the end option")
		}
		code := opts[i]
		if code == optEnd {
			break
		}
		if code == optPad {
			i++
			continue
		}
		if i+1 >= len(opts) {
			return nil, malformed("option %d without length", code)
		}
		n := int(opts[i+1])
		if i+2+n > len(opts) {
			return nil, malformed("option %d length %d beyond the message", code, n)
		}
		val := opts[i+2 : i+2+n]
		i += 2 + n
		if seen[code] {
			// RFC 3396 concatenation of split options is not
			// supported; a repeated option is refused rather than
			// half understood.
			return nil, malformed("option %d repeated", code)
		}
		seen[code] = true
		if err := m.setOption(code, val); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func addr4(code byte, v []byte) (netip.Addr, error) {
	if len(v) != 4 {
		return netip.Addr{}, malformed("option %d length %d, want 4", code, len(v))
	}
	return netip.AddrFrom4([4]byte(v)), nil
}

func addrs4(code byte, v []byte) ([]netip.Addr, error) {
	if len(v) == 0 || len(v)%4 != 0 {
		return nil, malformed("option %d length %d, want a multiple of 4", code, len(v))
	}
	a := make([]netip.Addr, 0, len(v)/4)
	for i := 0; i < len(v); i += 4 {
		a = append(a, netip.AddrFrom4([4]byte(v[i:i+4])))
	}
	return a, nil
}

func seconds(code byte, v []byte) (uint32, error) {
	if len(v) != 4 {
		return 0, malformed("option %d length %d, want 4", code, len(v))
	}
	return binary.BigEndian.Uint32(v), nil
}

func (m *Message) setOption(code byte, v []byte) error {
	var err error
	switch code {
	case optSubnetMask:
		m.SubnetMask, err = addr4(code, v)
	case optRouter:
		m.Routers, err = addrs4(code, v)
	case optDNS:
		m.DNS, err = addrs4(code, v)
	case optHostname:
		m.Hostname = string(v)
	case optRequestedIP:
		m.RequestedIP, err = addr4(code, v)
	case optLeaseTime:
		m.LeaseTime, err = seconds(code, v)
	case optMsgType:
		if len(v) != 1 {
			return malformed("message type option length %d, want 1", len(v))
		}
		m.Type = MessageType(v[0])
	case optServerID:
		m.ServerID, err = addr4(code, v)
	case optParamReq:
		m.ParamReq = append([]byte(nil), v...)
	case optT1:
		m.T1, err = seconds(code, v)
	case optT2:
		m.T2, err = seconds(code, v)
	case optClientID:
		m.ClientID = append([]byte(nil), v...)
	case optOverload:
		// Options in the sname and file fields are not read; the
		// ones the client needs must be in the options field.
	}
	return err
}

// Marshal encodes m; addresses that are not valid IPv4 addresses are sent
// as 0.0.0.0 and absent options are left out.
func (m *Message) Marshal() []byte {
	b := make([]byte, minLen, 576)
	b[0] = m.Op
	b[1], b[2] = 1, 6
	binary.BigEndian.PutUint32(b[4:], m.XID)
	binary.BigEndian.PutUint16(b[8:], m.Secs)
	if m.Broadcast {
		binary.BigEndian.PutUint16(b[10:], flagBroadcast)
	}
	put4 := func(off int, a netip.Addr) {
		if a.Is4() {
			a4 := a.As4()
			copy(b[off:], a4[:])
		}
	}
	put4(12, m.CIAddr)
	put4(16, m.YIAddr)
	put4(20, m.SIAddr)
	put4(24, m.GIAddr)
	copy(b[28:44], m.CHAddr)
	copy(b[headerLen:], magicCookie[:])
	opt := func(code byte, v []byte) {
		for len(v) > 255 {
			v = v[:255]
		}
		b = append(b, code, byte(len(v)))
		b = append(b, v...)
	}
	optAddr := func(code byte, as ...netip.Addr) {
		var v []byte
		for _, a := range as {
			if a.Is4() {
				a4 := a.As4()
				v = append(v, a4[:]...)
			}
		}
		if len(v) > 0 {
			opt(code, v)
		}
	}
	optSecs := func(code byte, s uint32) {
		if s != 0 {
			opt(code, binary.BigEndian.AppendUint32(nil, s))
		}
	}
	if m.Type != 0 {
		opt(optMsgType, []byte{byte(m.Type)})
	}
	optAddr(optServerID, m.ServerID)
	optAddr(optRequestedIP, m.RequestedIP)
	optAddr(optSubnetMask, m.SubnetMask)
	optAddr(optRouter, m.Routers...)
	optAddr(optDNS, m.DNS...)
	optSecs(optLeaseTime, m.LeaseTime)
	optSecs(optT1, m.T1)
	optSecs(optT2, m.T2)
	if m.Hostname != "" {
		opt(optHostname, []byte(m.Hostname))
	}
	if len(m.ParamReq) > 0 {
		opt(optParamReq, m.ParamReq)
	}
	if len(m.ClientID) > 0 {
		opt(optClientID, m.ClientID)
	}
	b = append(b, optEnd)
	for len(b) < 300 {
		b = append(b, optPad) // BOOTP minimum, which some relays want
	}
	return b
}

// Lease is an address lease granted by a DHCP server.
type Lease struct {
	Addr     netip.Prefix // the address with the subnet's prefix length
	Router   netip.Addr   // first router; invalid when none was given
	DNS      []netip.Addr // name servers, possibly none
	Server   netip.Addr   // the server identifier
	Duration time.Duration
	// T1 and T2 are the renewal and rebinding times after Acquired.
	T1, T2   time.Duration
	Acquired time.Time // when the ACK arrived
}

// Infinite is the Duration of a lease that never expires (0xffffffff s).
const Infinite = time.Duration(1<<63 - 1)

// String prints the lease in one line, e.g.
// "10.0.2.15/24 gw 10.0.2.2 dns 10.0.2.3 lease 24h0m0s from 10.0.2.2".
func (l *Lease) String() string {
	s := l.Addr.String()
	if l.Router.IsValid() {
		s += " gw " + l.Router.String()
	}
	if len(l.DNS) > 0 {
		s += " dns "
		for i, d := range l.DNS {
			if i > 0 {
				s += ","
			}
			s += d.String()
		}
	}
	if l.Duration == Infinite {
		s += " lease infinite"
	} else {
		s += " lease " + l.Duration.String()
	}
	return s + " from " + l.Server.String()
}

// Expiry is when the lease ends.
func (l *Lease) Expiry() time.Time {
	if l.Duration == Infinite {
		return time.Time{}
	}
	return l.Acquired.Add(l.Duration)
}
