// Package evtchntest is the conformance suite for [evtchn.Events]
// implementations. Every implementation's tests call [Run] (both domains in
// one process) and, for transports between processes, [RunProcesses] (the
// second domain in a re-executed test binary).
//
// The suite checks the contract documented in package evtchn: counted
// notifications that are never lost (a 100,000-round ping-pong), coalescing
// that never drops to zero, Close waking waiters with ErrClosed, context
// cancellation, and bad ports and bad binds reported as errors. After each
// case, every domain's Leftovers must report nothing.
package evtchntest

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/gozen-dev/gozen/domid"
	"github.com/gozen-dev/gozen/evtchn"
	"github.com/gozen-dev/gozen/evtchn/evtchntest/twodom"
)

// PingPongs is the number of round trips of the PingPong case.
const PingPongs = 100_000

// caseTimeout bounds each blocking Wait of a case.
const caseTimeout = 30 * time.Second

// Domain is one domain under test.
type Domain = twodom.Domain[evtchn.Events]

// Side is one half of a case.
type Side = twodom.Side[evtchn.Events]

// Run runs the suite with both domains in this process. newPair returns two
// fresh domains that can reach each other.
func Run(t *testing.T, newPair func(t *testing.T) (a, b Domain)) {
	t.Helper()
	twodom.RunInProcess(t, Cases(), newPair)
}

// RunProcesses runs the suite with domain B in a child process (see
// [twodom.RunProcesses]; the calling test must call it unconditionally).
// open returns this process's domain with the given id, using the
// rendezvous directory dir.
func RunProcesses(t *testing.T, open func(t *testing.T, dir string, id domid.ID) Domain) {
	t.Helper()
	twodom.RunProcesses(t, Cases(), open)
}

// Cases returns the suite's cases.
func Cases() []twodom.Case[evtchn.Events] { return CasesWith(Options{}) }

// Options tune the suite for transports much slower than the host's (a
// notification round trip between two Xen domains under emulation takes
// about a millisecond): every case still runs, with fewer repetitions.
type Options struct {
	// PingPongs is the number of round trips of PingPong; 0 means the
	// constant PingPongs.
	PingPongs int
}

// CasesWith returns the suite's cases tuned by o.
func CasesWith(o Options) []twodom.Case[evtchn.Events] {
	n := o.PingPongs
	if n <= 0 {
		n = PingPongs
	}
	return []twodom.Case[evtchn.Events]{
		{Name: "PingPong",
			A: func(t twodom.T, s *Side) { pingPongA(t, s, n) },
			B: func(t twodom.T, s *Side) { pingPongB(t, s, n) }},
		{Name: "BindQuiet", A: bindQuietA, B: bindQuietB},
		{Name: "Coalesced", A: coalescedA, B: coalescedB},
		{Name: "ManyWaiters", A: manyWaitersA, B: manyWaitersB},
		{Name: "CloseWakesWaiters", A: closeWakesA, B: closeWakesB},
		{Name: "RemoteClose", A: remoteCloseA, B: remoteCloseB},
		{Name: "ContextCancel", A: cancelA, B: cancelB},
		{Name: "BadPorts", A: badPortsA, B: badPortsB},
		{Name: "BadBinds", A: badBindsA, B: badBindsB},
		{Name: "Loopback", A: loopbackA, B: twodom.Idle[evtchn.Events]},
	}
}

// offer allocates a port for the peer and sends its number; the peer binds
// with accept. offer then waits until the bind is done.
func offer(t twodom.T, s *Side) evtchn.Port {
	t.Helper()
	p, err := s.Svc.AllocUnbound(s.Peer)
	if err != nil {
		t.Fatalf("AllocUnbound(%d): %v", s.Peer, err)
	}
	s.Send(t, uint64(p))
	if s.Recv(t) != 1 {
		t.Fatalf("peer failed to bind")
	}
	return p
}

