//go:build tamago

// Command xstest is the tier-B guest test of the xenstore client against
// dom0's real store (xenstored or oxenstored). It prints one PASS or FAIL
// line per case, in the guest tests' case-line format (see
// qemu/guest_test.go), a BENCH line, and the tally:
//
//	xstest: PASS name detail
//	xstest: FAIL name: reason
//	xstest: BENCH xenstore READ round trip: ...
//	xstest: DONE pass=N fail=M
//
// The cases are round-trips, watch, transaction, permissions, concurrent,
// latency and anomalies. Cases that need dom0 signal it through data/ready
// (the dom0 script of qemu/xenstore_test.go answers):
//
//	data/ready = "watch"  dom0 writes data/w/x = hello
//	data/ready = "tx"     dom0 writes data/tx/x = dom0, then data/tx/dom0done
//
// and dom0 made /gozen-private readable by dom0 only before the guest
// started.
package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gozen-dev/gozen/platform"
	"github.com/gozen-dev/gozen/xenbus"
)

var passed, failed int

// pass prints the PASS line of case name.
func pass(name, format string, args ...any) {
	passed++
	fmt.Printf("xstest: PASS "+name+" "+format+"\n", args...)
}

// fail prints the FAIL line of case name.
func fail(name, format string, args ...any) {
	failed++
	fmt.Printf("xstest: FAIL "+name+": "+format+"\n", args...)
}

func main() {
	xs, err := platform.Domain().Store()
	if err != nil {
		fail("connect", "%v", err)
		fmt.Printf("xstest: DONE pass=%d fail=%d\n", passed, failed)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 120*time.Second)
	defer cancel()
	fmt.Println("xstest: connected, home", xs.Home())
	roundTrips(ctx, xs)
	watch(ctx, xs)
	transaction(ctx, xs)
	permissions(ctx, xs)
	concurrent(ctx, xs)
	latency(ctx, xs)
	if st := xs.Stats(); st != (xenbus.Stats{}) {
		fail("anomalies", "client tolerated anomalies: %+v", st)
	} else {
		pass("anomalies", "none tolerated by the client")
	}
	fmt.Printf("xstest: DONE pass=%d fail=%d\n", passed, failed)
}

func roundTrips(ctx context.Context, xs *xenbus.Client) {
	vals := map[string][]byte{
		"data/rt/a":       []byte("1"),
		"data/rt/b":       []byte("two"),
		"data/rt/empty":   {},
		"data/rt/bin":     {1, 2, 0xff, ' '},
		"data/rt/sub/big": bytes.Repeat([]byte("x"), 1024), // C xenstored: 2048-byte node quota
	}
	for p, v := range vals {
		if err := xs.Write(ctx, p, v); err != nil {
			fail("round-trips", "write %s: %v", p, err)
			return
		}
	}
	for p, v := range vals {
		got, err := xs.Read(ctx, p)
		if err != nil || !bytes.Equal(got, v) {
			fail("round-trips", "read %s = %q, %v (want %q)", p, got, err, v)
			return
		}
	}
	abs, err := xs.ReadString(ctx, xs.Home()+"/data/rt/b")
	if err != nil || abs != "two" {
		fail("round-trips", "absolute read = %q, %v", abs, err)
		return
	}
	names, err := xs.Directory(ctx, "data/rt")
	sort.Strings(names)
	if want := []string{"a", "b", "bin", "empty", "sub"}; err != nil || !slices.Equal(names, want) {
		fail("round-trips", "directory = %q, %v (want %q)", names, err, want)
		return
	}
	if err := xs.Mkdir(ctx, "data/rt/dir"); err != nil {
		fail("round-trips", "mkdir: %v", err)
		return
	}
	if v, err := xs.ReadString(ctx, "data/rt/dir"); err != nil || v != "" {
		fail("round-trips", "new directory reads %q, %v", v, err)
		return
	}
	if err := xs.Rm(ctx, "data/rt/a"); err != nil {
		fail("round-trips", "rm: %v", err)
		return
	}
	if _, err := xs.Read(ctx, "data/rt/a"); !errors.Is(err, fs.ErrNotExist) {
		fail("round-trips", "read after rm: %v, want ENOENT", err)
		return
	}
	perms, err := xs.GetPerms(ctx, "data/rt/b")
	if err != nil || len(perms) == 0 {
		fail("round-trips", "get perms: %v %v", perms, err)
		return
	}
	if err := xs.Rm(ctx, "data/rt"); err != nil {
		fail("round-trips", "rm tree: %v", err)
		return
	}
	if _, err := xs.Directory(ctx, "data/rt"); !errors.Is(err, fs.ErrNotExist) {
		fail("round-trips", "directory after rm of the tree: %v, want ENOENT", err)
		return
	}
	pass("round-trips", "write/read of %d nodes (binary, empty, 1 KiB), absolute path, directory, mkdir, rm, get perms %v", len(vals), perms)
}

