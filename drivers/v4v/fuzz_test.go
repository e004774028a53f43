package v4v

import (
	"errors"
	"testing"
)

// FuzzRingReader gives the reader arbitrary ring memory and pointers: it
// must never panic or read outside the ring, must report only ErrEmpty or
// ErrCorrupt, and what it returns must be consistent.
func FuzzRingReader(f *testing.F) {
	// A well-formed ring: three messages, the last one wrapping.
	r := testRing(f, 128)
	r.SetRx(48)
	r.SetTx(48)
	put(r, Addr{Domain: 1, Port: 2}, 3, []byte("hello"))
	put(r, Addr{Domain: 4, Port: 5}, 6, make([]byte, 20))
	f.Add(uint8(5), uint32(48), r.Tx(), uint16(64), append([]byte(nil), r.Data()...))
	f.Add(uint8(0), uint32(0), uint32(16), uint16(8), []byte{16, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 3, 0, 0, 0})
	f.Add(uint8(0), uint32(0), uint32(32), uint16(8), []byte{0xff, 0xff, 0xff, 0xff})
	f.Add(uint8(1), uint32(16), uint32(0), uint16(100), []byte{15})
	f.Add(uint8(3), uint32(7), uint32(1000), uint16(0), []byte{})

	f.Fuzz(func(t *testing.T, sizeSel uint8, rx, tx uint32, bufLen uint16, data []byte) {
		size := MinRingSize + SlotSize*int(sizeSel%64)
		r := testRing(t, size)
		d := r.Data()
		if len(data) > 0 {
			for i := range d {
				d[i] = data[i%len(data)]
			}
		}
		r.SetRx(rx)
		r.SetTx(tx)
		p := make([]byte, int(bufLen)%(size+8))
		for range size/SlotSize + 2 {
			before := r.Rx()
			m, perr := r.Peek()
			n, m2, err := r.CopyOut(p, true)
			if (perr == nil) != (err == nil) || (err == nil && m != m2) {
				t.Fatalf("Peek %+v, %v disagrees with CopyOut %+v, %v", m, perr, m2, err)
			}
			if err != nil {
				if !errors.Is(err, ErrEmpty) && !errors.Is(err, ErrCorrupt) {
					t.Fatalf("unexpected error %v", err)
				}
				if errors.Is(err, ErrCorrupt) && r.Rx() != before {
					t.Fatalf("corrupt ring consumed: rx %d -> %d", before, r.Rx())
				}
				return
			}
			if m2.Len < 0 || m2.Len > size-MessageHeaderSize || n != min(len(p), m2.Len) {
				t.Fatalf("message %+v, copied %d into %d", m2, n, len(p))
			}
			if after := r.Rx(); after >= uint32(size) || after%SlotSize != 0 || after == before {
				t.Fatalf("rx %d -> %d in a ring of %d", before, after, size)
			}
		}
		// Every consume advances rx by at least one slot without passing
		// tx, so the ring must be empty by now.
		if _, err := r.Peek(); err == nil {
			t.Fatalf("ring still not empty after %d reads", size/SlotSize+2)
		}
	})
}