// accept binds to the port offered by the peer.
func accept(t twodom.T, s *Side) evtchn.Port {
	t.Helper()
	rp := evtchn.Port(s.Recv(t))
	p, err := s.Svc.BindInterdomain(s.Peer, rp)
	if err != nil {
		s.Send(t, 0)
		t.Fatalf("BindInterdomain(%d, %d): %v", s.Peer, rp, err)
	}
	s.Send(t, 1)
	return p
}

func closePort(t twodom.T, s *Side, p evtchn.Port) {
	t.Helper()
	if err := s.Svc.Close(p); err != nil {
		t.Errorf("Close(%d): %v", p, err)
	}
}

func wait(t twodom.T, s *Side, p evtchn.Port, seen evtchn.Generation) evtchn.Generation {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), caseTimeout)
	defer cancel()
	g, err := s.Svc.Wait(ctx, p, seen)
	if err != nil {
		t.Fatalf("Wait(%d, %d): %v", p, seen, err)
	}
	if g <= seen {
		t.Fatalf("Wait(%d, %d) = %d, not past seen", p, seen, g)
	}
	return g
}

func notify(t twodom.T, s *Side, p evtchn.Port) {
	t.Helper()
	if err := s.Svc.Notify(p); err != nil {
		t.Fatalf("Notify(%d): %v", p, err)
	}
}

// pingPong: A notifies, B waits and answers, n times. Strict
// alternation leaves nothing to coalesce, so each Wait must see exactly one
// more generation.
func pingPongA(t twodom.T, s *Side, n int) {
	p := offer(t, s)
	defer closePort(t, s, p)
	var seen evtchn.Generation
	var slowest time.Duration
	start := time.Now()
	for i := range n {
		rt := time.Now()
		notify(t, s, p)
		g := wait(t, s, p, seen)
		if g != seen+1 {
			t.Fatalf("round %d: generation %d after %d, want exactly one step", i, g, seen)
		}
		seen = g
		slowest = max(slowest, time.Since(rt))
	}
	d := time.Since(start)
	if s.Recv(t) != 2 {
		t.Fatalf("peer did not finish")
	}
	t.Logf("%d round trips in %v, %.1f us each, slowest %v", n, d.Round(time.Millisecond),
		float64(d.Microseconds())/float64(n), slowest.Round(time.Microsecond))
}

func pingPongB(t twodom.T, s *Side, n int) {
	p := accept(t, s)
	defer closePort(t, s, p)
	var seen evtchn.Generation
	for i := range n {
		g := wait(t, s, p, seen)
		if g != seen+1 {
			t.Fatalf("round %d: generation %d after %d, want exactly one step", i, g, seen)
		}
		seen = g
		notify(t, s, p)
	}
	s.Send(t, 2)
}

// bindQuiet: binding counts nothing that was not sent after the bind (Xen
// notifies a freshly bound port conservatively; implementations absorb
// it), so a port starts quiet and the first notification is generation 1.
const quiet = 200 * time.Millisecond

func quietFor(t twodom.T, s *Side, p evtchn.Port, seen evtchn.Generation) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), quiet)
	defer cancel()
	if g, err := s.Svc.Wait(ctx, p, seen); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait(%d, %d) on a quiet port = %d, %v; want no notification", p, seen, g, err)
	}
}

func bindQuietA(t twodom.T, s *Side) {
	p := offer(t, s)
	defer closePort(t, s, p)
	quietFor(t, s, p, 0)
	s.Recv(t) // B found its port quiet
	notify(t, s, p)
	if s.Recv(t) != 1 {
		t.Fatalf("peer did not see exactly one notification")
	}
}

func bindQuietB(t twodom.T, s *Side) {
	p := accept(t, s)
	defer closePort(t, s, p)
	quietFor(t, s, p, 0)
	s.Send(t, 6)
	g := wait(t, s, p, 0)
	quietFor(t, s, p, g)
	if g != 1 {
		s.Send(t, 0)
		t.Fatalf("generation %d after one notification", g)
	}
	s.Send(t, 1)
}

