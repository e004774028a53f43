package gntxen

import (
	"encoding/binary"
	"errors"
	"testing"
)

// The seed corpora are in testdata/fuzz/Fuzz*/. Grant entries are shared
// with Xen, which sets GTF_reading/GTF_writing in them at any time; the
// targets check what Gozen's side does with any word it finds there.

// FuzzEntry checks GrantAccess and EndAccess on any prior entry word: a
// grant publishes exactly domid, frame and the permit and read-only flags;
// end of access refuses exactly while GTF_reading or GTF_writing is set,
// leaving the entry alone, and otherwise clears it.
func FuzzEntry(f *testing.F) {
	f.Add(uint64(0), uint16(0), uint32(0x1234), true)
	f.Add(EncodeEntry(GTFPermitAccess|GTFReadonly|GTFReading, 5, 0x1234), uint16(5), uint32(0x1234), false)
	f.Add(EncodeEntry(GTFPermitAccess|GTFWriting, 0x7ff0, 0xffffffff), uint16(0xffff), uint32(0xffffffff), false)
	f.Add(^uint64(0), uint16(1), uint32(1), true)
	f.Fuzz(func(t *testing.T, prior uint64, domid uint16, frame uint32, readonly bool) {
		e := prior
		GrantAccess(&e, domid, frame, readonly)
		wantFlags := uint16(GTFPermitAccess)
		if readonly {
			wantFlags |= GTFReadonly
		}
		if uint16(e) != wantFlags || uint16(e>>16) != domid || uint32(e>>32) != frame {
			t.Fatalf("GrantAccess(%d, %#x, %v) over %#x = %#x", domid, frame, readonly, prior, e)
		}
		if e != EncodeEntry(wantFlags, domid, frame) {
			t.Fatalf("GrantAccess wrote %#x, EncodeEntry gives %#x", e, EncodeEntry(wantFlags, domid, frame))
		}
		w := prior
		err := EndAccess(&w)
		busy := prior&(GTFReading|GTFWriting) != 0
		switch {
		case busy && (!errors.Is(err, ErrEntryBusy) || w != prior):
			t.Fatalf("EndAccess(%#x) = %v, entry %#x; want ErrEntryBusy, entry unchanged", prior, err, w)
		case !busy && (err != nil || w != 0):
			t.Fatalf("EndAccess(%#x) = %v, entry %#x; want success, entry 0", prior, err, w)
		}
	})
}

// FuzzEndAccessAll checks that a table of any entry words (8 bytes each,
// little-endian) is revoked all or none: on success every entry is 0; on
// ErrEntryBusy the busy entry is the first with GTF_reading/GTF_writing
// and every entry holds its word from before, read-only flag included.
func FuzzEndAccessAll(f *testing.F) {
	word := func(ws ...uint64) []byte {
		b := make([]byte, 8*len(ws))
		for i, w := range ws {
			binary.LittleEndian.PutUint64(b[8*i:], w)
		}
		return b
	}
	ro := func(dom uint16, frame uint32) uint64 { return EncodeEntry(GTFPermitAccess|GTFReadonly, dom, frame) }
	f.Add(word(ro(3, 0x100), ro(3, 0x101), ro(3, 0x102)|GTFReading))
	f.Add(word(ro(1, 0x300), EncodeEntry(GTFPermitAccess, 1, 0x301), ro(1, 0x302)|GTFWriting))
	f.Add(word(ro(2, 0x500), ro(2, 0x501)))
	f.Add(word(GTFReading, 0))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		n := len(data) / 8
		table := make([]uint64, n)
		for i := range table {
			table[i] = binary.LittleEndian.Uint64(data[8*i:])
		}
		before := append([]uint64(nil), table...)
		ptrs := make([]*uint64, n)
		for i := range table {
			ptrs[i] = &table[i]
		}
		firstBusy := n
		for i, w := range before {
			if w&(GTFReading|GTFWriting) != 0 {
				firstBusy = i
				break
			}
		}
		got, err := EndAccessAll(ptrs)
		if got != firstBusy || (err != nil) != (firstBusy < n) || err != nil && !errors.Is(err, ErrEntryBusy) {
			t.Fatalf("EndAccessAll = %d, %v; first busy entry %d of %d", got, err, firstBusy, n)
		}
		for i, w := range table {
			want := before[i]
			if err == nil {
				want = 0
			}
			if w != want {
				t.Fatalf("entry %d = %#x after EndAccessAll (%v), want %#x", i, w, err, want)
			}
		}
	})
}
