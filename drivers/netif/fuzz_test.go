package netif

import (
	"bytes"
	"testing"
)

// roundTrip decodes b with dec, encodes the result again and checks that
// the bytes come back (the rx request's padding excepted).
func roundTrip[T interface{ Encode([]byte) error }](t *testing.T, name string, b []byte, size int, dec func([]byte) (T, error), mask []byte) {
	v, err := dec(b)
	if len(b) < size {
		if err == nil {
			t.Fatalf("%s: decoded %d bytes", name, len(b))
		}
		return
	}
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	out := make([]byte, size)
	if err := v.Encode(out); err != nil {
		t.Fatalf("%s: encode: %v", name, err)
	}
	in := bytes.Clone(b[:size])
	for i := range mask {
		in[i] &= mask[i]
	}
	if !bytes.Equal(in, out) {
		t.Fatalf("%s: % x became % x", name, in, out)
	}
}

func FuzzDecode(f *testing.F) {
	f.Add([]byte{4, 3, 2, 1, 6, 5, 5, 0, 8, 7, 0xa, 9})
	f.Add([]byte{1, 0, 2, 0, 9, 0, 0xdc, 5})
	f.Add([]byte{1, 1, 0xa8, 5, 2, 0, 0, 0})
	f.Add([]byte{1})
	f.Fuzz(func(t *testing.T, b []byte) {
		roundTrip(t, "tx request", b, TxRequestSize, DecodeTxRequest, nil)
		roundTrip(t, "tx response", b, TxResponseSize, DecodeTxResponse, nil)
		roundTrip(t, "rx request", b, RxRequestSize, DecodeRxRequest, []byte{0xff, 0xff, 0, 0, 0xff, 0xff, 0xff, 0xff})
		roundTrip(t, "rx response", b, RxResponseSize, DecodeRxResponse, nil)
		roundTrip(t, "extra", b, ExtraInfoSize, DecodeExtra, nil)
		if e, err := DecodeExtra(b); err == nil && e.Type == ExtraGSO {
			size, typ, feat := e.GSO()
			g := GSOExtra(size, typ, feat)
			g.Flags = e.Flags
			g.U[3] = e.U[3] // pad
			if g != e {
				t.Fatalf("GSO extra %+v rebuilt as %+v", e, g)
			}
		}
	})
}

// FuzzFlowHash hashes arbitrary frames: no panic, the same hash for the
// same bytes, and bytes past the IP and transport headers do not matter.
func FuzzFlowHash(f *testing.F) {
	tcp4 := make([]byte, 14+20+20+10)
	tcp4[12], tcp4[13] = 0x08, 0x00
	tcp4[14], tcp4[14+9] = 0x45, 6
	copy(tcp4[14+12:], []byte{10, 0, 0, 1, 10, 0, 0, 2, 0x1f, 0x90, 0xc3, 0x50})
	f.Add(tcp4)
	udp6 := make([]byte, 14+40+8)
	udp6[12], udp6[13] = 0x86, 0xdd
	udp6[14], udp6[14+6] = 0x60, 17
	udp6[14+8+15], udp6[14+24+15], udp6[14+40+1] = 1, 2, 53
	f.Add(udp6)
	vlan := append([]byte{}, tcp4[:12]...)
	vlan = append(vlan, 0x81, 0x00, 0, 5)
	vlan = append(vlan, tcp4[12:]...)
	f.Add(vlan)
	f.Add([]byte{})
	f.Add(make([]byte, 14))
	f.Fuzz(func(t *testing.T, b []byte) {
		h := FlowHash(b)
		if FlowHash(append([]byte{}, b...)) != h {
			t.Fatal("hash not deterministic")
		}
		// Ethernet, a tag, the longest IPv4 header and the ports.
		if len(b) >= 14+4+60+4 && FlowHash(append(append([]byte{}, b...), make([]byte, 64)...)) != h {
			t.Fatal("bytes past the headers changed the hash")
		}
	})
}
