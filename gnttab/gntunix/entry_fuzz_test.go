//go:build !tamago

package gntunix

import (
	"encoding/binary"
	"errors"
	"testing"
	"unsafe"

	"github.com/gozen-dev/gozen/domid"
	"github.com/gozen-dev/gozen/gnttab"
)

// fuzzTable returns a table whose entries are the little-endian words of
// data (at most 64), as a hostile peer could have written them.
func fuzzTable(data []byte) (*table, []uint64) {
	n := min(len(data)/8, 64)
	words := make([]uint64, hdrFixed/8+n+1) // 8-byte aligned for the atomics
	for i := range n {
		words[hdrFixed/8+i] = binary.LittleEndian.Uint64(data[8*i:])
	}
	hdr := unsafe.Slice((*byte)(unsafe.Pointer(&words[0])), 8*len(words))
	return &table{hdr: hdr, header: header{npages: n}}, words[hdrFixed/8 : hdrFixed/8+n+1]
}

// FuzzPin decodes a peer's grant entries the way Map and the copies do
// (pin, then unpin), over any words the peer may have written (seed corpus
// in testdata/fuzz/FuzzPin). pin must succeed exactly for an in-range ref
// granted to us, writable if asked, not being revoked and not mapped
// 2^32-1 times, and then add exactly one to its map count; a refusal
// wraps a gnttab error and changes nothing; unpin undoes pin and never
// takes a count below zero.
func FuzzPin(f *testing.F) {
	word := func(ws ...uint64) []byte {
		b := make([]byte, 8*len(ws))
		for i, w := range ws {
			binary.LittleEndian.PutUint64(b[8*i:], w)
		}
		return b
	}
	f.Add(word(entryGranted|entryWritable|2, entryGranted|2), uint16(2), uint32(0), true)
	f.Add(word(entryGranted|2, entryGranted|entryWritable|3), uint16(2), uint32(0), true)
	f.Add(word(entryGranted|entryWritable|2, entryGranted|3), uint16(2), uint32(1), false)
	f.Add(word(entryGranted|2|0xffffffff<<entryMapShift), uint16(2), uint32(0), false)
	f.Add(word(entryGranted|2|entryRevoking), uint16(2), uint32(0), false)
	f.Add(word(2), uint16(2), uint32(0), false)
	f.Add(word(entryGranted|2), uint16(2), uint32(1<<31), false)
	f.Fuzz(func(t *testing.T, data []byte, self uint16, ref uint32, writable bool) {
		tab, entries := fuzzTable(data)
		before := append([]uint64(nil), entries...)
		r := gnttab.Ref(ref)
		err := pin(tab, domid.ID(self), r, writable)
		var w uint64
		inRange := int64(ref) < int64(tab.npages)
		if inRange {
			w = before[ref]
		}
		ok := inRange && w&entryGranted != 0 && uint16(w&entryRemote) == self &&
			(!writable || w&entryWritable != 0) && w>>entryMapShift != 0xffffffff && w&entryRevoking == 0
		if (err == nil) != ok {
			t.Fatalf("pin(self %d, ref %d of %d, writable %v) on %#x = %v, want success %v", self, ref, tab.npages, writable, w, err, ok)
		}
		if err != nil {
			if !errors.Is(err, gnttab.ErrBadRef) && !errors.Is(err, gnttab.ErrReadOnly) && !errors.Is(err, gnttab.ErrNoSpace) {
				t.Fatalf("pin refused with %v, which wraps no gnttab error", err)
			}
			for i := range entries {
				if entries[i] != before[i] {
					t.Fatalf("refused pin changed entry %d: %#x -> %#x", i, before[i], entries[i])
				}
			}
			return
		}
		if entries[ref] != w+entryMapOne {
			t.Fatalf("pin of %#x left %#x, want the map count one higher", w, entries[ref])
		}
		unpin(tab, r)
		for i := range entries {
			if entries[i] != before[i] {
				t.Fatalf("pin then unpin changed entry %d: %#x -> %#x", i, before[i], entries[i])
			}
		}
		// unpin alone never takes a count below zero
		unpin(tab, r)
		if want := w - entryMapOne; w>>entryMapShift == 0 && entries[ref] != w || w>>entryMapShift != 0 && entries[ref] != want {
			t.Fatalf("unpin of %#x left %#x", w, entries[ref])
		}
	})
}
