package gntxen

import (
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/gozen-dev/gozen/gnttab"
)

// Shards is how many independent free lists the ref pool and how many
// regions the map window have. A caller works in the shard of the
// scheduler's P it runs on, so vCPUs granting, revoking and mapping at
// the same time take different locks; the pool's shared reserve is
// locked only when a shard runs dry or holds too many refs.
const Shards = 16

// refBatch is how many refs a shard takes from, or gives back to, the
// shared reserve at a time.
const refBatch = 32

// RefPool hands out grant refs. Each shard has its own free list and
// lock; refs move between a shard and the shared reserve refBatch at a
// time, and a shard that runs dry collects every other shard's spare
// refs before the table is grown. Its methods are safe for concurrent
// use.
type RefPool struct {
	shards [Shards]refShard

	mu      sync.Mutex // guards reserve and limit
	reserve []gnttab.Ref
	limit   uint32 // refs below limit exist

	used atomic.Int64
}

// refShard is one shard's free list, padded to its own cache lines.
type refShard struct {
	mu   sync.Mutex
	free []gnttab.Ref
	_    [32]byte
}

// Grow makes refs up to frames*EntriesPerFrame available (the
// toolstack's ReservedEntries are never handed out).
func (p *RefPool) Grow(frames uint32) {
	p.mu.Lock()
	defer p.mu.Unlock()
	newLimit := frames * EntriesPerFrame
	start := max(p.limit, ReservedEntries)
	for r := newLimit; r > start; r-- {
		p.reserve = append(p.reserve, gnttab.Ref(r-1))
	}
	p.limit = max(p.limit, newLimit)
}

// Reset frees every ref of a table of frames frames: the domain is new
// and no ref is granted any more. Nothing else may use the pool
// meanwhile.
func (p *RefPool) Reset(frames uint32) {
	for i := range p.shards {
		p.shards[i].mu.Lock()
		p.shards[i].free = p.shards[i].free[:0]
		p.shards[i].mu.Unlock()
	}
	p.mu.Lock()
	p.reserve, p.limit = p.reserve[:0], 0
	p.mu.Unlock()
	p.used.Store(0)
	p.Grow(frames)
}

// Alloc appends n free refs to dst, all or none, taking them from
// shard's free list (any int; it is reduced modulo Shards). It reports
// false when the pool holds fewer than n free refs: the table must grow.
func (p *RefPool) Alloc(shard int, dst []gnttab.Ref, n int) ([]gnttab.Ref, bool) {
	if n <= 0 {
		return dst, n == 0
	}
	s := &p.shards[uint(shard)%Shards]
	for try := 0; ; try++ {
		s.mu.Lock()
		if len(s.free) < n {
			p.mu.Lock()
			k := min(n-len(s.free)+refBatch, len(p.reserve))
			s.free = append(s.free, p.reserve[len(p.reserve)-k:]...)
			p.reserve = p.reserve[:len(p.reserve)-k]
			p.mu.Unlock()
		}
		if len(s.free) >= n {
			dst = append(dst, s.free[len(s.free)-n:]...)
			s.free = s.free[:len(s.free)-n]
			s.mu.Unlock()
			p.used.Add(int64(n))
			return dst, true
		}
		s.mu.Unlock()
		if try == 1 {
			return dst, false
		}
		p.collect()
	}
}

// collect moves every shard's free refs to the reserve, so that a
// shard that ran dry can use refs other shards hold.
func (p *RefPool) collect() {
	for i := range p.shards {
		s := &p.shards[i]
		s.mu.Lock()
		if len(s.free) > 0 {
			p.mu.Lock()
			p.reserve = append(p.reserve, s.free...)
			p.mu.Unlock()
			s.free = s.free[:0]
		}
		s.mu.Unlock()
	}
}

// Free returns refs to shard's free list; a shard holding more than
// two batches gives the surplus back to the reserve.
func (p *RefPool) Free(shard int, refs []gnttab.Ref) {
	if len(refs) == 0 {
		return
	}
	s := &p.shards[uint(shard)%Shards]
	s.mu.Lock()
	s.free = append(s.free, refs...)
	if len(s.free) > 2*refBatch {
		k := len(s.free) - refBatch
		p.mu.Lock()
		p.reserve = append(p.reserve, s.free[len(s.free)-k:]...)
		p.mu.Unlock()
		s.free = s.free[:len(s.free)-k]
	}
	s.mu.Unlock()
	p.used.Add(-int64(len(refs)))
}

