//go:build tamago

// Command xentest is the guest self-test of Gozen's Xen primitives: event
// channels and grant tables, driven through the portable interfaces' Xen
// implementations. Every case prints one line, "XENTEST PASS name ..." or
// "XENTEST FAIL name ...", benchmarks print "XENTEST BENCH name value unit",
// and the run ends with "XENTEST DONE pass=N fail=M".
package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"time"
	_ "unsafe"

	"github.com/gozen-dev/gozen/arch/amd64/irq"
	"github.com/gozen-dev/gozen/arch/amd64/trap"
	"github.com/gozen-dev/gozen/boot"
	"github.com/gozen-dev/gozen/domid"
	"github.com/gozen-dev/gozen/evtchn"
	"github.com/gozen-dev/gozen/evtchn/evxen"
	"github.com/gozen-dev/gozen/gnttab"
	"github.com/gozen-dev/gozen/gnttab/gntxen"
	"github.com/gozen-dev/gozen/hypercall"
	"github.com/gozen-dev/gozen/platform"
	"github.com/gozen-dev/gozen/qemu/guests/internal/report"
)

var rep = report.New("XENTEST")

const rounds = 100000

func main() {
	ev := platform.Domain().Events()
	self, ok := boot.DomID()
	if !ok {
		fmt.Println("XENTEST FAIL domid: Xen's HVM CPUID leaf does not give the domid")
		os.Exit(1)
	}
	fmt.Printf("XENTEST domid %d\n", self)
	basePorts := ev.Stats().Ports

	rep.Check("evtchn-loopback", loopback(ev), fmt.Sprintf("%d notifications each way, none lost", rounds))
	rep.Check("evtchn-close-wakes", closeWakes(ev), "waiter got ErrClosed")
	rep.Check("evtchn-bad-port", badPort(ev), "")
	rep.Check("irq-deferred", irqDeferred(ev), "an upcall taken while the runtime held a lock was deferred, retried and delivered")
	rep.Check("irq-halt-skip", haltSkip(), "an interrupt taken just before a HLT made the entry return past it")
	rep.Check("virq-timer", virqTimer(), fmt.Sprintf("%d timer events", platform.Domain().TimerEvents()))
	rep.Check("sleep-precision", sleepPrecision(), "")

	g, err := platform.Domain().Grants()
	rep.Check("gnttab-setup", err, fmt.Sprintf("hole at %#x", platform.Domain().GrantHole()))
	if err == nil {
		dom := domid.ID(self)
		rep.Check("gnttab-cycles", grantCycles(g, dom), fmt.Sprintf("%d access/end-access cycles, no leaked refs", rounds))
		rep.Check("gnttab-copy", grantCopy(g, dom), "GNTTABOP_copy moved the data both ways")
		rep.Check("gnttab-selfmap-refused", selfMap(g, dom), "Xen cannot map a PVH domain's own grants; Map says so")
		rep.Check("gnttab-map-ungranted", mapUngranted(g, dom), "")
		s := g.Stats()
		if s.Grants != 0 || s.Shares != 0 || s.Mappings != 0 {
			rep.Check("gnttab-leftovers", fmt.Errorf("left over: %+v", s), "")
		} else {
			rep.Check("gnttab-leftovers", nil, fmt.Sprintf("none (%d table frames)", g.Frames()))
		}
	}
	if n := ev.Stats().Ports; n != basePorts {
		rep.Check("evtchn-leftovers", fmt.Errorf("%d ports bound, %d at start", n, basePorts), "")
	} else {
		rep.Check("evtchn-leftovers", nil, "none")
	}
	if rep.Done() > 0 {
		os.Exit(1)
	}
}

