package bytering

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
)

// shared is the memory of one ring as a peer would see it.
type shared struct {
	data       []byte
	cons, prod uint32
}

func newShared(size int) *shared { return &shared{data: make([]byte, size)} }

func (s *shared) writer(t testing.TB) *Writer {
	t.Helper()
	w, err := NewWriter(s.data, &s.cons, &s.prod)
	if err != nil {
		t.Fatal(err)
	}
	return w
}

func (s *shared) reader(t testing.TB) *Reader {
	t.Helper()
	r, err := NewReader(s.data, &s.cons, &s.prod)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestInitValidation(t *testing.T) {
	var a, b uint32
	tests := []struct {
		name       string
		data       []byte
		cons, prod *uint32
		ok         bool
	}{
		{"1024", make([]byte, 1024), &a, &b, true},
		{"1", make([]byte, 1), &a, &b, true},
		{"empty", nil, &a, &b, false},
		{"not a power of two", make([]byte, 1000), &a, &b, false},
		{"nil cons", make([]byte, 8), nil, &b, false},
		{"nil prod", make([]byte, 8), &a, nil, false},
		{"same word", make([]byte, 8), &a, &a, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, werr := NewWriter(tc.data, tc.cons, tc.prod)
			_, rerr := NewReader(tc.data, tc.cons, tc.prod)
			if (werr == nil) != tc.ok || (rerr == nil) != tc.ok {
				t.Fatalf("writer %v, reader %v, want ok=%v", werr, rerr, tc.ok)
			}
		})
	}
	var w Writer
	if _, err := w.Put([]byte("x")); err == nil {
		t.Fatal("zero Writer accepted a Put")
	}
	var r Reader
	if _, err := r.Take(make([]byte, 1)); err == nil {
		t.Fatal("zero Reader accepted a Take")
	}
}

func TestCounts(t *testing.T) {
	const size = 16
	tests := []struct {
		name       string
		cons, prod uint32
		used       int
		corrupt    bool
	}{
		{"empty", 0, 0, 0, false},
		{"some", 3, 10, 7, false},
		{"full", 0, size, size, false},
		{"wrapped", 0xfffffffe, 5, 7, false},
		{"full across wrap", 0xfffffff8, 8, size, false},
		{"one over", 0, size + 1, 0, true},
		{"cons ahead of prod", 10, 3, 0, true},
		{"huge", 0, 0x80000000, 0, true},
		{"max", 0, 0xffffffff, 0, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newShared(size)
			s.cons, s.prod = tc.cons, tc.prod
			w, r := s.writer(t), s.reader(t)
			free, werr := w.Free()
			pend, perr := w.Pending()
			avail, rerr := r.Avail()
			if tc.corrupt {
				for _, err := range []error{werr, perr, rerr} {
					if !errors.Is(err, ErrCorrupt) {
						t.Fatalf("got %v, want ErrCorrupt", err)
					}
				}
				var ce *CorruptError
				if !errors.As(werr, &ce) || ce.Prod != tc.prod || ce.Cons != tc.cons || ce.Size != size || !ce.Writer {
					t.Fatalf("corrupt error %+v", ce)
				}
				return
			}
			if werr != nil || perr != nil || rerr != nil {
				t.Fatalf("errors %v %v %v", werr, perr, rerr)
			}
			if free != size-tc.used || pend != tc.used || avail != tc.used {
				t.Fatalf("free %d pending %d avail %d, want used %d", free, pend, avail, tc.used)
			}
		})
	}
}

func TestPutTakeWrap(t *testing.T) {
	tests := []struct {
		name  string
		start uint32
		size  int
		put   int
		take  int
	}{
		{"from zero", 0, 8, 5, 5},
		{"across the end", 6, 8, 5, 5},
		{"across index wrap", 0xfffffffd, 8, 8, 8},
		{"more than fits", 2, 8, 20, 20},
		{"partial take", 7, 8, 6, 3},
		{"size one", 0xffffffff, 1, 3, 3},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := newShared(tc.size)
			s.cons, s.prod = tc.start, tc.start
			w, r := s.writer(t), s.reader(t)
			in := make([]byte, tc.put)
			for i := range in {
				in[i] = byte(i + 1)
			}
			n, err := w.Put(in)
			if want := min(tc.put, tc.size); err != nil || n != want {
				t.Fatalf("Put = %d, %v; want %d", n, err, want)
			}
			if s.prod != tc.start+uint32(n) {
				t.Fatalf("prod %d", s.prod)
			}
			out := make([]byte, tc.take)
			m, err := r.Take(out)
			if want := min(tc.take, n); err != nil || m != want {
				t.Fatalf("Take = %d, %v; want %d", m, err, want)
			}
			if !bytes.Equal(out[:m], in[:m]) {
				t.Fatalf("took %v, put %v", out[:m], in[:m])
			}
			if s.cons != tc.start+uint32(m) {
				t.Fatalf("cons %d", s.cons)
			}
		})
	}
}

