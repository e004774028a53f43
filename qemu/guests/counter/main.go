//go:build tamago

// Command counter is the tier-B guest of the suspend tests
// (qemu/suspend_test.go): it counts, and answers dom0 through xenstore,
// across xl save -c, xl save and xl restore.
//
// It prints a numbered tick every 100 ms with its clock,
//
//	TICK seq=N now=UNIXNANO
//
// and after each resume from a suspend request
//
//	COUNTER resumed kind=KIND seq=N domid=D
//
// where KIND is what the platform found (cancelled, same-domain,
// new-domain); it also writes "COUNT KIND" (COUNT resumes so far) to
// data/counter/resumed, so dom0 can see that xenstore works after the
// resume. It watches data/counter/ask and answers each value V written
// there with "V UNIXNANO" in data/counter/answer (dom0 brackets the guest's
// clock with its own). With -refuse it holds a device that refuses to
// suspend, so every suspend request is refused. xl shutdown ends it.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/gozen-dev/gozen/platform"
	"github.com/gozen-dev/gozen/xenbus"
	"github.com/gozen-dev/gozen/xenbus/control"
)

// stubborn is a device that cannot quiesce (-refuse).
type stubborn struct{}

func (stubborn) Name() string { return "test/stubborn" }
func (stubborn) Suspend(context.Context) error {
	return errors.New("counter: this device refuses to suspend (flag -refuse)")
}
func (stubborn) Resume(bool) error { return nil }
func (stubborn) Close() error      { return nil }

func main() {
	refuse := flag.Bool("refuse", false, "hold a device that refuses to suspend")
	flag.Parse()
	p := platform.Domain()
	if *refuse {
		p.AddDevice(stubborn{})
	}
	xs, err := p.Store()
	if err != nil {
		fmt.Println("COUNTER FAIL setup: xenstore:", err)
		return
	}
	ctx := control.Context()
	var seq atomic.Int64
	var resumes atomic.Int64
	control.OnResume(func(k platform.Kind) {
		n := resumes.Add(1)
		wctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		id, err := xs.ReadString(wctx, "domid")
		if err != nil {
			fmt.Println("COUNTER FAIL resume: reading domid:", err)
		}
		fmt.Printf("COUNTER resumed kind=%s seq=%d domid=%s\n", k, seq.Load(), id)
		if err := xs.WriteString(wctx, "data/counter/resumed", fmt.Sprintf("%d %s", n, k)); err != nil {
			fmt.Println("COUNTER FAIL resume: writing data/counter/resumed:", err)
		}
	})
	if err := answerClock(ctx, xs); err != nil {
		fmt.Println("COUNTER FAIL setup:", err)
		return
	}
	select {
	case <-control.Ready():
	case <-time.After(20 * time.Second):
		fmt.Println("COUNTER FAIL setup: control never became ready")
		return
	}
	fmt.Printf("COUNTER ready refuse=%v\n", *refuse)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-tick.C:
			fmt.Printf("TICK seq=%d now=%d\n", seq.Add(1), time.Now().UnixNano())
		case <-ctx.Done():
			fmt.Printf("COUNTER done seq=%d: %v\n", seq.Load(), context.Cause(ctx))
			return
		}
	}
}

// answerClock answers every value written to data/counter/ask with the
// value and the guest's clock in data/counter/answer, until ctx ends.
func answerClock(ctx context.Context, xs *xenbus.Client) error {
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	if err := xs.WriteString(sctx, "data/counter/ask", ""); err != nil {
		return fmt.Errorf("creating data/counter/ask: %w", err)
	}
	w, err := xs.Watch(sctx, "data/counter/ask")
	if err != nil {
		return fmt.Errorf("watching data/counter/ask: %w", err)
	}
	go func() {
		last := ""
		for range w.Events() {
			rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			v, err := xs.ReadString(rctx, "data/counter/ask")
			if err == nil && v != "" && v != last {
				last = v
				now := time.Now().UnixNano()
				err = xs.WriteString(rctx, "data/counter/answer", v+" "+strconv.FormatInt(now, 10))
			}
			cancel()
			// a restored domain's store has no data/counter/ask until dom0 asks
			if err != nil && !errors.Is(err, fs.ErrNotExist) && ctx.Err() == nil {
				fmt.Println("COUNTER clock answer:", err)
			}
		}
	}()
	return nil
}
