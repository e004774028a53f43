package blkif

import (
	"bytes"
	"errors"
	"reflect"
	"testing"

	"github.com/gozen-dev/gozen/gnttab"
)

func TestLayout(t *testing.T) {
	for _, tc := range []struct{ order, entries int }{{0, 32}, {1, 64}, {2, 128}, {3, 256}, {4, 512}} {
		if got := Layout.Entries(tc.order); got != tc.entries {
			t.Errorf("order %d: %d entries, want %d (Linux's BLK_RING_SIZE)", tc.order, got, tc.entries)
		}
	}
	if Layout.EntrySize() != RequestSize {
		t.Errorf("entry size %d", Layout.EntrySize())
	}
}

func TestRequestRoundTrip(t *testing.T) {
	segs := func(n int) []Segment {
		s := make([]Segment, n)
		for i := range s {
			s[i] = Segment{Ref: gnttab.Ref(100 + i), First: uint8(i % 8), Last: 7}
		}
		return s
	}
	for _, r := range []Request{
		{Op: OpRead, Handle: 51712, ID: 0x1122334455667788, Sector: 1 << 40, Segments: segs(1)},
		{Op: OpWrite, Handle: 1, ID: 7, Sector: 8, Segments: segs(MaxSegments)},
		{Op: OpFlushDiskCache, ID: 9, Segments: []Segment{}},
		{Op: OpWriteBarrier, ID: 10, Segments: segs(2)},
		{Op: OpDiscard, Handle: 3, ID: 11, Sector: 12, NrSectors: 1 << 33, Secure: true},
		{Op: OpDiscard, ID: 12, Sector: 0, NrSectors: 8},
		{Op: OpIndirect, IndirectOp: OpRead, Handle: 768, ID: 13, Sector: 99, NrSegments: 1, IndirectRefs: []gnttab.Ref{5}},
		{Op: OpIndirect, IndirectOp: OpWrite, ID: 14, NrSegments: MaxIndirectSegments, IndirectRefs: []gnttab.Ref{1, 2, 3, 4, 5, 6, 7, 8}},
		{Op: OpIndirect, IndirectOp: OpWrite, ID: 15, NrSegments: 513, IndirectRefs: []gnttab.Ref{1, 2}},
	} {
		b := bytes.Repeat([]byte{0xaa}, RequestSize+8)
		if err := r.Encode(b); err != nil {
			t.Fatalf("%+v: %v", r, err)
		}
		if b[RequestSize] != 0xaa {
			t.Errorf("%s: wrote past the request", r.Op)
		}
		got, err := DecodeRequest(b[:RequestSize])
		if err != nil {
			t.Fatalf("%+v: decode: %v", r, err)
		}
		if !reflect.DeepEqual(got, r) {
			t.Errorf("round trip:\n got %+v\nwant %+v", got, r)
		}
	}
}

func TestRequestWire(t *testing.T) {
	// Offsets of blkif.h's structures on x86_64.
	b := make([]byte, RequestSize)
	r := Request{Op: OpWrite, Handle: 0x0102, ID: 0x0807060504030201, Sector: 0x1817161514131211,
		Segments: []Segment{{Ref: 0x24232221, First: 1, Last: 6}, {Ref: 0x34333231, First: 0, Last: 7}}}
	if err := r.Encode(b); err != nil {
		t.Fatal(err)
	}
	want := []byte{1, 2, 0x02, 0x01, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18,
		0x21, 0x22, 0x23, 0x24, 1, 6, 0, 0, 0x31, 0x32, 0x33, 0x34, 0, 7, 0, 0}
	if !bytes.Equal(b[:len(want)], want) || !bytes.Equal(b[len(want):], make([]byte, RequestSize-len(want))) {
		t.Errorf("request bytes % x", b[:48])
	}
	ind := Request{Op: OpIndirect, IndirectOp: OpRead, NrSegments: 600, Handle: 0x0506, ID: 1, Sector: 2, IndirectRefs: []gnttab.Ref{0x44434241, 0x54535251}}
	if err := ind.Encode(b); err != nil {
		t.Fatal(err)
	}
	want = []byte{6, 0, 0x58, 0x02, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 6, 5, 0, 0, 0x41, 0x42, 0x43, 0x44, 0x51, 0x52, 0x53, 0x54}
	if !bytes.Equal(b[:len(want)], want) {
		t.Errorf("indirect bytes % x", b[:40])
	}
	d := Request{Op: OpDiscard, Secure: true, Handle: 0x0a0b, ID: 3, Sector: 4, NrSectors: 0x0102030405060708}
	if err := d.Encode(b); err != nil {
		t.Fatal(err)
	}
	want = []byte{5, 1, 0x0b, 0x0a, 0, 0, 0, 0, 3, 0, 0, 0, 0, 0, 0, 0, 4, 0, 0, 0, 0, 0, 0, 0, 8, 7, 6, 5, 4, 3, 2, 1}
	if !bytes.Equal(b[:len(want)], want) {
		t.Errorf("discard bytes % x", b[:32])
	}
	rb := make([]byte, ResponseSize)
	if err := (Response{ID: 0x0102030405060708, Op: OpIndirect, Status: StatusNotSupported}).Encode(rb); err != nil {
		t.Fatal(err)
	}
	if want := []byte{8, 7, 6, 5, 4, 3, 2, 1, 6, 0, 0xfe, 0xff, 0, 0, 0, 0}; !bytes.Equal(rb, want) {
		t.Errorf("response bytes % x", rb)
	}
}

