package blkif

import (
	"bytes"
	"errors"
	"testing"

	"github.com/gozen-dev/gozen/gnttab"
)

// FuzzDecodeRequest decodes any entry; what decodes must encode back to
// the same meaning.
func FuzzDecodeRequest(f *testing.F) {
	for _, r := range []Request{
		{Op: OpRead, ID: 1, Sector: 2, Segments: []Segment{{Ref: 3, First: 0, Last: 7}}},
		{Op: OpDiscard, ID: 4, NrSectors: 9, Secure: true},
		{Op: OpIndirect, IndirectOp: OpWrite, NrSegments: 600, IndirectRefs: []gnttab.Ref{1, 2}},
		{Op: OpFlushDiskCache},
	} {
		b := make([]byte, RequestSize)
		r.Encode(b)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := DecodeRequest(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error not wrapping ErrMalformed: %v", err)
			}
			return
		}
		out := make([]byte, RequestSize)
		if err := r.Encode(out); err != nil {
			t.Fatalf("decoded %+v does not encode: %v", r, err)
		}
		r2, err := DecodeRequest(out)
		if err != nil {
			t.Fatalf("re-decode: %v", err)
		}
		out2 := make([]byte, RequestSize)
		r2.Encode(out2)
		if !bytes.Equal(out, out2) {
			t.Fatalf("not stable: % x vs % x", out, out2)
		}
	})
}

// FuzzDecodeResponse decodes any response.
func FuzzDecodeResponse(f *testing.F) {
	b := make([]byte, ResponseSize)
	Response{ID: 7, Op: OpWrite, Status: StatusError}.Encode(b)
	f.Add(b)
	f.Add([]byte{1, 2, 3})
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := DecodeResponse(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error not wrapping ErrMalformed: %v", err)
			}
			return
		}
		out := make([]byte, ResponseSize)
		r.Encode(out)
		if r2, err := DecodeResponse(out); err != nil || r2 != r {
			t.Fatalf("round trip %+v: %+v %v", r, r2, err)
		}
	})
}

// FuzzDecodeSegments reads a segment count and indirect page contents.
func FuzzDecodeSegments(f *testing.F) {
	f.Add(uint16(3), []byte{1, 0, 0, 0, 0, 7, 0, 0, 2, 0, 0, 0, 3, 4})
	f.Add(uint16(600), []byte{})
	f.Fuzz(func(t *testing.T, n uint16, data []byte) {
		pages := make([][]byte, MaxIndirectPages)
		for i := range pages {
			pages[i] = make([]byte, gnttab.PageSize)
			copy(pages[i], data[min(len(data), i*gnttab.PageSize):])
		}
		segs, err := DecodeSegments(pages, int(n))
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error not wrapping ErrMalformed: %v", err)
			}
			return
		}
		for _, s := range segs {
			if s.Offset()+s.Len() > gnttab.PageSize || s.Len() <= 0 {
				t.Fatalf("segment %+v leaves its page", s)
			}
		}
	})
}
