//go:build tamago

package main

import (
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gozen-dev/gozen/arch/amd64/smp"
	"github.com/gozen-dev/gozen/boot"
	"github.com/gozen-dev/gozen/platform"
	"github.com/gozen-dev/gozen/xenbus/control"
)

// suspendLoop is -suspend (see the package comment).
func suspendLoop() {
	n := smp.NumCPU()
	var stop atomic.Bool
	var busy [smp.MaxCPUs]atomic.Uint64
	var wg sync.WaitGroup
	for w := 0; w < n; w++ { // background work, across every suspend
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			x := uint64(w)
			for !stop.Load() {
				for i := 0; i < 8; i++ {
					x = spin(x)
				}
				busy[smp.Current()].Add(1)
				time.Sleep(time.Millisecond)
			}
		}(w)
	}
	rep.Check(workers(n))
	rep.Check(clock(n))
	resumed := make(chan platform.Kind, 4)
	control.OnResume(func(k platform.Kind) { resumed <- k })
	fmt.Println("SMP SUSPEND ready")
	for i := 1; ; i++ {
		select {
		case k := <-resumed:
			fmt.Printf("SMP RESUMED %d kind=%s vcpus=%d led-by-vcpu=%d\n", i, k, smp.NumCPU(), smp.LastSuspend())
			var before [smp.MaxCPUs]uint64
			for v := 0; v < n; v++ {
				before[v] = busy[v].Load()
			}
			for _, c := range []func(int) (string, error, string){workers, clock, stress, vcpuInfo} {
				name, err, detail := c(n)
				rep.Check(fmt.Sprintf("resume%d-%s", i, name), err, detail)
			}
			var moved int
			for v := 0; v < n; v++ {
				if busy[v].Load() > before[v] {
					moved++
				}
			}
			if moved == 0 {
				rep.Check(fmt.Sprintf("resume%d-background", i), fmt.Errorf("the background goroutines made no progress since the resume"), "")
			} else {
				rep.Check(fmt.Sprintf("resume%d-background", i), nil, fmt.Sprintf("background work went on on %d of %d vCPUs", moved, n))
			}
			p, f := rep.Counts()
			fmt.Printf("SMP AFTER %d pass=%d fail=%d\n", i, p, f)
		case <-control.Context().Done():
			stop.Store(true)
			wg.Wait()
			if rep.Done() > 0 {
				os.Exit(1)
			}
			return
		}
	}
}

// clock has goroutines on every vCPU read the runtime's monotonic clock
// (time.Since) and compare each reading with the latest any of them
// published before it: with each vCPU reading its own vcpu_time_info, no
// reading may be below one made earlier on another vCPU. It also checks
// that every vCPU reads a live time record of its own (registered, with a
// version and a scale) and reports each one's TSC stamp.
func clock(n int) (string, error, string) {
	reads := size.reads
	clamps := boot.ClockClamps()
	base := time.Now()
	var latest, worst atomic.Int64
	var back atomic.Uint64
	var count [smp.MaxCPUs]atomic.Uint64
	var stamps [smp.MaxCPUs]atomic.Uint64
	var versions [smp.MaxCPUs]atomic.Uint32
	var wg sync.WaitGroup
	for w := 0; w < 2*n; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < reads; i++ {
				prev := latest.Load()
				now := int64(time.Since(base))
				if now < prev {
					back.Add(1)
					for {
						d, cur := prev-now, worst.Load()
						if d <= cur || worst.CompareAndSwap(cur, d) {
							break
						}
					}
				}
				for {
					cur := latest.Load()
					if now <= cur || latest.CompareAndSwap(cur, now) {
						break
					}
				}
				if i%256 == 0 {
					id, ti := boot.TimeInfoHere()
					count[id].Add(1)
					if ti.Mul != 0 {
						stamps[id].Store(ti.TSCTimestamp)
						versions[id].Store(ti.Version | 1<<31)
					}
				}
				if i%64 == 0 {
					runtime.Gosched()
				}
			}
		}()
	}
	wg.Wait()
	var err error
	var detail string
	for i := 0; i < n; i++ {
		reg := boot.VCPUTimeRegistered(i)
		detail += fmt.Sprintf(" vcpu%d(own-area=%v samples=%d tsc-stamp=%d)", i, reg, count[i].Load(), stamps[i].Load())
		switch {
		case err != nil:
		case count[i].Load() == 0:
			err = fmt.Errorf("no clock reading was made on vCPU %d", i)
		case !reg:
			err = fmt.Errorf("vCPU %d has no time area of its own", i)
		case versions[i].Load() == 0:
			err = fmt.Errorf("vCPU %d's time record has no scale", i)
		}
	}
	if b := back.Load(); b > 0 && err == nil {
		err = fmt.Errorf("the clock went back %d times across vCPUs, by up to %v", b, time.Duration(worst.Load()))
	}
	detail = fmt.Sprintf("%d readings on %d vCPUs, none below an earlier one (the clock raised %d readings below another vCPU's meanwhile);%s",
		2*n*reads, n, boot.ClockClamps()-clamps, detail)
	if err != nil {
		err = fmt.Errorf("%w (%s)", err, detail)
	}
	return "clock", err, detail
}