func watch(ctx context.Context, xs *xenbus.Client) {
	w, err := xs.Watch(ctx, "data/w")
	if err != nil {
		fail("watch", "%v", err)
		return
	}
	defer w.Unwatch(ctx)
	want := xs.Home() + "/data/w/x"
	if err := xs.WriteString(ctx, "data/ready", "watch"); err != nil {
		fail("watch", "signalling dom0: %v", err)
		return
	}
	start := time.Now()
	events := 0
	timeout := time.After(60 * time.Second)
	for {
		select {
		case ev, ok := <-w.Events():
			if !ok {
				fail("watch", "channel closed: %v", xs.Err())
				return
			}
			events++
			if ev.Path != want {
				continue // the initial event
			}
			v, err := xs.ReadString(ctx, "data/w/x")
			if err != nil || v != "hello" {
				fail("watch", "fired for %s but it reads %q, %v", ev.Path, v, err)
				return
			}
			pass("watch", "fired for dom0's xenstore-write of %s (%d events, %v after signalling)", ev.Path, events, time.Since(start).Round(time.Millisecond))
			return
		case <-timeout:
			fail("watch", "no event for %s within 60 s (%d events)", want, events)
			return
		}
	}
}

func transaction(ctx context.Context, xs *xenbus.Client) {
	if err := xs.WriteString(ctx, "data/tx/x", "0"); err != nil {
		fail("transaction", "%v", err)
		return
	}
	attempts := 0
	err := xs.Transaction(ctx, func(tx *xenbus.Tx) error {
		attempts++
		v, err := tx.ReadString(ctx, "data/tx/x")
		if err != nil {
			return err
		}
		if attempts == 1 {
			// let dom0 change x behind the transaction's back
			if err := xs.WriteString(ctx, "data/ready", "tx"); err != nil {
				return err
			}
			for i := 0; ; i++ {
				if _, err := xs.Read(ctx, "data/tx/dom0done"); err == nil {
					break
				}
				if i > 600 {
					return errors.New("dom0 never wrote data/tx/dom0done")
				}
				time.Sleep(100 * time.Millisecond)
			}
		}
		return tx.WriteString(ctx, "data/tx/x", v+"+guest")
	})
	v, rerr := xs.ReadString(ctx, "data/tx/x")
	switch {
	case err != nil:
		fail("transaction", "%v (after %d attempts)", err, attempts)
	case attempts < 2:
		fail("transaction", "committed at the first attempt although dom0 wrote x meanwhile (x = %q)", v)
	case rerr != nil || v != "dom0+guest":
		fail("transaction", "x = %q, %v after commit, want \"dom0+guest\"", v, rerr)
	default:
		pass("transaction", "conflicting dom0 write made the commit fail with EAGAIN; retried and committed after %d attempts, x = %q", attempts, v)
	}
}

func permissions(ctx context.Context, xs *xenbus.Client) {
	var wrong []string
	check := func(what string, err error) {
		if !errors.Is(err, fs.ErrPermission) {
			wrong = append(wrong, fmt.Sprintf("%s: got %v, want EACCES", what, err))
		}
	}
	check("write /local/domain/0/foo", xs.WriteString(ctx, "/local/domain/0/foo", "x"))
	_, err := xs.Read(ctx, "/gozen-private")
	check("read dom0's private /gozen-private", err)
	perr := err
	check("rm /gozen-private", xs.Rm(ctx, "/gozen-private"))
	_, err = xs.Directory(ctx, "/gozen-private")
	check("directory of /gozen-private", err)
	if len(wrong) > 0 {
		fail("permissions", "%s", strings.Join(wrong, "; "))
	} else {
		pass("permissions", "writes outside our domain and reads of dom0's private node fail with EACCES (%v)", perr)
	}
}

func concurrent(ctx context.Context, xs *xenbus.Client) {
	const nodes, workers, each = 50, 50, 20
	for i := 0; i < nodes; i++ {
		if err := xs.WriteString(ctx, fmt.Sprintf("data/c/n%d", i), fmt.Sprintf("value-%d-%d", i, i*7919)); err != nil {
			fail("concurrent", "setup: %v", err)
			return
		}
	}
	var good, bad atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	start := time.Now()
	for g := 0; g < workers; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; j < each; j++ {
				k := (g*each + j) % nodes
				v, err := xs.ReadString(ctx, fmt.Sprintf("data/c/n%d", k))
				if err != nil || v != fmt.Sprintf("value-%d-%d", k, k*7919) {
					bad.Add(1)
					firstErr.CompareAndSwap(nil, fmt.Sprintf("n%d: %q %v", k, v, err))
					continue
				}
				good.Add(1)
			}
		}()
	}
	wg.Wait()
	d := time.Since(start)
	if bad.Load() != 0 || good.Load() != workers*each {
		fail("concurrent", "%d right, %d wrong answers of %d (first: %v)", good.Load(), bad.Load(), workers*each, firstErr.Load())
		return
	}
	pass("concurrent", "%d reads from %d goroutines all got their own answers in %v (%.0f requests/s)",
		workers*each, workers, d.Round(time.Millisecond), float64(workers*each)/d.Seconds())
	xs.Rm(ctx, "data/c")
}

func latency(ctx context.Context, xs *xenbus.Client) {
	const n = 500
	ds := make([]time.Duration, 0, n)
	for i := 0; i < n+20; i++ {
		t := time.Now()
		if _, err := xs.Read(ctx, "domid"); err != nil {
			fail("latency", "%v", err)
			return
		}
		if i >= 20 { // warm-up
			ds = append(ds, time.Since(t))
		}
	}
	var sum time.Duration
	for _, d := range ds {
		sum += d
	}
	slices.Sort(ds)
	fmt.Printf("xstest: BENCH xenstore READ round trip: mean %v, min %v, median %v, p99 %v over %d reads\n",
		(sum / n).Round(time.Microsecond), ds[0].Round(time.Microsecond), ds[n/2].Round(time.Microsecond), ds[n*99/100].Round(time.Microsecond), n)
	pass("latency", "%d READs answered", n+20)
}