// loopback ping-pongs over an interdomain channel bound to ourselves.
func loopback(ev *evxen.Events) error {
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
	st, err := ev.Status(b)
	if err != nil || st.State != 2 || st.RemotePort != uint32(a) {
		return fmt.Errorf("status of port %d: %+v %v (want interdomain to %d)", b, st, err, a)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute) // a hang detector: 100,000 round trips take ~170 s under emulation
	defer cancel()
	errc := make(chan error, 1)
	go func() { // the responder: every notification on a is answered on a
		var seen evtchn.Generation
		for i := 0; i < rounds; i++ {
			g, err := ev.Wait(ctx, a, seen)
			if err != nil {
				errc <- fmt.Errorf("responder round %d: %w", i, err)
				return
			}
			if g != seen+1 {
				errc <- fmt.Errorf("responder round %d: generation jumped %d -> %d", i, seen, g)
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
	start := time.Now()
	for i := 0; i < rounds; i++ {
		if err := ev.Notify(b); err != nil {
			return err
		}
		g, err := ev.Wait(ctx, b, seen)
		if err != nil {
			return fmt.Errorf("round %d: %w", i, err)
		}
		if g != seen+1 {
			return fmt.Errorf("round %d: generation jumped %d -> %d", i, seen, g)
		}
		seen = g
	}
	el := time.Since(start)
	if err := <-errc; err != nil {
		return err
	}
	if seen != rounds {
		return fmt.Errorf("saw %d notifications, sent %d", seen, rounds)
	}
	rep.Bench("evtchn-roundtrip", float64(el.Nanoseconds())/rounds/1000, "us/roundtrip")
	return nil
}

func closeWakes(ev *evxen.Events) error {
	a, err := ev.AllocUnbound(domid.Self)
	if err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { _, err := ev.Wait(context.Background(), a, 0); done <- err }()
	time.Sleep(10 * time.Millisecond)
	if err := ev.Close(a); err != nil {
		return err
	}
	select {
	case err := <-done:
		if !errors.Is(err, evtchn.ErrClosed) {
			return fmt.Errorf("waiter woke with %v", err)
		}
		return nil
	case <-time.After(5 * time.Second):
		return errors.New("waiter not woken by Close")
	}
}

func badPort(ev *evxen.Events) error {
	for _, p := range []evtchn.Port{0, 4095, 5000} {
		if err := ev.Notify(p); !errors.Is(err, evtchn.ErrBadPort) {
			return fmt.Errorf("Notify(%d) = %v, want ErrBadPort", p, err)
		}
	}
	if _, err := ev.BindInterdomain(domid.Self, 4000); !errors.Is(err, evtchn.ErrNoPeer) {
		return fmt.Errorf("binding to an unallocated port = %v, want ErrNoPeer", err)
	}
	return nil
}

// virqTimer arms vCPU 0's one-shot timer and waits for its VIRQ_TIMER.
func virqTimer() error {
	before := platform.Domain().TimerEvents()
	deadline := boot.SystemTime() + uint64(20*time.Millisecond)
	if err := hypercall.SetSingleshotTimer(0, deadline, 0); err != nil {
		return err
	}
	for i := 0; i < 100 && platform.Domain().TimerEvents() == before; i++ {
		time.Sleep(10 * time.Millisecond)
	}
	if platform.Domain().TimerEvents() == before {
		return errors.New("no VIRQ_TIMER event after arming the one-shot timer")
	}
	if now := boot.SystemTime(); now < deadline {
		return fmt.Errorf("VIRQ_TIMER fired %v before its deadline", time.Duration(deadline-now))
	}
	return nil
}

func grantCycles(g *gntxen.Grants, self domid.ID) error {
	before := g.Stats()
	start := time.Now()
	for i := 0; i < rounds; i++ {
		s, err := g.Share(self, 1, true)
		if err != nil {
			return fmt.Errorf("cycle %d: %w", i, err)
		}
		if err := g.Unshare(s); err != nil {
			return fmt.Errorf("cycle %d: %w", i, err)
		}
	}
	el := time.Since(start)
	if after := g.Stats(); after.Grants != before.Grants || after.Shares != before.Shares {
		return fmt.Errorf("leaked: before %+v after %+v", before, after)
	}
	rep.Bench("gnttab-share-unshare", float64(rounds)/el.Seconds(), "cycles/s")
	return nil
}

func grantCopy(g *gntxen.Grants, self domid.ID) error {
	src, err := g.Share(self, 1, false)
	if err != nil {
		return err
	}
	defer g.Unshare(src)
	dst, err := g.Share(self, 1, true)
	if err != nil {
		return err
	}
	defer g.Unshare(dst)
	for i := range src.Buf {
		src.Buf[i] = byte(i * 7)
	}
	got := make([]byte, 1000)
	if err := g.CopyFrom(self, src.Refs[0], 3000, got); err != nil {
		return fmt.Errorf("CopyFrom: %w", err)
	}
	if !bytes.Equal(got, src.Buf[3000:4000]) {
		return errors.New("CopyFrom returned wrong data")
	}
	msg := []byte("copied into a granted page by GNTTABOP_copy")
	if err := g.CopyTo(self, dst.Refs[0], 100, msg); err != nil {
		return fmt.Errorf("CopyTo: %w", err)
	}
	if !bytes.Equal(dst.Buf[100:100+len(msg)], msg) {
		return errors.New("CopyTo left wrong data")
	}
	if err := g.CopyTo(self, src.Refs[0], 0, msg); !errors.Is(err, gnttab.ErrReadOnly) && !errors.Is(err, gnttab.ErrBadRef) {
		return fmt.Errorf("CopyTo a read-only grant = %v, want an error", err)
	}
	if err := g.CopyFrom(self, src.Refs[0], 4000, got[:200]); !errors.Is(err, gnttab.ErrBounds) {
		return fmt.Errorf("copy across the page end = %v, want ErrBounds", err)
	}
	return nil
}

func selfMap(g *gntxen.Grants, self domid.ID) error {
	s, err := g.Share(self, 1, true)
	if err != nil {
		return err
	}
	defer g.Unshare(s)
	for _, dom := range []domid.ID{self, domid.Self} {
		if _, err := g.Map(dom, s.Refs, true); !errors.Is(err, gntxen.ErrSelfMap) {
			return fmt.Errorf("Map of own grant (domain %d) = %v, want ErrSelfMap", dom, err)
		}
	}
	return nil
}

// mapUngranted maps refs that were never granted to us: dom0's when we are
// a domU, otherwise a domain that does not exist.
func mapUngranted(g *gntxen.Grants, self domid.ID) error {
	if self == 0 {
		_, err := g.Map(1234, []gnttab.Ref{8}, false)
		if !errors.Is(err, hypercall.GNTSTBadDomain) {
			return fmt.Errorf("mapping from a missing domain = %v, want GNTST_bad_domain", err)
		}
		fmt.Printf("XENTEST note missing domain: %v\n", err)
		return nil
	}
	// a ref inside dom0's table that dom0 did not grant us
	_, err := g.Map(0, []gnttab.Ref{gntxen.EntriesPerFrame - 1}, false)
	if !errors.Is(err, gnttab.ErrBadRef) || !errors.Is(err, hypercall.GNTSTGeneralError) && !errors.Is(err, hypercall.GNTSTBadGntref) {
		return fmt.Errorf("mapping an ungranted ref = %v", err)
	}
	fmt.Printf("XENTEST note ungranted ref: %v\n", err)
	// a ref past the end of dom0's table
	_, err = g.Map(0, []gnttab.Ref{1 << 20}, false)
	if !errors.Is(err, hypercall.GNTSTBadGntref) {
		return fmt.Errorf("mapping a ref past the table = %v, want GNTST_bad_gntref", err)
	}
	fmt.Printf("XENTEST note out-of-range ref: %v\n", err)
	return nil
}

// sleepPrecision measures how late time.Sleep wakes (idle blocking and the
// wake-up path), as a benchmark and a sanity bound.
func sleepPrecision() error {
	const n = 50
	var total, worst time.Duration
	for i := 0; i < n; i++ {
		start := time.Now()
		time.Sleep(2 * time.Millisecond)
		late := time.Since(start) - 2*time.Millisecond
		if late < 0 {
			return fmt.Errorf("time.Sleep(2ms) returned %v early", -late)
		}
		total += late
		worst = max(worst, late)
	}
	rep.Bench("sleep-overshoot-mean", float64(total.Microseconds())/n, "us")
	rep.Bench("sleep-overshoot-max", float64(worst.Microseconds()), "us")
	var long time.Duration
	for i := 0; i < 5; i++ {
		start := time.Now()
		time.Sleep(200 * time.Millisecond)
		long = max(long, time.Since(start)-200*time.Millisecond)
	}
	rep.Bench("sleep200ms-overshoot-max", float64(long.Microseconds()), "us")
	if worst > 100*time.Millisecond {
		return fmt.Errorf("time.Sleep(2ms) woke %v late", worst)
	}
	return nil
}

//go:linkname procPin runtime.procPin
func procPin() int

//go:linkname procUnpin runtime.procUnpin
func procUnpin()

// irqDeferred raises an upcall while this goroutine holds the runtime's
// lock count up (as runtime code holding a lock does): the interrupt entry
// must not wake the upcall goroutine then, but record the interrupt and
// arm its retry timer, and the notification must still arrive, through a
// retry once the count is back to zero. The goroutine spins (there is no
// preemption), so neither idle nor the scheduler can make the wake-up.
func irqDeferred(ev *evxen.Events) error {
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
	// Xen notified the new port at the bind (evxen absorbs that
	// notification, but the upcall it raised is still to be scanned):
	// let the upcall goroutine scan it, or the notify below would find
	// the upcall still flagged and raise no interrupt.
	for i := 0; i < 1000 && ev.UpcallPending(); i++ {
		time.Sleep(time.Millisecond)
	}
	if ev.UpcallPending() {
		return errors.New("an upcall stayed flagged for 1 s after the bind")
	}
	before := irq.ReadStats()
	procPin()
	if err := ev.Notify(b); err != nil {
		procUnpin()
		return err
	}
	deadline := time.Now().Add(2 * time.Second)
	for irq.ReadStats().Interrupts == before.Interrupts && time.Now().Before(deadline) {
	}
	pinned := irq.ReadStats()
	// let the retry timer fire at least once more while still pinned
	for irq.ReadStats().Retries == pinned.Retries && time.Now().Before(deadline) {
	}
	procUnpin()
	mid := irq.ReadStats()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := ev.Wait(ctx, a, 0); err != nil {
		return fmt.Errorf("notification not delivered after the lock was released: %w (irq %+v)", err, irq.ReadStats())
	}
	switch {
	case pinned.Interrupts == before.Interrupts:
		return fmt.Errorf("no upcall taken within 2 s of the notify (irq %+v)", pinned)
	case pinned.Direct != before.Direct:
		return fmt.Errorf("the entry woke the upcall goroutine while the lock count was up (before %+v, pinned %+v)", before, pinned)
	case pinned.Deferred == before.Deferred:
		return fmt.Errorf("the upcall was not deferred (before %+v, pinned %+v)", before, pinned)
	case mid.Retries == pinned.Retries:
		return fmt.Errorf("the retry timer did not fire while the lock count was up (%+v)", mid)
	}
	return nil
}

// intBeforeHLT takes an interrupt whose frame points at a HLT not yet
// run (halt_amd64.s).
func intBeforeHLT()

// haltSkip checks the entry slots' guard for idle HLTs (trap.HaltsSkipped):
// an interrupt that arrives between STI and HLT, which the rig's emulated
// nested SVM delivers now and then, must not leave the HLT to sleep with
// its wake-up spent. The interrupt here is a software one (INT), so the
// case is deterministic: the count must rise by exactly one.
func haltSkip() error {
	// without the guard the HLT would sleep until the next interrupt:
	// Xen's one-shot timer (VIRQ_TIMER) bounds that to a second
	if err := hypercall.SetSingleshotTimer(0, boot.SystemTime()+uint64(time.Second), 0); err != nil {
		return err
	}
	defer hypercall.StopSingleshotTimer(0)
	before := trap.HaltsSkipped()
	start := time.Now()
	intBeforeHLT()
	took := time.Since(start)
	if d := trap.HaltsSkipped() - before; d != 1 {
		return fmt.Errorf("HLTs skipped rose by %d, want 1 (the HLT ran: back after %v)", d, took)
	}
	return nil
}