func TestRequestMalformed(t *testing.T) {
	for _, tc := range []struct {
		name string
		b    func(b []byte)
	}{
		{"unknown op", func(b []byte) { b[0] = 4 }},
		{"op 200", func(b []byte) { b[0] = 200 }},
		{"12 segments", func(b []byte) { b[0], b[1] = 0, 12 }},
		{"255 segments", func(b []byte) { b[0], b[1] = 1, 255 }},
		{"read without segments", func(b []byte) { b[0], b[1] = 0, 0 }},
		{"first after last", func(b []byte) { b[0], b[1], b[28], b[29] = 0, 1, 5, 4 }},
		{"last sector 8", func(b []byte) { b[0], b[1], b[28], b[29] = 1, 1, 0, 8 }},
		{"indirect flush", func(b []byte) { b[0], b[1], b[2] = 6, 3, 1 }},
		{"indirect 0 segments", func(b []byte) { b[0], b[1], b[2], b[3] = 6, 0, 0, 0 }},
		{"indirect 4097 segments", func(b []byte) { b[0], b[1], b[2], b[3] = 6, 0, 0x01, 0x10 }},
	} {
		b := make([]byte, RequestSize)
		tc.b(b)
		if _, err := DecodeRequest(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
	if _, err := DecodeRequest(make([]byte, RequestSize-1)); !errors.Is(err, ErrMalformed) {
		t.Errorf("short: %v", err)
	}
	r := Request{Op: OpRead, Segments: make([]Segment, 12)}
	if err := r.Encode(make([]byte, RequestSize)); !errors.Is(err, ErrMalformed) {
		t.Errorf("encode of 12 segments: %v", err)
	}
}

func TestResponse(t *testing.T) {
	b := make([]byte, ResponseSize)
	for _, r := range []Response{{1, OpRead, StatusOK}, {^uint64(0), OpDiscard, StatusError}, {5, OpIndirect, StatusNotSupported}} {
		if err := r.Encode(b); err != nil {
			t.Fatal(err)
		}
		if got, err := DecodeResponse(b); err != nil || got != r {
			t.Errorf("%+v: %+v, %v", r, got, err)
		}
	}
	b[10], b[11] = 5, 0
	if _, err := DecodeResponse(b); !errors.Is(err, ErrMalformed) {
		t.Errorf("status 5: %v", err)
	}
	if _, err := DecodeResponse(b[:15]); !errors.Is(err, ErrMalformed) {
		t.Errorf("short: %v", err)
	}
}

func TestSegments(t *testing.T) {
	pages := [][]byte{make([]byte, gnttab.PageSize), make([]byte, gnttab.PageSize)}
	segs := make([]Segment, SegmentsPerPage+3)
	for i := range segs {
		segs[i] = Segment{Ref: gnttab.Ref(i), First: uint8(i % 4), Last: uint8(4 + i%4)}
	}
	if err := EncodeSegments(pages, segs); err != nil {
		t.Fatal(err)
	}
	got, err := DecodeSegments(pages, len(segs))
	if err != nil || !reflect.DeepEqual(got, segs) {
		t.Fatalf("round trip: %v", err)
	}
	if err := EncodeSegments(pages[:1], segs); err == nil {
		t.Error("encode into too few pages")
	}
	if _, err := DecodeSegments(pages[:1], len(segs)); !errors.Is(err, ErrMalformed) {
		t.Errorf("decode from too few pages: %v", err)
	}
	pages[1][2*SegmentSize+4] = 9
	if _, err := DecodeSegments(pages, len(segs)); !errors.Is(err, ErrMalformed) {
		t.Errorf("bad segment: %v", err)
	}
	if s := (Segment{First: 2, Last: 5}); s.Offset() != 1024 || s.Len() != 2048 {
		t.Errorf("offset %d len %d", s.Offset(), s.Len())
	}
}

func TestNames(t *testing.T) {
	if OpIndirect.String() != "indirect" || Op(9).String() != "op(9)" || StatusNotSupported.String() != "eopnotsupp" || Status(3).String() != "status(3)" {
		t.Error("names")
	}
}
