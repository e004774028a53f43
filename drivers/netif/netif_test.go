package netif

import (
	"bytes"
	"errors"
	"testing"
)

func TestLayouts(t *testing.T) {
	for _, tc := range []struct {
		name         string
		entry, order int
		entries      int
	}{
		{"tx", TxLayout.EntrySize(), 0, TxLayout.Entries(0)},
		{"rx", RxLayout.EntrySize(), 0, RxLayout.Entries(0)},
	} {
		// Linux: NET_TX_RING_SIZE and NET_RX_RING_SIZE are 256 on 4 KiB pages.
		if tc.entries != 256 {
			t.Errorf("%s ring of one page: %d entries, want 256", tc.name, tc.entries)
		}
	}
	if TxLayout.EntrySize() != 12 || RxLayout.EntrySize() != 8 {
		t.Errorf("entry sizes %d, %d; want 12, 8", TxLayout.EntrySize(), RxLayout.EntrySize())
	}
}

func TestEncoding(t *testing.T) {
	for _, tc := range []struct {
		name string
		enc  func([]byte) error
		want []byte
	}{
		{"tx request", TxRequest{Gref: 0x01020304, Offset: 0x0506, Flags: TxMoreData | TxCsumBlank, ID: 0x0708, Size: 0x090a}.Encode,
			[]byte{4, 3, 2, 1, 6, 5, 5, 0, 8, 7, 0xa, 9}},
		{"tx response", TxResponse{ID: 0x0102, Status: RspDropped}.Encode, []byte{2, 1, 0xfe, 0xff}},
		{"rx request", RxRequest{ID: 0x0102, Gref: 0x03040506}.Encode, []byte{2, 1, 0, 0, 6, 5, 4, 3}},
		{"rx response", RxResponse{ID: 1, Offset: 2, Flags: RxExtraInfo | RxDataValidated, Status: 1500}.Encode, []byte{1, 0, 2, 0, 9, 0, 0xdc, 5}},
		{"gso extra", GSOExtra(1448, GSOTCPv6, 0).Encode, []byte{1, 0, 0xa8, 5, 2, 0, 0, 0}},
	} {
		b := bytes.Repeat([]byte{0xee}, len(tc.want))
		if err := tc.enc(b); err != nil || !bytes.Equal(b, tc.want) {
			t.Errorf("%s: % x, %v; want % x", tc.name, b, err, tc.want)
		}
		if err := tc.enc(b[:len(b)-1]); !errors.Is(err, ErrShort) {
			t.Errorf("%s into a short buffer: %v", tc.name, err)
		}
	}
	e, _ := DecodeExtra([]byte{1, 1, 0xa8, 5, 1, 0, 0, 0})
	if size, typ, _ := e.GSO(); size != 1448 || typ != GSOTCPv4 || !e.More() {
		t.Errorf("GSO extra %+v: %d %v more=%v", e, size, typ, e.More())
	}
	for _, dec := range []func([]byte) error{
		func(b []byte) error { _, err := DecodeTxRequest(b); return err },
		func(b []byte) error { _, err := DecodeTxResponse(b); return err },
		func(b []byte) error { _, err := DecodeRxRequest(b); return err },
		func(b []byte) error { _, err := DecodeRxResponse(b); return err },
		func(b []byte) error { _, err := DecodeExtra(b); return err },
	} {
		if err := dec([]byte{1, 2, 3}); !errors.Is(err, ErrShort) {
			t.Errorf("short decode: %v", err)
		}
	}
	if GSOTCPv4.String() != "tcpv4" || GSOType(9).String() != "gso(9)" {
		t.Error("GSOType.String")
	}
}

// TestFlowHash checks that a flow's frames hash alike whatever their
// payload, that ports and addresses matter, and non-IP frames hash to 0.
func TestFlowHash(t *testing.T) {
	frame := func(src, dst byte, sport, dport uint16, proto byte, payload int) []byte {
		b := make([]byte, 14+20+8+payload)
		b[12], b[13] = 0x08, 0x00
		b[14], b[14+9] = 0x45, proto
		b[14+15], b[14+19] = src, dst
		b[34], b[35], b[36], b[37] = byte(sport>>8), byte(sport), byte(dport>>8), byte(dport)
		for i := range payload {
			b[42+i] = byte(i * 7)
		}
		return b
	}
	base := FlowHash(frame(1, 2, 1000, 80, 6, 0))
	if h := FlowHash(frame(1, 2, 1000, 80, 6, 1400)); h != base {
		t.Error("payload changed the hash")
	}
	distinct := map[uint32]bool{}
	for port := range uint16(64) {
		distinct[FlowHash(frame(1, 2, 1000+port, 80, 6, 10))] = true
	}
	if len(distinct) < 60 {
		t.Errorf("%d distinct hashes of 64 flows", len(distinct))
	}
	queues := map[uint32]bool{}
	for port := range uint16(64) {
		queues[FlowHash(frame(1, 2, 1000+port, 80, 6, 10))%4] = true
	}
	if len(queues) != 4 {
		t.Errorf("64 flows over %d of 4 queues", len(queues))
	}
	if FlowHash(frame(1, 2, 1000, 80, 6, 0)) == FlowHash(frame(1, 3, 1000, 80, 6, 0)) {
		t.Error("addresses do not matter")
	}
	arp := make([]byte, 42)
	arp[12], arp[13] = 0x08, 0x06
	if FlowHash(arp) != 0 || FlowHash(nil) != 0 {
		t.Error("non-IP frame hashed")
	}
	// A non-first fragment hashes by addresses only.
	frag := frame(1, 2, 1000, 80, 17, 0)
	frag[14+6], frag[14+7] = 0, 100
	frag2 := frame(1, 2, 2000, 90, 17, 0)
	frag2[14+6], frag2[14+7] = 0, 100
	if FlowHash(frag) != FlowHash(frag2) {
		t.Error("ports read from a non-first fragment")
	}
}
