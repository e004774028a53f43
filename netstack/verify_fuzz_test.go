package netstack

import (
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// FuzzVerifyRX feeds arbitrary IP packets to the receive-side checksum
// check, which reads lengths and extension headers from them: it must
// never panic, and what it passes as IPv4 must have a valid header
// checksum.
func FuzzVerifyRX(f *testing.F) {
	f.Add(true, []byte("E\x00\x00\x1d\x00\x00\x00\x00@\x11\x00\x00\n\x00\x00\x01\n\x00\x00\x02\x04\xd2#(\x00\t\x00\x00x"))
	f.Add(false, append([]byte("`\x00\x00\x00\x00\x10\x00\xff"), make([]byte, 48)...))
	f.Fuzz(func(t *testing.T, v4 bool, b []byte) {
		proto := tcpip.NetworkProtocolNumber(header.IPv6ProtocolNumber)
		if v4 {
			proto = header.IPv4ProtocolNumber
		}
		if verifyRX(proto, b) == rxGood && v4 {
			h := header.IPv4(b)
			if len(b) < header.IPv4MinimumSize || !header.IPv4(b[:h.HeaderLength()]).IsChecksumValid() {
				t.Fatalf("passed an IPv4 packet with a bad header % x", b)
			}
		}
	})
}
