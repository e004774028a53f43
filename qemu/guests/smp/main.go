//go:build tamago

// Command smp is the guest of the SMP tests (qemu/smp_test.go): it checks
// that Go runs on every vCPU of the domain.
//
//	SMP vcpus=N numcpu=N gomaxprocs=N
//	SMP PASS name detail...
//	SMP FAIL name: reason...
//	SMP DONE pass=N fail=M
//
// Cases: workers (goroutines doing CPU work are counted per vCPU, and
// every vCPU must have counted), stress (timers, channels, event
// notifications on ports bound to every vCPU and vchan traffic, across
// vCPUs, with no lost wake-up and every byte checked). With -bench it
// only runs the parallel hashing benchmark and the grant benchmark
// (share, copy through, unshare on GOMAXPROCS workers), three rounds
// each, and prints
//
//	SMP BENCH vcpus=N workers=W blocks=B bytes=X ns=T
//	SMP GRANTBENCH vcpus=N workers=W ops=X ns=T
//
// Case grants (with -grants): goroutines on every vCPU share pages, copy
// through the grants and unshare them at once (the grant table's common
// paths), with every byte checked and no grant left over. TestTierASMP
// runs it with 1, 2 and 4 vCPUs. The last line before DONE counts the
// interrupt entries and the interrupts the rig delivered twice (see
// package arch/amd64/trap, SetHandler):
//
//	SMP ENTRIES upcall=N wake=N retry=N redelivered=N
//
// Case alloc (with -alloc): goroutines on every vCPU allocate at once,
// so that garbage collections stop and restart the world while every
// vCPU is busy. After a stop-the-world the runtime may start a new M for
// a P whose M has not yet parked (a vCPU descheduled by the host at that
// moment): the vCPUs then host more Ms than there are of them
// (smp.Hosting).
//
// Case oversub (with -oversub): the runtime is made to start more Ms
// than there are vCPUs on purpose (a goroutine locked to its thread,
// then goroutines allocating), and the vCPUs must host them: the line
//
//	SMP HOSTING extra=N switches=[...]
//
// follows the cases.
//
// Case clock: goroutines on every vCPU compare their readings of the
// runtime's clock (each vCPU reads its own vcpu_time_info): none may be
// below one another vCPU already made.
//
// With -suspend it runs workers and clock, prints SMP SUSPEND ready, and
// after each resume (xl save -c, xl save and restore) prints
//
//	SMP RESUMED i kind=K
//
// runs workers, clock and stress again as resumeI-workers and so on (Go
// must run on every vCPU again, ports bound to each vCPU must deliver)
// and prints SMP AFTER i; a goroutine per vCPU works meanwhile, so that
// the suspend stops vCPUs in the middle of Go code. It ends with SMP DONE
// at xl shutdown.
//
// Case vcpuinfo: every vCPU's vcpu_info is in the area the guest
// registered for it (VCPUOP_register_vcpu_info, vCPU 0's too), and events
// of ports bound to each vCPU are found through that vCPU's own
// vcpu_info (its selector). With -wide (a domain of more than 32 vCPUs,
// whose vcpu_info the shared-info page cannot hold) the cases run with a
// lighter stress (fewer rounds per pair, fewer clock readings) and longer
// worker rounds.
//
// With -idle D it runs the workers, collects garbage, prints SMP IDLE
// sleeping, sleeps D (the rig reads the domain's CPU time meanwhile)
// and prints SMP IDLE done. With -hold it waits for xl shutdown (the
// vcpu-set test).
package main

import (
	"context"
	"crypto/sha256"
	"flag"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gozen-dev/gozen/arch/amd64/smp"
	"github.com/gozen-dev/gozen/arch/amd64/trap"
	"github.com/gozen-dev/gozen/boot"
	"github.com/gozen-dev/gozen/domid"
	"github.com/gozen-dev/gozen/evtchn"
	"github.com/gozen-dev/gozen/evtchn/evxen"
	"github.com/gozen-dev/gozen/platform"
	"github.com/gozen-dev/gozen/qemu/guests/internal/report"
	"github.com/gozen-dev/gozen/xenbus/control"
)

var rep = report.New("SMP")

