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