func TestFullAndEmpty(t *testing.T) {
	s := newShared(4)
	w, r := s.writer(t), s.reader(t)
	if n, err := r.Take(make([]byte, 4)); n != 0 || err != nil {
		t.Fatalf("empty Take = %d, %v", n, err)
	}
	if n, err := w.Put([]byte("abcd")); n != 4 || err != nil {
		t.Fatalf("Put = %d, %v", n, err)
	}
	if n, err := w.Put([]byte("e")); n != 0 || err != nil {
		t.Fatalf("full Put = %d, %v", n, err)
	}
	if n, err := w.Put(nil); n != 0 || err != nil {
		t.Fatalf("nil Put = %d, %v", n, err)
	}
}

func TestDeadIsSticky(t *testing.T) {
	s := newShared(8)
	w, r := s.writer(t), s.reader(t)
	s.cons = 100 // the peer moves cons past prod
	if _, err := w.Put([]byte("x")); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Put: %v", err)
	}
	if _, err := r.Take(make([]byte, 1)); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Take: %v", err)
	}
	s.cons = 0 // repaired, but too late: the ends stay dead
	prod := s.prod
	for i, err := range []error{w.Err(), r.Err(), errOf(w.Put([]byte("x"))), errOf(r.Take(make([]byte, 1))), errOf(w.Free())} {
		if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("call %d after death: %v", i, err)
		}
	}
	if s.prod != prod || s.data[0] != 0 {
		t.Fatal("a dead writer touched the ring")
	}
	if err := w.Init(s.data, &s.cons, &s.prod); err != nil || w.Err() != nil {
		t.Fatalf("Init does not revive: %v %v", err, w.Err())
	}
	if n, err := w.Put([]byte("x")); n != 1 || err != nil {
		t.Fatalf("revived Put = %d, %v", n, err)
	}
}

func errOf(_ int, err error) error { return err }

func TestErrorText(t *testing.T) {
	s := newShared(8)
	s.prod = 9
	_, err := s.reader(t).Avail()
	want := "bytering: corrupt ring at the reader: prod 9, cons 0: 9 outstanding in a ring of 8"
	if err == nil || err.Error() != want {
		t.Fatalf("got %q, want %q", err, want)
	}
}

// TestNoAllocation: the console's print path may not allocate, including
// when it finds the ring corrupt.
func TestNoAllocation(t *testing.T) {
	s := newShared(64)
	w, r := s.writer(t), s.reader(t)
	buf := make([]byte, 10)
	allocs := testing.AllocsPerRun(100, func() {
		w.Put(buf)
		w.Free()
		r.Take(buf)
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per round", allocs)
	}
	s.cons = s.prod + 1
	allocs = testing.AllocsPerRun(100, func() {
		if _, err := w.Put(buf); err == nil {
			t.Fatal("no error")
		}
	})
	if allocs != 0 {
		t.Fatalf("%v allocations on the corrupt path", allocs)
	}
}

// TestConcurrent moves a byte stream between two goroutines in chunks of
// random sizes, across many wraps of the ring and of the indices.
func TestConcurrent(t *testing.T) {
	for _, size := range []int{1, 16, 1024, 2048} {
		s := newShared(size)
		s.cons, s.prod = 0xffffff00, 0xffffff00
		w, r := s.writer(t), s.reader(t)
		total := min(1<<18, size*2048)
		var wg sync.WaitGroup
		var failed atomic.Bool
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(1, uint64(size)))
			buf := make([]byte, 3000)
			for sent := 0; sent < total && !failed.Load(); {
				chunk := buf[:min(1+rng.IntN(len(buf)), total-sent)]
				for i := range chunk {
					chunk[i] = byte((sent + i) * 7)
				}
				n, err := w.Put(chunk)
				if err != nil {
					t.Error(err)
					failed.Store(true)
					return
				}
				sent += n
				if n == 0 {
					runtime.Gosched()
				}
			}
		}()
		rng := rand.New(rand.NewPCG(2, uint64(size)))
		buf := make([]byte, 3000)
		for got := 0; got < total && !failed.Load(); {
			n, err := r.Take(buf[:1+rng.IntN(len(buf))])
			if err != nil {
				t.Fatal(err)
			}
			for i := range n {
				if buf[i] != byte((got+i)*7) {
					t.Fatalf("size %d: byte %d is %d", size, got+i, buf[i])
				}
			}
			got += n
			if n == 0 {
				runtime.Gosched()
			}
		}
		wg.Wait()
	}
}
