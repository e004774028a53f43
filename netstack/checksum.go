package netstack

import (
	"encoding/binary"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// Why the link checks checksums itself: gVisor takes a received packet's
// "checksum verified" mark from the link's capabilities, for every packet
// alike (stack/nic.go sets pkt.RXChecksumValidated from
// CapabilityRXChecksumOffload). Frames flagged ChecksumBlank or
// DataValidated must skip verification (a csum_blank frame's checksum field
// holds only the pseudo-header sum, so gVisor would drop it), so the link
// claims RX checksum offload and verifies the frames that carry neither
// flag here, before gVisor sees them: the IPv4 header checksum and the TCP
// and UDP checksums over IPv4 and IPv6. A bad one drops the frame.
//
// Limit: an IP fragment's TCP or UDP checksum covers the reassembled
// datagram, which only exists inside gVisor after the mark was given, so the
// transport checksum of a fragmented datagram that arrived without flags is
// not verified (its fragments' IPv4 header checksums are).

// rxVerdict is what verifyRX decided for one frame.
type rxVerdict int

const (
	rxGood      rxVerdict = iota // verified, or nothing to verify
	rxBadSum                     // a checksum is wrong
	rxMalformed                  // an IP header that gVisor would refuse too
)

// IPv6 extension headers that may precede TCP or UDP and that the
// verification walks over (gVisor's header.IPv6ExtensionHeaderIdentifier
// values).
const (
	ip6HopByHop = 0
	ip6Routing  = 43
	ip6Fragment = 44
	ip6DestOpts = 60
)

// verifyRX checks the checksums of the IP packet pkt (the frame without its
// Ethernet header) with network protocol proto.
func verifyRX(proto tcpip.NetworkProtocolNumber, pkt []byte) rxVerdict {
	switch proto {
	case header.IPv4ProtocolNumber:
		return verifyIPv4(pkt)
	case header.IPv6ProtocolNumber:
		return verifyIPv6(pkt)
	}
	return rxGood
}

func verifyIPv4(b []byte) rxVerdict {
	if len(b) < header.IPv4MinimumSize {
		return rxMalformed
	}
	h := header.IPv4(b)
	ihl := int(h.HeaderLength())
	total := int(h.TotalLength())
	if header.IPVersion(b) != header.IPv4Version || ihl < header.IPv4MinimumSize || total < ihl || total > len(b) {
		return rxMalformed
	}
	if !header.IPv4(b[:ihl]).IsChecksumValid() {
		return rxBadSum
	}
	if h.More() || h.FragmentOffset() != 0 {
		return rxGood
	}
	return verifyL4(tcpip.TransportProtocolNumber(h.Protocol()), h.SourceAddress(), h.DestinationAddress(), b[ihl:total], false)
}

func verifyIPv6(b []byte) rxVerdict {
	if len(b) < header.IPv6MinimumSize {
		return rxMalformed
	}
	h := header.IPv6(b)
	total := header.IPv6MinimumSize + int(h.PayloadLength())
	if h.PayloadLength() == 0 || total > len(b) {
		// A zero payload length is a jumbogram, which gVisor refuses.
		return rxMalformed
	}
	next := h.NextHeader()
	rest := b[header.IPv6MinimumSize:total]
	for {
		switch next {
		case ip6HopByHop, ip6Routing, ip6DestOpts:
			if len(rest) < 2 {
				return rxMalformed
			}
			n := (int(rest[1]) + 1) * 8
			if n > len(rest) {
				return rxMalformed
			}
			next, rest = rest[0], rest[n:]
			continue
		case ip6Fragment:
			return rxGood
		}
		return verifyL4(tcpip.TransportProtocolNumber(next), h.SourceAddress(), h.DestinationAddress(), rest, true)
	}
}

// verifyL4 checks the checksum of the TCP or UDP segment l4; other
// protocols are left to gVisor (ICMP is always verified there).
func verifyL4(proto tcpip.TransportProtocolNumber, src, dst tcpip.Address, l4 []byte, v6 bool) rxVerdict {
	switch proto {
	case header.TCPProtocolNumber:
		if len(l4) < header.TCPMinimumSize {
			return rxMalformed
		}
	case header.UDPProtocolNumber:
		if len(l4) < header.UDPMinimumSize {
			return rxMalformed
		}
		if !v6 && binary.BigEndian.Uint16(l4[udpChecksumOffset:]) == 0 {
			return rxGood // IPv4 UDP sent without checksum (RFC 768)
		}
	default:
		return rxGood
	}
	if len(l4) > 0xffff {
		return rxMalformed
	}
	xsum := header.PseudoHeaderChecksum(proto, src, dst, uint16(len(l4)))
	if checksum.Checksum(l4, xsum) != 0xffff {
		return rxBadSum
	}
	return rxGood
}

// prepareTX sets the checksum flags and GSO request of the frame f for the
// outgoing packet pkt, when the NIC offloads checksums (txCsum): a TCP or
// UDP packet that is not an IP fragment gets the pseudo-header sum in its
// checksum field and ChecksumBlank, so that the NIC or its backend fills
// the checksum (gVisor left the field zero, or for GSO packets already
// holds the pseudo-header sum). IP fragments go with the checksum gVisor
// wrote (for IPv4 UDP that may be zero, meaning none).
func prepareTX(pkt *stack.PacketBuffer, f *Frame, txCsum bool) {
	if !txCsum {
		return
	}
	proto := pkt.TransportProtocolNumber
	var off int
	switch proto {
	case header.TCPProtocolNumber:
		off = header.TCPChecksumOffset
	case header.UDPProtocolNumber:
		off = udpChecksumOffset
	default:
		return
	}
	th := pkt.TransportHeader().Slice()
	if len(th) < off+2 {
		return
	}
	nh := pkt.NetworkHeader().Slice()
	var src, dst tcpip.Address
	switch pkt.NetworkProtocolNumber {
	case header.IPv4ProtocolNumber:
		if len(nh) < header.IPv4MinimumSize {
			return
		}
		h := header.IPv4(nh)
		if h.More() || h.FragmentOffset() != 0 {
			return
		}
		src, dst = h.SourceAddress(), h.DestinationAddress()
	case header.IPv6ProtocolNumber:
		// An IPv6 header followed by extension headers (a fragment
		// header) is left alone.
		if len(nh) != header.IPv6MinimumSize || header.IPv6(nh).NextHeader() != uint8(proto) {
			return
		}
		h := header.IPv6(nh)
		src, dst = h.SourceAddress(), h.DestinationAddress()
	default:
		return
	}
	l4len := len(th) + pkt.Data().Size()
	g := pkt.GSOOptions
	if g.Type == stack.GSOTCPv4 || g.Type == stack.GSOTCPv6 {
		// buildTCPHdr put the pseudo-header sum in when NeedsCsum.
		if !g.NeedsCsum {
			return
		}
		if pkt.Data().Size() > int(g.MSS) && g.MSS > 0 {
			f.GSO = GSO{Type: GSOTCPv4, Size: g.MSS}
			if g.Type == stack.GSOTCPv6 {
				f.GSO.Type = GSOTCPv6
			}
		}
		f.Flags |= ChecksumBlank
		return
	}
	if l4len > 0xffff {
		return
	}
	xsum := header.PseudoHeaderChecksum(proto, src, dst, uint16(l4len))
	binary.BigEndian.PutUint16(th[off:], xsum)
	f.Flags |= ChecksumBlank
}

// udpChecksumOffset is where the UDP checksum sits in a UDP header.
const udpChecksumOffset = 6