func main() {
	bench := flag.Bool("bench", false, "run only the parallel hashing benchmark")
	idle := flag.Duration("idle", 0, "sleep this long, idle")
	hold := flag.Bool("hold", false, "wait for xl shutdown")
	suspend := flag.Bool("suspend", false, "run the cases again after each resume (xl save -c, xl save and restore) until xl shutdown")
	wide := flag.Bool("wide", false, "lighter stress and longer worker rounds, for many vCPUs")
	gc := flag.Bool("alloc", false, "also run case alloc: garbage collections while every vCPU allocates")
	withGrants := flag.Bool("grants", false, "also run case grants: the grant table's common paths on every vCPU at once")
	withOversub := flag.Bool("oversub", false, "also run case oversub: more Ms than vCPUs (a locked thread)")
	procsAbove := flag.Bool("procs-above", false, "set GOMAXPROCS to twice the vCPUs and run the workers: the domain must stop with smp's message")
	flag.Parse()
	if *wide {
		size = stressSize{rounds: 200, timers: 20, reads: 4000, work: 6 * time.Second}
	}
	fmt.Printf("SMP vcpus=%d numcpu=%d gomaxprocs=%d\n", smp.NumCPU(), runtime.NumCPU(), runtime.GOMAXPROCS(0))
	switch {
	case *bench:
		for i := 0; i < 3; i++ {
			hashBench()
		}
		for i := 0; i < 3; i++ {
			if err := grantBench(); err != nil {
				fmt.Println("SMP GRANTBENCH failed:", err)
				os.Exit(1)
			}
		}
		return
	case *idle > 0:
		// idle after work and a garbage collection (a stop-the-world
		// leaves Ms waiting for a P; see smp.Idle), and with -oversub
		// after the vCPUs hosted more Ms than there are of them
		workers(smp.NumCPU())
		runtime.GC()
		if *withOversub {
			rep.Check(oversub(smp.NumCPU()))
		}
		_, _, before := smp.Hosting(smp.NumCPU())
		fmt.Println("SMP IDLE sleeping", *idle)
		time.Sleep(*idle)
		_, _, after := smp.Hosting(smp.NumCPU())
		for i := range after {
			after[i] -= before[i]
		}
		fmt.Println("SMP IDLE done; M switches meanwhile", after, "; HLTs skipped", trap.HaltsSkipped())
		if *withOversub && rep.Done() > 0 {
			os.Exit(1)
		}
		return
	case *suspend:
		suspendLoop()
		return
	case *procsAbove:
		fmt.Println("SMP PROCS-ABOVE raising GOMAXPROCS to", 2*smp.NumCPU())
		runtime.GOMAXPROCS(2 * smp.NumCPU())
		workers(smp.NumCPU())
		fmt.Println("SMP PROCS-ABOVE still running")
		return
	case *hold:
		fmt.Println("SMP HOLD waiting for xl shutdown")
		<-control.Context().Done()
		fmt.Println("SMP HOLD shutting down")
		return
	}
	n := smp.NumCPU()
	if runtime.NumCPU() != n || runtime.GOMAXPROCS(0) != n {
		rep.Check("count", fmt.Errorf("runtime.NumCPU %d, GOMAXPROCS %d, vCPUs %d", runtime.NumCPU(), runtime.GOMAXPROCS(0), n), "")
	} else {
		rep.Check("count", nil, fmt.Sprintf("runtime.NumCPU = GOMAXPROCS = %d vCPUs", n))
	}
	rep.Check(workers(n))
	rep.Check(clock(n))
	rep.Check(stress(n))
	if *withGrants {
		rep.Check(grants(n))
	}
	if *gc {
		rep.Check(alloc(n))
	}
	if *withOversub {
		rep.Check(oversub(n))
	}
	rep.Check(vcpuInfo(n))
	if on, extra, sw := smp.Hosting(n); on {
		fmt.Printf("SMP HOSTING extra=%d switches=%v\n", extra, sw)
	}
	fmt.Printf("SMP ENTRIES upcall=%d wake=%d retry=%d redelivered=%d halts-skipped=%d\n",
		trap.Entries(platform.UpcallVector), trap.Entries(platform.WakeVector),
		trap.Entries(platform.RetryVector), trap.Redelivered(), trap.HaltsSkipped())
	if rep.Done() > 0 {
		os.Exit(1)
	}
}

// stressSize scales the cases: rounds per ping-pong pair, timers per
// timer goroutine, clock readings per clock goroutine, and how long the
// workers run.
type stressSize struct {
	rounds, timers, reads int
	work                  time.Duration
}

var size = stressSize{rounds: 2000, timers: 200, reads: 20000, work: 2 * time.Second}

// vcpuInfoRounds is how many round trips vcpuInfo makes per vCPU.
const vcpuInfoRounds = 20

