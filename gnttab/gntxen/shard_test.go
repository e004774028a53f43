package gntxen

import (
	"errors"
	"sync"
	"testing"

	"github.com/gozen-dev/gozen/gnttab"
)

func TestRefPool(t *testing.T) {
	var p RefPool
	p.Grow(1)
	seen := map[gnttab.Ref]bool{}
	for i := 0; ; i++ {
		refs, ok := p.Alloc(i, nil, 1) // every shard in turn
		if !ok {
			break
		}
		r := refs[0]
		if r < ReservedEntries || r >= EntriesPerFrame || seen[r] {
			t.Fatalf("bad ref %d", r)
		}
		seen[r] = true
	}
	if len(seen) != EntriesPerFrame-ReservedEntries || p.Used() != len(seen) {
		t.Fatalf("got %d refs, used %d", len(seen), p.Used())
	}
	p.Grow(2)
	refs, ok := p.Alloc(3, nil, 1)
	if !ok || refs[0] < EntriesPerFrame {
		t.Fatalf("after Grow(2): %v %v", refs, ok)
	}
	p.Free(5, refs)
	for r := range seen {
		p.Free(int(r), []gnttab.Ref{r})
	}
	if p.Used() != 0 || p.Limit() != 2*EntriesPerFrame {
		t.Fatalf("used %d limit %d", p.Used(), p.Limit())
	}
	// one shard can take every ref, wherever they were freed
	all, ok := p.Alloc(7, nil, 2*EntriesPerFrame-ReservedEntries)
	if !ok || len(all) != 2*EntriesPerFrame-ReservedEntries {
		t.Fatalf("taking every ref from one shard: %d refs, %v", len(all), ok)
	}
	if _, ok := p.Alloc(7, nil, 1); ok {
		t.Fatal("allocated past the table's end")
	}
	p.Reset(1)
	if p.Used() != 0 || p.Limit() != EntriesPerFrame {
		t.Fatalf("after Reset(1): used %d limit %d", p.Used(), p.Limit())
	}
}

func TestRefPoolAllOrNone(t *testing.T) {
	tests := []struct {
		name   string
		frames uint32
		take   int // refs held before the Alloc
		want   int
		ok     bool
	}{
		{"fits", 1, 0, 10, true},
		{"exactly the rest", 1, 100, EntriesPerFrame - ReservedEntries - 100, true},
		{"one too many", 1, 100, EntriesPerFrame - ReservedEntries - 99, false},
		{"none wanted", 1, 0, 0, true},
		{"more than a table", 2, 0, 2*EntriesPerFrame - ReservedEntries + 1, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var p RefPool
			p.Grow(tc.frames)
			if tc.take > 0 {
				if _, ok := p.Alloc(1, nil, tc.take); !ok {
					t.Fatal("setup")
				}
			}
			got, ok := p.Alloc(2, nil, tc.want)
			if ok != tc.ok {
				t.Fatalf("Alloc(%d) ok = %v, want %v", tc.want, ok, tc.ok)
			}
			wantLen, wantUsed := tc.want, tc.take+tc.want
			if !ok {
				wantLen, wantUsed = 0, tc.take
			}
			if len(got) != wantLen || p.Used() != wantUsed {
				t.Fatalf("got %d refs, used %d; want %d, %d", len(got), p.Used(), wantLen, wantUsed)
			}
		})
	}
}