// coalesced: A sends a burst without waiting; B must see at least one and
// at most that many generation steps.
const burst = 1000

func coalescedA(t twodom.T, s *Side) {
	p := offer(t, s)
	defer closePort(t, s, p)
	for range burst {
		notify(t, s, p)
	}
	s.Send(t, 3)
	s.Recv(t)
}

func coalescedB(t twodom.T, s *Side) {
	p := accept(t, s)
	defer closePort(t, s, p)
	s.Recv(t)
	g := wait(t, s, p, 0)
	if g > burst {
		t.Errorf("generation %d after %d notifications", g, burst)
	}
	// Whatever was delivered late must still be counted, never more.
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	for {
		ng, err := s.Svc.Wait(ctx, p, g)
		if errors.Is(err, context.DeadlineExceeded) {
			break
		}
		if err != nil {
			t.Fatalf("Wait: %v", err)
		}
		g = ng
	}
	if g < 1 || g > burst {
		t.Errorf("final generation %d after %d notifications", g, burst)
	}
	s.Send(t, 4)
}

// manyWaiters: several goroutines wait on one port; one notification wakes
// all of them.
const waiters = 4

func manyWaitersA(t twodom.T, s *Side) {
	p := offer(t, s)
	defer closePort(t, s, p)
	var wg sync.WaitGroup
	errs := make(chan error, waiters)
	for range waiters {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), caseTimeout)
			defer cancel()
			g, err := s.Svc.Wait(ctx, p, 0)
			if err == nil && g < 1 {
				err = errors.New("generation did not advance")
			}
			errs <- err
		})
	}
	time.Sleep(20 * time.Millisecond) // let them block
	s.Send(t, 5)
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("waiter: %v", err)
		}
	}
	s.Send(t, 6)
}

func manyWaitersB(t twodom.T, s *Side) {
	p := accept(t, s)
	defer closePort(t, s, p)
	s.Recv(t)
	notify(t, s, p)
	s.Recv(t)
}

// closeWakes: goroutines blocked in Wait get ErrClosed when A closes the
// port; afterwards the port is bad.
func closeWakesA(t twodom.T, s *Side) {
	p := offer(t, s)
	errs := make(chan error, waiters)
	for range waiters {
		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), caseTimeout)
			defer cancel()
			_, err := s.Svc.Wait(ctx, p, 0)
			errs <- err
		}()
	}
	time.Sleep(50 * time.Millisecond) // let them block
	if err := s.Svc.Close(p); err != nil {
		t.Fatalf("Close: %v", err)
	}
	for range waiters {
		if err := <-errs; !errors.Is(err, evtchn.ErrClosed) {
			t.Errorf("waiter woken by Close: err = %v, want ErrClosed", err)
		}
	}
	if err := s.Svc.Notify(p); !errors.Is(err, evtchn.ErrBadPort) {
		t.Errorf("Notify after Close: err = %v, want ErrBadPort", err)
	}
	s.Send(t, 7)
	s.Recv(t)
}

func closeWakesB(t twodom.T, s *Side) {
	p := accept(t, s)
	s.Recv(t)
	// A closed its end: notifying may succeed (Xen drops it) or fail with
	// ErrClosed, and closing ours must succeed.
	if err := s.Svc.Notify(p); err != nil && !errors.Is(err, evtchn.ErrClosed) {
		t.Errorf("Notify after remote Close: %v", err)
	}
	closePort(t, s, p)
	s.Send(t, 8)
}

// remoteClose: B closes first; A's end may report ErrClosed but must still
// close cleanly, and notifications sent before the close are not lost.
func remoteCloseA(t twodom.T, s *Side) {
	p := offer(t, s)
	s.Recv(t)
	g := wait(t, s, p, 0)
	if g != 1 {
		t.Errorf("generation %d, want 1", g)
	}
	if err := s.Svc.Notify(p); err != nil && !errors.Is(err, evtchn.ErrClosed) {
		t.Errorf("Notify after remote Close: %v", err)
	}
	closePort(t, s, p)
}