// vcpuInfo checks that every vCPU's vcpu_info is in its registered area
// and that Xen flags events there: one vCPU at a time, with nothing else
// of the guest's own in flight, a loopback pair whose two ports are bound
// to that vCPU carries vcpuInfoRounds round trips, and notifications must
// have been found through that vCPU's own vcpu_info (its selector; a
// scan through another vCPU's could also find them, so not every one
// is).
func vcpuInfo(n int) (string, error, string) {
	ev := platform.Domain().Events()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var err error
	var parts []string
	for i := 0; i < n && err == nil; i++ {
		reg := boot.VCPUInfoRegistered(i)
		before := ev.DeliveredOn(i)
		if perr := pingPong(ctx, ev, i, vcpuInfoRounds); perr != nil {
			err = fmt.Errorf("vCPU %d: %w", i, perr)
			break
		}
		got := ev.DeliveredOn(i) - before
		parts = append(parts, fmt.Sprintf("vcpu%d(registered=%v found=%d)", i, reg, got))
		switch {
		case !reg:
			err = fmt.Errorf("vCPU %d's vcpu_info is not in its registered area", i)
		case got == 0:
			err = fmt.Errorf("none of %d notifications to vCPU %d was found through its vcpu_info", 2*vcpuInfoRounds, i)
		}
	}
	detail := fmt.Sprintf("%d vCPUs (%d beyond the shared-info page's %d), %d round trips each on a pair bound to it: %s",
		n, max(0, n-boot.SharedVCPUs), boot.SharedVCPUs, vcpuInfoRounds, strings.Join(parts, " "))
	if err != nil {
		err = fmt.Errorf("%w (%s)", err, detail)
	}
	return "vcpuinfo", err, detail
}

// pingPong makes rounds round trips over a loopback event-channel pair
// whose two ports are bound to vCPU v, and closes it.
func pingPong(ctx context.Context, ev *evxen.Events, v, rounds int) error {
	a, err := ev.AllocUnbound(domid.Self)
	if err != nil {
		return err
	}
	defer ev.Close(a)
	b, err := ev.BindInterdomain(domid.Self, a)
	if err != nil {
		return err
	}
	defer ev.Close(b)
	if err := ev.BindVCPU(a, v); err != nil {
		return err
	}
	if err := ev.BindVCPU(b, v); err != nil {
		return err
	}
	errc := make(chan error, 1)
	go func() { // responder on a
		var seen evtchn.Generation
		for i := 0; i < rounds; i++ {
			g, err := ev.Wait(ctx, a, seen)
			if err != nil {
				errc <- fmt.Errorf("responder round %d: %w", i, err)
				return
			}
			seen = g
			if err := ev.Notify(a); err != nil {
				errc <- err
				return
			}
		}
		errc <- nil
	}()
	var seen evtchn.Generation
	for i := 0; i < rounds; i++ {
		if err := ev.Notify(b); err != nil {
			return err
		}
		g, err := ev.Wait(ctx, b, seen)
		if err != nil {
			return fmt.Errorf("round %d: %w", i, err)
		}
		seen = g
	}
	return <-errc
}

// spin does CPU work that calls functions (the runtime preempts at
// function entries only).
func spin(seed uint64) uint64 {
	var b [64]byte
	for i := range b {
		b[i] = byte(seed >> (i % 8))
	}
	s := sha256.Sum256(b[:])
	return uint64(s[0]) | uint64(s[1])<<8
}

// workers runs 4 goroutines per vCPU for a while, each counting its
// rounds on the vCPU it ran them on.
func workers(n int) (string, error, string) {
	var counts [smp.MaxCPUs]atomic.Uint64
	var stop atomic.Bool
	var wg sync.WaitGroup
	var sink atomic.Uint64
	for w := 0; w < 4*n; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			x := uint64(w)
			for i := 0; !stop.Load(); i++ {
				x = spin(x)
				counts[smp.Current()].Add(1)
				if i%16 == 0 {
					// the runtime has no time slices (no sysmon on
					// GOOS=tamago): yield, so main's timer runs
					runtime.Gosched()
				}
			}
			sink.Add(x)
		}(w)
	}
	time.Sleep(size.work)
	stop.Store(true)
	wg.Wait()
	detail, err := perVCPU(counts[:n], "ran no worker round")
	if err != nil {
		err = fmt.Errorf("%w (%s)", err, detail)
	}
	return "workers", err, detail
}

// perVCPU formats per-vCPU counts as "vcpu0=N vcpu1=N ..." and fails,
// with "vCPU i " + what, for the first vCPU whose count is zero.
func perVCPU(counts []atomic.Uint64, what string) (string, error) {
	var parts []string
	var err error
	for i := range counts {
		c := counts[i].Load()
		parts = append(parts, fmt.Sprintf("vcpu%d=%d", i, c))
		if c == 0 && err == nil {
			err = fmt.Errorf("vCPU %d %s", i, what)
		}
	}
	return strings.Join(parts, " "), err
}

