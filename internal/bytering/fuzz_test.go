package bytering

import (
	"encoding/binary"
	"errors"
	"testing"
)

// fuzzOps drives one end of a ring of 64 bytes whose peer is hostile. The
// input is cons and prod (4 bytes each, little endian), then a sequence of
// operations of 2 bytes: op, arg. Op&3 selects: 0 the local end moves arg
// bytes, 1 the peer sets its own index to cons+arg (reader end: prod;
// writer end: cons), 2 the peer adds arg<<24 to its index (far jumps),
// 3 the peer writes arg into the data area. The invariants: no panic, no
// index moved by more than the ring's size per call, a local index moved
// only while the distance was valid, and a dead end stays dead and
// touches nothing.
func fuzzOps(t *testing.T, in []byte, writer bool) {
	const size = 64
	if len(in) < 8 {
		return
	}
	s := newShared(size)
	s.cons = binary.LittleEndian.Uint32(in)
	s.prod = binary.LittleEndian.Uint32(in[4:])
	in = in[8:]
	var w *Writer
	var r *Reader
	var err error
	if writer {
		w, err = NewWriter(s.data, &s.cons, &s.prod)
	} else {
		r, err = NewReader(s.data, &s.cons, &s.prod)
	}
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 256)
	dead := false
	for ; len(in) >= 2; in = in[2:] {
		op, arg := in[0], in[1]
		peer := &s.prod
		if writer {
			peer = &s.cons
		}
		switch op & 3 {
		case 0:
			cons0, prod0 := s.cons, s.prod
			valid := prod0-cons0 <= size
			var n int
			if writer {
				n, err = w.Put(buf[:arg])
			} else {
				n, err = r.Take(buf[:arg])
			}
			switch {
			case dead && !errors.Is(err, ErrCorrupt):
				t.Fatalf("dead end returned %v", err)
			case dead && (s.cons != cons0 || s.prod != prod0):
				t.Fatal("dead end moved an index")
			case !valid && !errors.Is(err, ErrCorrupt):
				t.Fatalf("prod %d cons %d accepted: %v", prod0, cons0, err)
			case valid && !dead && err != nil:
				t.Fatalf("prod %d cons %d refused: %v", prod0, cons0, err)
			case n < 0 || n > int(arg) || n > size:
				t.Fatalf("moved %d bytes for %d", n, arg)
			}
			if err != nil {
				dead = true
				continue
			}
			if writer && (s.prod-prod0 != uint32(n) || s.prod-s.cons > size) {
				t.Fatalf("writer moved prod %d -> %d (cons %d) for %d bytes", prod0, s.prod, s.cons, n)
			}
			if !writer && (s.cons-cons0 != uint32(n) || s.prod-s.cons > size) {
				t.Fatalf("reader moved cons %d -> %d (prod %d) for %d bytes", cons0, s.cons, s.prod, n)
			}
		case 1:
			*peer = s.cons + uint32(arg)
			if writer {
				*peer = s.prod - uint32(arg)
			}
		case 2:
			*peer += uint32(arg) << 24
		case 3:
			s.data[arg%size] = arg
		}
	}
}

// FuzzReader fuzzes the consuming end against a hostile producer.
func FuzzReader(f *testing.F) {
	seeds(f)
	f.Fuzz(func(t *testing.T, in []byte) { fuzzOps(t, in, false) })
}

// FuzzWriter fuzzes the producing end against a hostile consumer.
func FuzzWriter(f *testing.F) {
	seeds(f)
	f.Fuzz(func(t *testing.T, in []byte) { fuzzOps(t, in, true) })
}

func seeds(f *testing.F) {
	idx := func(cons, prod uint32, ops ...byte) []byte {
		b := binary.LittleEndian.AppendUint32(nil, cons)
		b = binary.LittleEndian.AppendUint32(b, prod)
		return append(b, ops...)
	}
	f.Add(idx(0, 0, 0, 10, 1, 30, 0, 40, 3, 7, 0, 64))
	f.Add(idx(0xfffffff0, 0xfffffff0, 0, 64, 1, 64, 0, 200))
	f.Add(idx(0, 65, 0, 1))
	f.Add(idx(10, 3, 0, 1, 0, 1))
	f.Add(idx(0, 0, 2, 128, 0, 5, 0, 5))
}