// Used returns the number of refs handed out.
func (p *RefPool) Used() int { return int(p.used.Load()) }

// Limit returns the number of refs the table holds.
func (p *RefPool) Limit() uint32 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.limit
}

// Window allocates runs of pages in the guest-physical map window. The
// window is cut into Shards regions with a lock each: a run that fits
// in a region is taken from the caller's shard's region first, then
// from the others; a longer one (rare: a big ring mapped at set-up)
// takes every region's lock, in order, and may span regions. Its
// methods are safe for concurrent use.
type Window struct {
	// Base is the guest-physical address of page 0.
	Base    uint64
	used    []bool // page i is guarded by regions[i/regionPages]
	per     int    // pages per region
	regions []windowRegion
	inUse   atomic.Int64
}

// windowRegion is one region's lock, padded to its own cache lines.
type windowRegion struct {
	mu sync.Mutex
	_  [56]byte
}

// NewWindow returns a window of pages pages at base.
func NewWindow(base uint64, pages int) *Window {
	n := Shards
	if pages < n {
		n = 1
	}
	per := (pages + n - 1) / n
	return &Window{Base: base, used: make([]bool, pages), per: per, regions: make([]windowRegion, (pages+per-1)/max(per, 1))}
}

// Alloc returns the address of n free contiguous pages, searching
// shard's region first (first fit).
func (w *Window) Alloc(shard, n int) (uint64, error) {
	if n <= 0 || n > len(w.used) {
		return 0, fmt.Errorf("map window: %d pages: %w", n, gnttab.ErrBounds)
	}
	if n <= w.per {
		home := int(uint(shard) % uint(len(w.regions)))
		for k := range w.regions {
			i := (home + k) % len(w.regions)
			lo, hi := i*w.per, min((i+1)*w.per, len(w.used))
			w.regions[i].mu.Lock()
			first, ok := w.fit(lo, hi, n)
			w.regions[i].mu.Unlock()
			if ok {
				return w.Base + uint64(first)*gnttab.PageSize, nil
			}
		}
	}
	// a run longer than a region, or one that only fits across regions
	for i := range w.regions {
		w.regions[i].mu.Lock()
	}
	first, ok := w.fit(0, len(w.used), n)
	for i := range w.regions {
		w.regions[i].mu.Unlock()
	}
	if ok {
		return w.Base + uint64(first)*gnttab.PageSize, nil
	}
	return 0, fmt.Errorf("map window full (%d of %d pages used, %d wanted): %w", w.inUse.Load(), len(w.used), n, gnttab.ErrNoSpace)
}

// fit marks and returns the first run of n free pages in [lo, hi); the
// locks of the regions it spans are held.
func (w *Window) fit(lo, hi, n int) (int, bool) {
	run := 0
	for i := lo; i < hi; i++ {
		if w.used[i] {
			run = 0
			continue
		}
		run++
		if run == n {
			first := i - n + 1
			for j := first; j <= i; j++ {
				w.used[j] = true
			}
			w.inUse.Add(int64(n))
			return first, true
		}
	}
	return 0, false
}

// Free releases n pages at addr. Pages outside the window, or not in
// use, are ignored.
func (w *Window) Free(addr uint64, n int) {
	if addr < w.Base || n <= 0 {
		return
	}
	first := int((addr - w.Base) / gnttab.PageSize)
	end := min(first+n, len(w.used))
	if first >= end {
		return
	}
	for i := first / w.per; i <= (end-1)/w.per; i++ {
		w.regions[i].mu.Lock()
	}
	for j := first; j < end; j++ {
		if w.used[j] {
			w.used[j] = false
			w.inUse.Add(-1)
		}
	}
	for i := first / w.per; i <= (end-1)/w.per; i++ {
		w.regions[i].mu.Unlock()
	}
}

// InUse returns the number of pages mapped.
func (w *Window) InUse() int { return int(w.inUse.Load()) }
