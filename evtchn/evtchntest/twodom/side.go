package twodom

import (
	"fmt"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"time"

	"github.com/gozen-dev/gozen/domid"
)

// This file runs cases without package testing's runner, for programs that
// are one domain of a pair (a Gozen guest, say): each domain runs its own
// half of every case with [RunSide], the two sides meeting through a Link
// per case.

// Half names one half of a case.
type Half string

// The two halves of a case.
const (
	HalfA Half = "A"
	HalfB Half = "B"
)

// Other returns the other half.
func (h Half) Other() Half {
	if h == HalfA {
		return HalfB
	}
	return HalfA
}

// ParseHalf parses "A" or "B" (either case).
func ParseHalf(s string) (Half, error) {
	switch strings.ToUpper(s) {
	case "A":
		return HalfA, nil
	case "B":
		return HalfB, nil
	}
	return "", fmt.Errorf("twodom: half %q is neither A nor B", s)
}

// Func returns the function of half h of c.
func (c Case[S]) Func(h Half) func(t T, s *Side[S]) {
	if h == HalfA {
		return c.A
	}
	return c.B
}

// LinkCloser is one end of a Link that is closed once its half is done.
// Close tells the other end that this half finished (its Recv then fails
// once it has read every value sent) and may wait for the other half to
// finish too.
type LinkCloser interface {
	Link
	Close() error
}

// Result is the outcome of one half of one case.
type Result struct {
	// Errors are the messages of Error, Errorf, Fatal and Fatalf calls,
	// then any problem found by the runner (a panic, a time-out, a link
	// that failed to open or close, leftovers); none means the half passed.
	Errors []string
	// Logs are the messages of Log and Logf calls.
	Logs []string
	// Elapsed is how long the half ran.
	Elapsed time.Duration
}

// Failed reports whether the half failed.
func (r Result) Failed() bool { return len(r.Errors) > 0 }

// recorder is the T of a half run by RunHalf: it records instead of
// reporting to a *testing.T, and Fatal ends the half's goroutine.
type recorder struct {
	mu   sync.Mutex
	errs []string
	logs []string
}

func (r *recorder) add(list *[]string, msg string) {
	r.mu.Lock()
	*list = append(*list, strings.TrimSuffix(msg, "\n"))
	r.mu.Unlock()
}

func (r *recorder) Helper()                           {}
func (r *recorder) Log(args ...any)                   { r.add(&r.logs, fmt.Sprintln(args...)) }
func (r *recorder) Logf(format string, args ...any)   { r.add(&r.logs, fmt.Sprintf(format, args...)) }
func (r *recorder) Error(args ...any)                 { r.add(&r.errs, fmt.Sprintln(args...)) }
func (r *recorder) Errorf(format string, args ...any) { r.add(&r.errs, fmt.Sprintf(format, args...)) }

func (r *recorder) Fatal(args ...any) {
	r.Error(args...)
	runtime.Goexit()
}

func (r *recorder) Fatalf(format string, args ...any) {
	r.Errorf(format, args...)
	runtime.Goexit()
}

func (r *recorder) Failed() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.errs) > 0
}

func (r *recorder) result(elapsed time.Duration) Result {
	r.mu.Lock()
	defer r.mu.Unlock()
	return Result{Errors: append([]string(nil), r.errs...), Logs: append([]string(nil), r.logs...), Elapsed: elapsed}
}

// RunHalf runs half h of c with side s in a goroutine of its own and waits
// for it, at most limit (no limit if limit <= 0). Fatal ends the half, as
// in a test; a panic is recovered and recorded with its stack. A half still
// running after limit is reported and left behind: its goroutine may go on
// using s.
func RunHalf[S any](c Case[S], h Half, s *Side[S], limit time.Duration) Result {
	r := &recorder{}
	start := time.Now()
	done := make(chan struct{})
	go func() {
		defer close(done)
		defer func() {
			if v := recover(); v != nil {
				r.Errorf("panic: %v\n%s", v, debug.Stack())
			}
		}()
		c.Func(h)(r, s)
	}()
	var timeout <-chan time.Time
	if limit > 0 {
		tm := time.NewTimer(limit)
		defer tm.Stop()
		timeout = tm.C
	}
	select {
	case <-done:
	case <-timeout:
		r.Errorf("half %s of %s still running after %v: abandoned", h, c.Name, limit)
	}
	return r.result(time.Since(start))
}

// SideConfig describes one domain of a pair running its halves of a list
// of cases with RunSide.
type SideConfig[S any] struct {
	// Half is the half of every case this domain runs.
	Half Half
	// Domain is this domain: its service, id and leftovers.
	Domain Domain[S]
	// Peer is the other domain's id.
	Peer domid.ID
	// Open opens this domain's end of the link of the named case. The
	// other domain opens its end with the same name.
	Open func(name string) (LinkCloser, error)
	// Limit bounds each half (see RunHalf); 0 means none.
	Limit time.Duration
	// Report is called with each case's result, in order.
	Report func(name string, r Result)
}

// RunSide runs this domain's half of each case, one after the other, each
// over a link of its own, while the other domain does the same with the
// other halves (and the same cases, in the same order). After each half it
// closes the link and checks the domain's leftovers; a link that fails to
// open or close and leftovers are reported as failures of that case. It
// returns the number of cases that passed and failed.
func RunSide[S any](cases []Case[S], cfg SideConfig[S]) (pass, fail int) {
	for _, c := range cases {
		r := runOne(c, cfg)
		if r.Failed() {
			fail++
		} else {
			pass++
		}
		if cfg.Report != nil {
			cfg.Report(c.Name, r)
		}
	}
	return pass, fail
}

func runOne[S any](c Case[S], cfg SideConfig[S]) Result {
	link, err := cfg.Open(c.Name)
	if err != nil {
		return Result{Errors: []string{fmt.Sprintf("opening the link: %v", err)}}
	}
	s := &Side[S]{Svc: cfg.Domain.Svc, Self: cfg.Domain.ID, Peer: cfg.Peer, Link: link}
	r := RunHalf(c, cfg.Half, s, cfg.Limit)
	if err := link.Close(); err != nil {
		r.Errors = append(r.Errors, fmt.Sprintf("closing the link: %v", err))
	}
	if cfg.Domain.Leftovers != nil {
		if l := cfg.Domain.Leftovers(); l != "" {
			r.Errors = append(r.Errors, fmt.Sprintf("leftovers of half %s (domain %d): %s", cfg.Half, cfg.Domain.ID, l))
		}
	}
	return r
}
