//go:build tamago

package main

import (
	"bytes"
	"errors"
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gozen-dev/gozen/arch/amd64/smp"
	"github.com/gozen-dev/gozen/domid"
	"github.com/gozen-dev/gozen/platform"
)

// grants runs the grant table's common paths on every vCPU at once: 4*n
// goroutines each share a page with this domain, copy random data into
// it and back through the grant (GNTTABOP_copy), check both the copy and
// the page, and unshare it, for size.work. Every vCPU must have run
// grant operations, no data may change, and the table must hold no more
// grants, shares or mappings afterwards than before. The detail reports
// operations per second and how many ran on each vCPU.
func grants(n int) (string, error, string) {
	dom := platform.Domain()
	self, ok := dom.Self()
	if !ok {
		return "grants", errors.New("domid unknown"), ""
	}
	g, err := dom.Grants()
	if err != nil {
		return "grants", err, ""
	}
	before := g.Stats()
	defer watchdog("grants", time.Minute).Stop()
	// no garbage collection meanwhile (the pages come back at the end):
	// this case is about the grant table, and a stop-the-world while
	// every vCPU is busy can need more Ms than vCPUs (see case alloc)
	defer debug.SetGCPercent(debug.SetGCPercent(-1))
	var counts [smp.MaxCPUs]atomic.Uint64
	var stop atomic.Bool
	var wg sync.WaitGroup
	errc := make(chan error, 4*n)
	start := time.Now()
	for w := 0; w < 4*n; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			if err := grantLoop(&stop, 0, &counts, self, uint64(w)); err != nil {
				errc <- fmt.Errorf("goroutine %d: %w", w, err)
				stop.Store(true)
			}
		}(w)
	}
	time.Sleep(size.work)
	stop.Store(true)
	wg.Wait()
	took := time.Since(start)
	close(errc)
	err = <-errc
	var parts []string
	var total uint64
	for i := 0; i < n; i++ {
		c := counts[i].Load()
		total += c
		parts = append(parts, fmt.Sprintf("vcpu%d=%d", i, c))
		if c == 0 && err == nil {
			err = fmt.Errorf("vCPU %d ran no grant operation", i)
		}
	}
	if after := g.Stats(); after != before && err == nil {
		err = fmt.Errorf("grant table leaked: %+v before, %+v after", before, after)
	}
	detail := fmt.Sprintf("%.0f share+copy+unshare/s %s", float64(total)/took.Seconds(), strings.Join(parts, " "))
	if err != nil {
		err = fmt.Errorf("%w (%s)", err, detail)
	}
	return "grants", err, detail
}

// grantLoop shares, copies through and unshares pages until stop, or
// ops times if ops > 0.
func grantLoop(stop *atomic.Bool, ops int, counts *[smp.MaxCPUs]atomic.Uint64, self domid.ID, seed uint64) error {
	g, err := platform.Domain().Grants()
	if err != nil {
		return err
	}
	buf := make([]byte, 512)
	got := make([]byte, 512)
	x := seed*0x9e3779b97f4a7c15 + 1
	for i := 0; !stop.Load() && (ops == 0 || i < ops); i++ {
		s, err := g.Share(self, 1, true)
		if err != nil {
			return err
		}
		for j := range buf {
			x = spin(x)
			buf[j] = byte(x)
		}
		off := int(x % uint64(4096-len(buf)))
		if err := g.CopyTo(self, s.Refs[0], off, buf); err != nil {
			return err
		}
		if err := g.CopyFrom(self, s.Refs[0], off, got); err != nil {
			return err
		}
		if !bytes.Equal(buf, got) || !bytes.Equal(s.Buf[off:off+len(buf)], buf) {
			return errors.New("a copy through a grant changed the data")
		}
		if err := g.Unshare(s); err != nil {
			return err
		}
		counts[smp.Current()].Add(1)
		if i%4 == 0 {
			runtime.Gosched() // no preemption: let main's timer run
		}
	}
	return nil
}

// grantBenchOps is how many share+copy+unshare rounds each worker of
// grantBench makes.
const grantBenchOps = 1000

// grantBench runs grantBenchOps rounds of grantLoop on each of GOMAXPROCS
// workers and prints
//
//	SMP GRANTBENCH vcpus=N workers=W ops=X ns=T
func grantBench() error {
	self, ok := platform.Domain().Self()
	if !ok {
		return errors.New("domid unknown")
	}
	workers := runtime.GOMAXPROCS(0)
	defer debug.SetGCPercent(debug.SetGCPercent(-1)) // as in grants
	var counts [smp.MaxCPUs]atomic.Uint64
	var stop atomic.Bool
	var wg sync.WaitGroup
	errc := make(chan error, workers)
	start := time.Now()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			if err := grantLoop(&stop, grantBenchOps, &counts, self, uint64(w)); err != nil {
				errc <- err
			}
		}(w)
	}
	wg.Wait()
	el := time.Since(start)
	close(errc)
	if err := <-errc; err != nil {
		return err
	}
	fmt.Printf("SMP GRANTBENCH vcpus=%d workers=%d ops=%d ns=%d\n", smp.NumCPU(), workers, workers*grantBenchOps, el.Nanoseconds())
	return nil
}

// watchdog prints every goroutine's stack if case name still runs after
// d, so that a hang in the rig shows where it is.
func watchdog(name string, d time.Duration) *time.Timer {
	return time.AfterFunc(d, func() {
		buf := make([]byte, 1<<20)
		n := runtime.Stack(buf, true)
		fmt.Printf("SMP WATCHDOG %s still running after %v; goroutines:\n%s\n", name, d, buf[:n])
	})
}

// alloc churns the garbage collector from every vCPU at once: 4*n
// goroutines allocate and fill page-sized buffers for size.work (as the
// grants case does for its pages), so that collections start, stop the
// world and sweep while every vCPU allocates. Every vCPU must have
// allocated, and at least one collection must have run.
func alloc(n int) (string, error, string) {
	defer watchdog("alloc", time.Minute).Stop()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	gcs := ms.NumGC
	var counts [smp.MaxCPUs]atomic.Uint64
	var stop atomic.Bool
	var wg sync.WaitGroup
	var sink atomic.Uint64
	var keep [16]atomic.Pointer[[]byte]
	for w := 0; w < 4*n; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; !stop.Load(); i++ {
				b := make([]byte, 8192)
				for j := 0; j < len(b); j += 512 {
					b[j] = byte(i + j)
				}
				keep[w%len(keep)].Store(&b) // escapes: a heap allocation
				sink.Add(uint64(b[512]))
				counts[smp.Current()].Add(1)
				if i%4 == 0 {
					runtime.Gosched()
				}
			}
		}(w)
	}
	time.Sleep(size.work)
	stop.Store(true)
	wg.Wait()
	runtime.ReadMemStats(&ms)
	counted, err := perVCPU(counts[:n], "allocated nothing")
	if ms.NumGC == gcs && err == nil {
		err = errors.New("no garbage collection ran")
	}
	detail := fmt.Sprintf("%d collections; %s", ms.NumGC-gcs, counted)
	if err != nil {
		err = fmt.Errorf("%w (%s)", err, detail)
	}
	return "alloc", err, detail
}
