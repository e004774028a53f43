//go:build linux

package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// frameSpec describes a test frame.
type frameSpec struct {
	vlan  bool
	v6    bool
	ext   int  // IPv6 hop-by-hop options headers of 8 bytes before L4
	frag  bool // an IPv4 fragment / IPv6 fragment header
	proto byte
	l4len int // bytes of the L4 header and payload
}

// build makes an Ethernet frame of spec s whose L4 checksum field holds
// junk (0xbeef), as a csum_blank frame may.
func build(s frameSpec) []byte {
	f := []byte{2, 0, 0, 0, 0, 1, 2, 0, 0, 0, 0, 2}
	et := uint16(etherTypeIPv4)
	if s.v6 {
		et = etherTypeIPv6
	}
	if s.vlan {
		f = binary.BigEndian.AppendUint16(f, etherTypeVLAN)
		f = binary.BigEndian.AppendUint16(f, 5)
	}
	f = binary.BigEndian.AppendUint16(f, et)
	l4 := make([]byte, s.l4len)
	for i := range l4 {
		l4[i] = byte(i*7 + 3)
	}
	at := 16
	if s.proto == protoUDP {
		at = 6
		binary.BigEndian.PutUint16(l4[4:], uint16(len(l4)))
	}
	if len(l4) >= at+2 {
		binary.BigEndian.PutUint16(l4[at:], 0xbeef)
	}
	if !s.v6 {
		ip := make([]byte, 20)
		ip[0], ip[8], ip[9] = 0x45, 64, s.proto
		binary.BigEndian.PutUint16(ip[2:], uint16(20+len(l4)))
		if s.frag {
			binary.BigEndian.PutUint16(ip[6:], 0x2000) // MF
		}
		copy(ip[12:], []byte{10, 0, 0, 1, 10, 0, 0, 2})
		binary.BigEndian.PutUint16(ip[10:], ^checksum.Checksum(ip, 0))
		return append(append(f, ip...), l4...)
	}
	ip := make([]byte, 40)
	ip[0], ip[7] = 0x60, 64
	for i := 8; i < 40; i++ {
		ip[i] = byte(i)
	}
	next := s.proto
	var exts []byte
	if s.frag {
		exts = append([]byte{next, 0, 0, 0, 0, 0, 0, 1}, exts...)
		next = ip6Fragment
	}
	for range s.ext {
		exts = append([]byte{next, 0, 1, 4, 0, 0, 0, 0}, exts...)
		next = ip6HopByHop
	}
	ip[6] = next
	binary.BigEndian.PutUint16(ip[4:], uint16(len(exts)+len(l4)))
	return append(append(append(f, ip...), exts...), l4...)
}

// validL4 checks the frame's L4 checksum with gVisor's code.
func validL4(t *testing.T, f []byte, s frameSpec) {
	t.Helper()
	off := 14
	if s.vlan {
		off += 4
	}
	ip := f[off:]
	var src, dst tcpip.Address
	var l4 []byte
	if s.v6 {
		src, dst = tcpip.AddrFrom16Slice(ip[8:24]), tcpip.AddrFrom16Slice(ip[24:40])
		l4 = ip[40+8*s.ext:]
	} else {
		src, dst = tcpip.AddrFrom4Slice(ip[12:16]), tcpip.AddrFrom4Slice(ip[16:20])
		l4 = ip[20:]
	}
	sum := header.PseudoHeaderChecksum(tcpip.TransportProtocolNumber(s.proto), src, dst, uint16(len(l4)))
	if got := checksum.Checksum(l4, sum); got != 0xffff {
		t.Errorf("checksum does not verify: sum %#x", got)
	}
}

func TestCompleteChecksum(t *testing.T) {
	for _, tc := range []struct {
		name string
		s    frameSpec
		ok   bool
	}{
		{"ipv4 tcp", frameSpec{proto: protoTCP, l4len: 20 + 1000}, true},
		{"ipv4 tcp odd", frameSpec{proto: protoTCP, l4len: 20 + 333}, true},
		{"ipv4 udp", frameSpec{proto: protoUDP, l4len: 8 + 512}, true},
		{"ipv4 udp in a vlan", frameSpec{vlan: true, proto: protoUDP, l4len: 8 + 51}, true},
		{"ipv6 tcp", frameSpec{v6: true, proto: protoTCP, l4len: 20 + 1400}, true},
		{"ipv6 udp after two hop-by-hop headers", frameSpec{v6: true, ext: 2, proto: protoUDP, l4len: 8 + 99}, true},
		{"ipv4 fragment", frameSpec{frag: true, proto: protoUDP, l4len: 8 + 100}, false},
		{"ipv6 fragment", frameSpec{v6: true, frag: true, proto: protoUDP, l4len: 8 + 100}, false},
		{"icmp", frameSpec{proto: 1, l4len: 64}, false},
		{"short tcp", frameSpec{proto: protoTCP, l4len: 19}, false},
		{"short udp", frameSpec{v6: true, proto: protoUDP, l4len: 7}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := build(tc.s)
			orig := bytes.Clone(f)
			err := completeChecksum(f)
			if tc.ok {
				if err != nil {
					t.Fatal(err)
				}
				validL4(t, f, tc.s)
				return
			}
			if !errors.Is(err, ErrNoChecksum) {
				t.Errorf("error %v, want ErrNoChecksum", err)
			}
			if !bytes.Equal(f, orig) {
				t.Errorf("a refused frame was changed")
			}
		})
	}
	for _, tc := range []struct {
		name string
		mod  func([]byte) []byte
	}{
		{"empty", func([]byte) []byte { return nil }},
		{"arp", func(f []byte) []byte { f[12], f[13] = 8, 6; return f }},
		{"ipv4 total length beyond the frame", func(f []byte) []byte { return f[:len(f)-1] }},
		{"ipv4 header length 4", func(f []byte) []byte { f[14] = 0x41; return f }},
		{"ipv4 total below the header", func(f []byte) []byte { f[16], f[17] = 0, 10; return f }},
		{"truncated vlan", func(f []byte) []byte { f[12], f[13] = 0x81, 0; return f[:16] }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := tc.mod(build(frameSpec{proto: protoTCP, l4len: 40}))
			if err := completeChecksum(f); !errors.Is(err, ErrNoChecksum) {
				t.Errorf("error %v, want ErrNoChecksum", err)
			}
		})
	}
}

// FuzzCompleteChecksum feeds arbitrary frames: never a panic; a frame it
// accepts changes in its two checksum bytes at most, and completing it
// again changes nothing.
func FuzzCompleteChecksum(f *testing.F) {
	for _, s := range []frameSpec{
		{proto: protoTCP, l4len: 40}, {proto: protoUDP, l4len: 9}, {vlan: true, v6: true, ext: 1, proto: protoTCP, l4len: 30},
		{v6: true, frag: true, proto: protoUDP, l4len: 8},
	} {
		f.Add(build(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		orig := bytes.Clone(b)
		if err := completeChecksum(b); err != nil {
			if !bytes.Equal(b, orig) {
				t.Fatalf("refused frame changed: %v", err)
			}
			return
		}
		diff := 0
		for i := range b {
			if b[i] != orig[i] {
				diff++
			}
		}
		if diff > 2 {
			t.Fatalf("%d bytes changed", diff)
		}
		again := bytes.Clone(b)
		if err := completeChecksum(again); err != nil || !bytes.Equal(again, b) {
			t.Fatalf("not idempotent: %v", err)
		}
	})
}
