//go:build linux

package main

import (
	"encoding/binary"
	"testing"
)

func TestEchoRequest(t *testing.T) {
	for _, tc := range []struct {
		id, seq uint16
		sum     uint16
	}{
		{0x1234, 1, 0xe5ca},
		{0, 0, 0xf7ff},
		{0xffff, 0xffff, 0xf7ff},
	} {
		b := echoRequest(tc.id, tc.seq)
		if got := binary.BigEndian.Uint16(b[2:]); got != tc.sum {
			t.Errorf("id %#x seq %#x: checksum %#04x, want %#04x", tc.id, tc.seq, got, tc.sum)
		}
		if v := icmpChecksum(b); v != 0 {
			t.Errorf("id %#x seq %#x: the packet does not verify (%#04x)", tc.id, tc.seq, v)
		}
		if b[0] != 8 || binary.BigEndian.Uint16(b[4:]) != tc.id || binary.BigEndian.Uint16(b[6:]) != tc.seq {
			t.Errorf("bad header % x", b[:8])
		}
	}
	if got := icmpChecksum([]byte{0x01}); got != ^uint16(0x0100) {
		t.Errorf("odd length: %#04x", got)
	}
}