// stress runs, at once: goroutines ping-ponging over unbuffered channels,
// goroutines sleeping on short timers, and one event-channel loopback pair
// per vCPU whose receiving port is bound to that vCPU, each carrying a
// ping-pong whose every notification must arrive (a lost wake-up hangs
// and the 2-minute deadline fails it).
func stress(n int) (string, error, string) {
	rounds := size.rounds
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	var chanOps, timerOps, events atomic.Uint64

	for p := 0; p < 2*n; p++ { // channel ping-pong pairs
		a, b := make(chan int), make(chan int)
		wg.Add(2)
		go func() {
			defer wg.Done()
			for i := 0; i < rounds; i++ {
				a <- i
				if <-b != i {
					errs <- fmt.Errorf("channel pair: out of order")
					return
				}
				chanOps.Add(1)
			}
		}()
		go func() {
			defer wg.Done()
			for i := 0; i < rounds; i++ {
				b <- <-a
			}
		}()
	}
	for t := 0; t < 2*n; t++ { // timers
		wg.Add(1)
		go func(t int) {
			defer wg.Done()
			for i := 0; i < size.timers; i++ {
				d := time.Duration(50+(t*37+i*11)%400) * time.Microsecond
				start := time.Now()
				tm := time.NewTimer(d)
				select {
				case <-tm.C:
				case <-ctx.Done():
					errs <- fmt.Errorf("timer %d round %d: not fired after %v", t, i, time.Since(start))
					return
				}
				timerOps.Add(1)
			}
		}(t)
	}
	ev := platform.Domain().Events()
	for v := 0; v < n; v++ { // event loopback pairs, one per vCPU
		a, err := ev.AllocUnbound(domid.Self)
		if err != nil {
			return "stress", err, ""
		}
		defer ev.Close(a)
		b, err := ev.BindInterdomain(domid.Self, a)
		if err != nil {
			return "stress", err, ""
		}
		defer ev.Close(b)
		if err := ev.BindVCPU(b, v); err != nil {
			return "stress", err, ""
		}
		if err := ev.BindVCPU(a, (v+1)%n); err != nil {
			return "stress", err, ""
		}
		wg.Add(2)
		go func() { // responder on a
			defer wg.Done()
			var seen evtchn.Generation
			for i := 0; i < rounds; i++ {
				g, err := ev.Wait(ctx, a, seen)
				if err != nil {
					errs <- fmt.Errorf("event pair on vCPU %d: responder round %d: %w", v, i, err)
					return
				}
				seen = g
				if err := ev.Notify(a); err != nil {
					errs <- err
					return
				}
			}
		}()
		go func() { // initiator on b
			defer wg.Done()
			var seen evtchn.Generation
			for i := 0; i < rounds; i++ {
				if err := ev.Notify(b); err != nil {
					errs <- err
					return
				}
				g, err := ev.Wait(ctx, b, seen)
				if err != nil {
					errs <- fmt.Errorf("event pair on vCPU %d: round %d: %w", v, i, err)
					return
				}
				if g != seen+1 {
					errs <- fmt.Errorf("event pair on vCPU %d: round %d: generation %d -> %d", v, i, seen, g)
					return
				}
				seen = g
				events.Add(1)
			}
		}()
	}
	portsBefore := ev.Stats().Ports
	var vc vchanTraffic
	for p := 0; p < vchanPairs; p++ { // vchan pairs, their ports on different vCPUs
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := vc.pair(ctx, ev, p, n); err != nil {
				errs <- err
			}
		}()
	}
	start := time.Now()
	wg.Wait()
	close(errs)
	if err := <-errs; err != nil {
		return "stress", err, ""
	}
	if left := ev.Stats().Ports - portsBefore; left != 0 {
		return "stress", fmt.Errorf("the vchan pairs left %d ports bound", left), ""
	}
	return "stress", nil, fmt.Sprintf("%d channel round trips, %d timers, %d event round trips, %s on %d vCPUs in %v",
		chanOps.Load(), timerOps.Load(), events.Load(), vc.String(), n, time.Since(start).Round(time.Millisecond))
}

// hashBench hashes independent 64 KiB blocks with SHA-256 on GOMAXPROCS
// workers.
func hashBench() {
	const blockSize = 64 << 10
	const blocks = 256
	workers := runtime.GOMAXPROCS(0)
	data := make([]byte, blockSize)
	for i := range data {
		data[i] = byte(i * 7)
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	sums := make([][32]byte, blocks)
	start := time.Now()
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= blocks {
					return
				}
				h := sha256.New()
				h.Write([]byte{byte(i), byte(i >> 8)})
				h.Write(data)
				copy(sums[i][:], h.Sum(nil))
			}
		}()
	}
	wg.Wait()
	el := time.Since(start)
	fmt.Printf("SMP BENCH vcpus=%d workers=%d blocks=%d bytes=%d ns=%d\n", smp.NumCPU(), workers, blocks, blocks*blockSize, el.Nanoseconds())
}
