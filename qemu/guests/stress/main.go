//go:build tamago

// Command stress is a guest-test program that loads one domain with heavy
// event traffic for a set time: goroutines sleeping short random timers,
// event-channel ping-pong over a loopback pair, GNTTABOP_copy round trips
// through its own grants, channel ping-pong between goroutines and
// allocation churn for the garbage collector, all at once. It prints
// progress every -every and ends with
//
//	STRESS PASS secs=S timers=N events=N copies=N chans=N allocs=N
//	STRESS DONE pass=1 fail=0 grants=0 shares=0 mappings=0 ports=0
//
// or a "STRESS FAIL reason" line and exit status 1.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gozen-dev/gozen/boot"
	"github.com/gozen-dev/gozen/domid"
	"github.com/gozen-dev/gozen/evtchn"
	"github.com/gozen-dev/gozen/evtchn/evxen"
	"github.com/gozen-dev/gozen/gnttab/gntxen"
	"github.com/gozen-dev/gozen/platform"
)

var timers, events, copies, chans, allocs atomic.Uint64

func main() {
	dur := flag.Duration("for", time.Minute, "how long to run")
	every := flag.Duration("every", 10*time.Second, "progress interval")
	only := flag.String("only", "timers,events,copies,chans,allocs", "the loads to run, comma-separated")
	flag.Parse()
	on := map[string]bool{}
	for _, w := range strings.Split(*only, ",") {
		on[w] = true
	}
	id, ok := boot.DomID()
	if !ok {
		fail(errors.New("domid unknown"))
	}
	self := domid.ID(id)
	ev := platform.Domain().Events()
	g, err := platform.Domain().Grants()
	if err != nil {
		fail(err)
	}
	basePorts := ev.Stats().Ports
	fmt.Printf("STRESS start for=%v\n", *dur)

	ctx, cancel := context.WithTimeout(context.Background(), *dur)
	defer cancel()
	var wg sync.WaitGroup
	errc := make(chan error, 16)
	run := func(name string, f func(context.Context) error) {
		if !on[name] {
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(ctx); err != nil {
				errc <- fmt.Errorf("%s: %w", name, err)
				cancel()
			}
		}()
	}
	for i := 0; i < 8; i++ {
		run("timers", sleeper)
	}
	run("events", func(ctx context.Context) error { return pingPong(ctx, ev) })
	run("copies", func(ctx context.Context) error { return copyLoop(ctx, g, self) })
	run("chans", chanLoop)
	run("allocs", allocLoop)

	start := time.Now()
	tick := time.NewTicker(*every)
	defer tick.Stop()
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-tick.C:
			fmt.Printf("STRESS t=%.0fs %s\n", time.Since(start).Seconds(), counts())
		}
	}
	wg.Wait()
	select {
	case err := <-errc:
		fail(err)
	default:
	}
	fmt.Printf("STRESS PASS secs=%.0f %s\n", time.Since(start).Seconds(), counts())
	s := g.Stats()
	ports := ev.Stats().Ports - basePorts
	bad := 0
	if s.Grants != 0 || s.Shares != 0 || s.Mappings != 0 || ports != 0 {
		bad = 1
	}
	fmt.Printf("STRESS DONE pass=%d fail=%d grants=%d shares=%d mappings=%d ports=%d\n",
		1-bad, bad, s.Grants, s.Shares, s.Mappings, ports)
	if bad != 0 {
		os.Exit(1)
	}
}

func counts() string {
	return fmt.Sprintf("timers=%d events=%d copies=%d chans=%d allocs=%d",
		timers.Load(), events.Load(), copies.Load(), chans.Load(), allocs.Load())
}

func fail(err error) {
	fmt.Println("STRESS FAIL", err)
	os.Exit(1)
}

// sleeper sleeps random 0-3 ms timers and checks that none returns early.
func sleeper(ctx context.Context) error {
	for ctx.Err() == nil {
		d := time.Duration(rand.IntN(3000)) * time.Microsecond
		t0 := time.Now()
		time.Sleep(d)
		if el := time.Since(t0); el < d {
			return fmt.Errorf("time.Sleep(%v) returned after %v", d, el)
		}
		timers.Add(1)
	}
	return nil
}

// pingPong bounces notifications over a loopback interdomain pair,
// checking that no notification is lost.
func pingPong(ctx context.Context, ev *evxen.Events) error {
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
	rctx, rcancel := context.WithCancel(context.Background())
	defer rcancel()
	done := make(chan error, 1)
	go func() {
		var seen evtchn.Generation
		for {
			g, err := ev.Wait(rctx, a, seen)
			if err != nil {
				if rctx.Err() != nil {
					done <- nil
				} else {
					done <- err
				}
				return
			}
			seen = g
			if err := ev.Notify(a); err != nil {
				done <- err
				return
			}
		}
	}()
	var seen evtchn.Generation
	for ctx.Err() == nil {
		if err := ev.Notify(b); err != nil {
			return err
		}
		wctx, wcancel := context.WithTimeout(context.Background(), 10*time.Second)
		g, err := ev.Wait(wctx, b, seen)
		wcancel()
		if err != nil {
			return fmt.Errorf("after %d round trips: %w (a lost wake-up)", events.Load(), err)
		}
		seen = g
		events.Add(1)
	}
	rcancel()
	return <-done
}

// copyLoop moves data through its own grants with GNTTABOP_copy and
// checks it, sharing and revoking a fresh page every 64 copies.
func copyLoop(ctx context.Context, g *gntxen.Grants, self domid.ID) error {
	buf := make([]byte, 1024)
	got := make([]byte, 1024)
	for ctx.Err() == nil {
		s, err := g.Share(self, 1, true)
		if err != nil {
			return err
		}
		for i := 0; i < 64 && ctx.Err() == nil; i++ {
			for j := range buf {
				buf[j] = byte(rand.Uint32())
			}
			off := rand.IntN(4096 - len(buf))
			if err := g.CopyTo(self, s.Refs[0], off, buf); err != nil {
				return err
			}
			if err := g.CopyFrom(self, s.Refs[0], off, got); err != nil {
				return err
			}
			if !bytes.Equal(buf, got) || !bytes.Equal(s.Buf[off:off+len(buf)], buf) {
				return errors.New("a copy through a grant changed the data")
			}
			copies.Add(1)
			// hypercalls never block: without this the loop would keep
			// the vCPU (Gozen, like TamaGo, has no preemption)
			runtime.Gosched()
		}
		if err := g.Unshare(s); err != nil {
			return err
		}
	}
	return nil
}

// chanLoop ping-pongs values between goroutines.
func chanLoop(ctx context.Context) error {
	ping, pong := make(chan int), make(chan int)
	go func() {
		for v := range ping {
			pong <- v + 1
		}
		close(pong)
	}()
	defer close(ping)
	for i := 0; ctx.Err() == nil; i++ {
		ping <- i
		if v := <-pong; v != i+1 {
			return fmt.Errorf("channel returned %d for %d", v, i)
		}
		chans.Add(1)
	}
	return nil
}

// allocLoop churns the heap so the collector runs throughout.
func allocLoop(ctx context.Context) error {
	var keep [64][]byte
	for i := 0; ctx.Err() == nil; i++ {
		b := make([]byte, 256+rand.IntN(64<<10))
		b[0], b[len(b)-1] = byte(i), byte(i)
		keep[i%len(keep)] = b
		allocs.Add(1)
		if i%256 == 0 {
			time.Sleep(time.Millisecond)
		}
	}
	return nil
}
