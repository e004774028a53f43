//go:build linux

package main

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// ErrNoChecksum means a frame marked checksum-blank is not a TCP or UDP
// packet whose checksum can be filled in (malformed, truncated, an IP
// fragment, another protocol).
var ErrNoChecksum = errors.New("gozen-backend: cannot complete the checksum")

// Ethernet and IP numbers used by completeChecksum.
const (
	etherHeaderLen = 14
	etherTypeIPv4  = 0x0800
	etherTypeIPv6  = 0x86dd
	etherTypeVLAN  = 0x8100
	etherTypeQinQ  = 0x88a8
	protoTCP       = 6
	protoUDP       = 17
	ip6HopByHop    = 0
	ip6Routing     = 43
	ip6Fragment    = 44
	ip6DestOpts    = 60
)

// completeChecksum fills in the TCP or UDP checksum of the Ethernet frame
// f, which its sender left blank (netif's csum_blank: the field may hold
// the pseudo-header sum or anything; it is recomputed from scratch, as
// Linux's netback does with skb_checksum_setup). The frame comes from the
// guest: every length is checked against f before use; a frame that is
// not a whole TCP or UDP packet over IPv4 or IPv6 (one VLAN tag allowed)
// is left unchanged and the error wraps ErrNoChecksum.
func completeChecksum(f []byte) error {
	fail := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrNoChecksum, fmt.Sprintf(format, args...))
	}
	if len(f) < etherHeaderLen {
		return fail("frame of %d bytes", len(f))
	}
	et, off := binary.BigEndian.Uint16(f[12:]), etherHeaderLen
	if et == etherTypeVLAN || et == etherTypeQinQ {
		if len(f) < off+4 {
			return fail("truncated VLAN tag")
		}
		et, off = binary.BigEndian.Uint16(f[16:]), off+4
	}
	ip := f[off:]
	var (
		proto  byte
		l4     []byte
		pseudo uint32
	)
	switch et {
	case etherTypeIPv4:
		if len(ip) < 20 || ip[0]>>4 != 4 {
			return fail("truncated or not IPv4")
		}
		ihl, total := int(ip[0]&15)*4, int(binary.BigEndian.Uint16(ip[2:]))
		if ihl < 20 || total < ihl || total > len(ip) {
			return fail("IPv4 header length %d, total length %d of %d bytes", ihl, total, len(ip))
		}
		if binary.BigEndian.Uint16(ip[6:])&0x3fff != 0 {
			return fail("IPv4 fragment")
		}
		proto, l4 = ip[9], ip[ihl:total]
		pseudo = sum16(ip[12:20], 0)
	case etherTypeIPv6:
		if len(ip) < 40 || ip[0]>>4 != 6 {
			return fail("truncated or not IPv6")
		}
		total := 40 + int(binary.BigEndian.Uint16(ip[4:]))
		if total > len(ip) {
			return fail("IPv6 payload of %d bytes in %d", total-40, len(ip)-40)
		}
		next, rest := ip[6], ip[40:total]
		for next == ip6HopByHop || next == ip6Routing || next == ip6DestOpts {
			if len(rest) < 2 || (int(rest[1])+1)*8 > len(rest) {
				return fail("truncated IPv6 extension header")
			}
			next, rest = rest[0], rest[(int(rest[1])+1)*8:]
		}
		if next == ip6Fragment {
			return fail("IPv6 fragment")
		}
		proto, l4 = next, rest
		pseudo = sum16(ip[8:40], 0)
	default:
		return fail("ethertype %#04x", et)
	}
	var at int
	switch proto {
	case protoTCP:
		if len(l4) < 20 {
			return fail("TCP segment of %d bytes", len(l4))
		}
		at = 16
	case protoUDP:
		if len(l4) < 8 {
			return fail("UDP datagram of %d bytes", len(l4))
		}
		at = 6
	default:
		return fail("IP protocol %d", proto)
	}
	pseudo += uint32(proto) + uint32(len(l4)>>16) + uint32(len(l4)&0xffff)
	l4[at], l4[at+1] = 0, 0
	c := ^fold(sum16(l4, pseudo))
	if c == 0 && proto == protoUDP {
		c = 0xffff // 0 means "no checksum" in UDP
	}
	binary.BigEndian.PutUint16(l4[at:], c)
	return nil
}

// sum16 adds b as big-endian 16-bit words (a last odd byte padded with
// zero) to acc, without folding.
func sum16(b []byte, acc uint32) uint32 {
	s := uint64(acc)
	for len(b) >= 2 {
		s += uint64(binary.BigEndian.Uint16(b))
		b = b[2:]
	}
	if len(b) == 1 {
		s += uint64(b[0]) << 8
	}
	for s>>32 != 0 {
		s = s&0xffffffff + s>>32
	}
	return uint32(s)
}

// fold folds a 32-bit one's complement sum into 16 bits.
func fold(s uint32) uint16 {
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return uint16(s)
}