// TestRefPoolConcurrent hands refs out on many goroutines and shards at
// once, frees them on other shards, and checks that no ref is ever held
// twice and every ref comes back.
func TestRefPoolConcurrent(t *testing.T) {
	var p RefPool
	p.Grow(2)
	var owner sync.Map
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 2000; i++ {
				n := 1 + (g+i)%11
				refs, ok := p.Alloc(g, nil, n)
				if !ok {
					continue // 8 goroutines x 11 refs fit, but a shard may be briefly empty
				}
				for _, r := range refs {
					if _, dup := owner.LoadOrStore(r, g); dup {
						errs <- errors.New("ref handed out twice")
						return
					}
				}
				for _, r := range refs {
					owner.Delete(r)
				}
				p.Free(g+i, refs) // freed on another shard
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if p.Used() != 0 {
		t.Fatalf("used %d after every ref was freed", p.Used())
	}
	all, ok := p.Alloc(0, nil, 2*EntriesPerFrame-ReservedEntries)
	if !ok {
		t.Fatal("not every ref came back")
	}
	dup := map[gnttab.Ref]bool{}
	for _, r := range all {
		if dup[r] {
			t.Fatalf("ref %d twice in the pool", r)
		}
		dup[r] = true
	}
}

func TestWindow(t *testing.T) {
	w := NewWindow(0x10000000, 8) // fewer pages than shards: one region
	a, err := w.Alloc(0, 3)
	if err != nil || a != 0x10000000 {
		t.Fatal(a, err)
	}
	b, _ := w.Alloc(5, 3)
	if b != 0x10003000 {
		t.Fatalf("b = %#x", b)
	}
	if _, err := w.Alloc(0, 3); !errors.Is(err, gnttab.ErrNoSpace) {
		t.Fatalf("overfull Alloc = %v", err)
	}
	w.Free(a, 3)
	c, err := w.Alloc(1, 2)
	if err != nil || c != 0x10000000 || w.InUse() != 5 {
		t.Fatal(c, err, w.InUse())
	}
	if _, err := w.Alloc(0, 0); !errors.Is(err, gnttab.ErrBounds) {
		t.Fatalf("Alloc(0) = %v", err)
	}
	if _, err := w.Alloc(0, 9); !errors.Is(err, gnttab.ErrBounds) {
		t.Fatalf("Alloc(9) = %v", err)
	}
}

func TestWindowRegions(t *testing.T) {
	const pages = 4 * Shards // 4 pages per region
	const base = 0x20000000
	tests := []struct {
		name  string
		shard int
		n     int
		want  int // first page
	}{
		{"home region 0", 0, 2, 0},
		{"home region 3", 3, 4, 12},
		{"home region wraps", Shards + 1, 1, 4},
		{"longer than a region", 2, 6, 0},
		{"the whole window", 9, pages, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := NewWindow(base, pages)
			a, err := w.Alloc(tc.shard, tc.n)
			if err != nil || a != base+uint64(tc.want)*gnttab.PageSize {
				t.Fatalf("Alloc(%d, %d) = %#x, %v; want page %d", tc.shard, tc.n, a, err, tc.want)
			}
			w.Free(a, tc.n)
			if w.InUse() != 0 {
				t.Fatalf("in use %d after Free", w.InUse())
			}
		})
	}
	// a full home region sends the run to the next region
	w := NewWindow(base, pages)
	if _, err := w.Alloc(0, 4); err != nil {
		t.Fatal(err)
	}
	if a, err := w.Alloc(0, 1); err != nil || a != base+4*gnttab.PageSize {
		t.Fatalf("next region: %#x %v", a, err)
	}
	// every region with 2 free pages, at its end when even and at its
	// start when odd: a run of 4 only fits across two regions, first
	// fit across regions 0 and 1
	w = NewWindow(base, pages)
	for i := 0; i < Shards; i++ {
		if i%2 == 0 {
			if _, err := w.Alloc(i, 2); err != nil {
				t.Fatal(err)
			}
			continue
		}
		a, err := w.Alloc(i, 4)
		if err != nil {
			t.Fatal(err)
		}
		w.Free(a, 2)
	}
	if a, err := w.Alloc(2, 4); err != nil || a != base+2*gnttab.PageSize {
		t.Fatalf("4 pages across regions 0 and 1: %#x %v", a, err)
	}
	if w.InUse() != pages/2+4 {
		t.Fatalf("in use %d", w.InUse())
	}
}

// TestWindowConcurrent maps and unmaps on many goroutines at once and
// checks that no two live runs overlap.
func TestWindowConcurrent(t *testing.T) {
	w := NewWindow(0, 16*Shards)
	var owners [16 * Shards]int32
	var mu sync.Mutex // guards owners, only to check the window
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := 1; g <= 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 3000; i++ {
				n := 1 + (g*7+i)%20 // some longer than a region
				a, err := w.Alloc(g, n)
				if err != nil {
					continue
				}
				first := int(a / gnttab.PageSize)
				mu.Lock()
				for j := first; j < first+n; j++ {
					if owners[j] != 0 {
						mu.Unlock()
						errs <- errors.New("overlapping runs")
						return
					}
					owners[j] = int32(g)
				}
				for j := first; j < first+n; j++ {
					owners[j] = 0
				}
				mu.Unlock()
				w.Free(a, n)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if w.InUse() != 0 {
		t.Fatalf("in use %d at the end", w.InUse())
	}
}