func remoteCloseB(t twodom.T, s *Side) {
	p := accept(t, s)
	notify(t, s, p)
	closePort(t, s, p)
	s.Send(t, 9)
}

// cancel: Wait honours deadlines and cancellation, and the port keeps
// working afterwards.
func cancelA(t twodom.T, s *Side) {
	p := offer(t, s)
	defer closePort(t, s, p)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := s.Svc.Wait(ctx, p, 0); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Wait past deadline: err = %v, want DeadlineExceeded", err)
	}
	ctx2, cancel2 := context.WithCancel(context.Background())
	go func() {
		time.Sleep(10 * time.Millisecond)
		cancel2()
	}()
	if _, err := s.Svc.Wait(ctx2, p, 0); !errors.Is(err, context.Canceled) {
		t.Errorf("Wait cancelled: err = %v, want Canceled", err)
	}
	s.Send(t, 10)
	if g := wait(t, s, p, 0); g != 1 {
		t.Errorf("generation %d after one notification, want 1", g)
	}
	s.Send(t, 11)
}

func cancelB(t twodom.T, s *Side) {
	p := accept(t, s)
	defer closePort(t, s, p)
	s.Recv(t)
	notify(t, s, p)
	s.Recv(t)
}

// badPorts: operations on ports that are not ours fail with ErrBadPort.
func badPortsA(t twodom.T, s *Side) {
	p := offer(t, s)
	bad := []struct {
		name string
		port evtchn.Port
	}{
		{"zero", 0},
		{"never allocated", p + 100},
		{"huge", 1<<31 + 5},
		{"max", ^evtchn.Port(0)},
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	for _, b := range bad {
		if err := s.Svc.Notify(b.port); !errors.Is(err, evtchn.ErrBadPort) {
			t.Errorf("Notify(%s port %d): err = %v, want ErrBadPort", b.name, b.port, err)
		}
		if _, err := s.Svc.Wait(ctx, b.port, 0); !errors.Is(err, evtchn.ErrBadPort) {
			t.Errorf("Wait(%s port %d): err = %v, want ErrBadPort", b.name, b.port, err)
		}
		if err := s.Svc.Close(b.port); !errors.Is(err, evtchn.ErrBadPort) {
			t.Errorf("Close(%s port %d): err = %v, want ErrBadPort", b.name, b.port, err)
		}
	}
	closePort(t, s, p)
	if err := s.Svc.Close(p); !errors.Is(err, evtchn.ErrBadPort) {
		t.Errorf("second Close(%d): err = %v, want ErrBadPort", p, err)
	}
	if _, err := s.Svc.Wait(ctx, p, 0); !errors.Is(err, evtchn.ErrBadPort) {
		t.Errorf("Wait on closed port %d: err = %v, want ErrBadPort", p, err)
	}
	s.Send(t, 12)
}

func badPortsB(t twodom.T, s *Side) {
	p := accept(t, s)
	s.Recv(t)
	closePort(t, s, p)
}

// badBinds: binding to a port not offered to us, already bound, or not
// allocated at all fails with ErrNoPeer.
func badBindsA(t twodom.T, s *Side) {
	other, err := s.Svc.AllocUnbound(s.Peer + 97) // offered to someone else
	if err != nil {
		t.Fatalf("AllocUnbound: %v", err)
	}
	defer closePort(t, s, other)
	p := offer(t, s) // bound by the peer once
	defer closePort(t, s, p)
	s.Send(t, uint64(other))
	s.Recv(t)
}

func badBindsB(t twodom.T, s *Side) {
	rp := evtchn.Port(s.Recv(t))
	p, err := s.Svc.BindInterdomain(s.Peer, rp)
	if err != nil {
		s.Send(t, 0)
		t.Fatalf("BindInterdomain: %v", err)
	}
	s.Send(t, 1)
	defer closePort(t, s, p)
	other := evtchn.Port(s.Recv(t))
	bad := []struct {
		name string
		port evtchn.Port
	}{
		{"offered to another domain", other},
		{"already bound", rp},
		{"never allocated", rp + other + 100},
		{"zero", 0},
		{"huge", ^evtchn.Port(0)},
	}
	for _, b := range bad {
		if q, err := s.Svc.BindInterdomain(s.Peer, b.port); !errors.Is(err, evtchn.ErrNoPeer) {
			t.Errorf("BindInterdomain(%s port %d) = %d, %v; want ErrNoPeer", b.name, b.port, q, err)
			if err == nil {
				closePort(t, s, q)
			}
		}
	}
	s.Send(t, 13)
}

// loopback: a domain can bind to its own unbound port (domid.Self).
func loopbackA(t twodom.T, s *Side) {
	p, err := s.Svc.AllocUnbound(domid.Self)
	if err != nil {
		t.Fatalf("AllocUnbound(self): %v", err)
	}
	defer closePort(t, s, p)
	q, err := s.Svc.BindInterdomain(domid.Self, p)
	if err != nil {
		t.Fatalf("BindInterdomain(self, %d): %v", p, err)
	}
	defer closePort(t, s, q)
	var gp, gq evtchn.Generation
	for range 100 {
		notify(t, s, p)
		gq = wait(t, s, q, gq)
		notify(t, s, q)
		gp = wait(t, s, p, gp)
	}
	if gp != 100 || gq != 100 {
		t.Errorf("generations %d, %d after 100 round trips", gp, gq)
	}
}

// BenchmarkRoundTrip measures a notification round trip between domains x
// and y of one process: x notifies, y wakes and notifies back, x wakes.
func BenchmarkRoundTrip(b *testing.B, x, y Domain) {
	px, err := x.Svc.AllocUnbound(y.ID)
	if err != nil {
		b.Fatal(err)
	}
	defer x.Svc.Close(px)
	py, err := y.Svc.BindInterdomain(x.ID, px)
	if err != nil {
		b.Fatal(err)
	}
	defer y.Svc.Close(py)
	ctx := context.Background()
	n := b.N
	done := make(chan error, 1)
	go func() {
		var seen evtchn.Generation
		for range n {
			g, err := y.Svc.Wait(ctx, py, seen)
			if err != nil {
				done <- err
				return
			}
			seen = g
			if err := y.Svc.Notify(py); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	b.ResetTimer()
	var seen evtchn.Generation
	for range n {
		if err := x.Svc.Notify(px); err != nil {
			b.Fatal(err)
		}
		g, err := x.Svc.Wait(ctx, px, seen)
		if err != nil {
			b.Fatal(err)
		}
		seen = g
	}
	b.StopTimer()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
}

// BenchmarkRoundTripProcesses measures a notification round trip between
// this process and a child process (see [twodom.BenchmarkProcesses]; the
// benchmark must call it unconditionally). open builds a domain in the
// rendezvous directory dir.
func BenchmarkRoundTripProcesses(b *testing.B, open func(tb testing.TB, dir string, id domid.ID) Domain) {
	twodom.BenchmarkProcesses(b, open, func(b *testing.B, s *Side) {
		b.StopTimer()
		p := offer(b, s)
		s.Send(b, uint64(b.N))
		ctx := context.Background()
		var seen evtchn.Generation
		b.StartTimer()
		for range b.N {
			if err := s.Svc.Notify(p); err != nil {
				b.Fatal(err)
			}
			g, err := s.Svc.Wait(ctx, p, seen)
			if err != nil {
				b.Fatal(err)
			}
			seen = g
		}
		b.StopTimer()
		s.Recv(b)
		closePort(b, s, p)
	}, func(t twodom.T, s *Side) {
		p := accept(t, s)
		n := s.Recv(t)
		var seen evtchn.Generation
		for range n {
			seen = wait(t, s, p, seen)
			notify(t, s, p)
		}
		s.Send(t, 1)
		closePort(t, s, p)
	})
}
