package evunix

import (
	"bytes"
	"testing"
)

func FuzzDecode(f *testing.F) {
	var b [msgSize]byte
	message{op: opNotify, from: 3, dst: 7, src: 9}.encode(&b)
	f.Add(b[:])
	message{op: opBind, from: 1, dst: 1, src: 2, seq: 77}.encode(&b)
	f.Add(b[:])
	f.Add([]byte("GzEv"))
	f.Fuzz(func(t *testing.T, in []byte) {
		m, err := decode(in)
		if err != nil {
			return
		}
		var out [msgSize]byte
		m.encode(&out)
		if !bytes.Equal(out[:], in) {
			t.Fatalf("decode(%x) = %+v, which encodes to %x", in, m, out)
		}
	})
}

func TestDecodeRejects(t *testing.T) {
	var good [msgSize]byte
	message{op: opNotify, from: 3, dst: 7, src: 9}.encode(&good)
	tests := []struct {
		name   string
		mangle func(b []byte) []byte
	}{
		{"short", func(b []byte) []byte { return b[:msgSize-1] }},
		{"long", func(b []byte) []byte { return append(b, 0) }},
		{"magic", func(b []byte) []byte { b[0] ^= 1; return b }},
		{"op zero", func(b []byte) []byte { b[4] = 0; return b }},
		{"op past the last", func(b []byte) []byte { b[4] = opClose + 1; return b }},
		{"reserved", func(b []byte) []byte { b[5] = 1; return b }},
		{"from DomIDSelf", func(b []byte) []byte { b[6], b[7] = 0xf0, 0x7f; return b }},
	}
	if _, err := decode(good[:]); err != nil {
		t.Fatalf("good message: %v", err)
	}
	for _, tc := range tests {
		b := tc.mangle(append([]byte(nil), good[:]...))
		if m, err := decode(b); err == nil {
			t.Errorf("%s: decoded as %+v", tc.name, m)
		}
	}
}
