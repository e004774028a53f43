//go:build !tamago

package gntunix

import (
	"testing"

	"github.com/gozen-dev/gozen/gnttab"
)

func FuzzParseHeader(f *testing.F) {
	good := make([]byte, hdrFixed)
	header{owner: 5, npages: 1024, hdrPages: hdrPagesFor(1024)}.encode(good)
	f.Add(good, int64((3+1024)*gnttab.PageSize))
	f.Add(good[:10], int64(0))
	f.Fuzz(func(t *testing.T, b []byte, size int64) {
		h, err := parseHeader(b, size)
		if err != nil {
			return
		}
		if h.npages <= 0 || h.npages > MaxPages || h.hdrPages != hdrPagesFor(h.npages) {
			t.Fatalf("accepted bad header %+v", h)
		}
		if int64(h.hdrPages+h.npages)*gnttab.PageSize > size {
			t.Fatalf("accepted header %+v larger than the %d-byte file", h, size)
		}
		out := make([]byte, hdrFixed)
		h.encode(out)
		if h2, err := parseHeader(out, size); err != nil || h2 != h {
			t.Fatalf("round trip: %+v, %v; want %+v", h2, err, h)
		}
	})
}
