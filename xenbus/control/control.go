// Package control is the lifecycle of a Gozen domain: it answers the
// toolstack's requests in control/shutdown (`xl shutdown`, `xl reboot`,
// `xl save`) the way Linux's drivers/xen/manage.c does, and gives the app
// a context and hooks to finish its work first.
//
// In a guest, importing the package is enough: it advertises
// control/feature-poweroff, control/feature-reboot and
// control/feature-suspend, watches control/shutdown, and on "poweroff" or
// "halt" (or "reboot") cancels [Context], runs the [OnShutdown] hooks with
// a deadline (5 s by default, [SetGrace]), then powers the domain off (or
// reboots it; xl's on_reboot="restart" brings it back). Returning from main
// in the meantime ends the domain the same way.
//
// On "suspend" (`xl save`, `xl save -c`, migration) the domain suspends:
// the platform quiesces its devices, xenstore, grants, clock, console and
// events (platform.Platform.Suspend), the domain makes the suspend
// hypercall, and when it runs again the platform resumes and the
// [OnResume] hooks are told what it found (a cancelled suspend or a
// checkpoint, [platform.SameDomain], or a restore or migration,
// [platform.NewDomain]). A suspend the platform refuses (a device that
// cannot quiesce) is reported on the console and the domain keeps running;
// the toolstack then gives up (xl save fails after its 60 s wait).
//
//	import "github.com/gozen-dev/gozen/xenbus/control"
//
//	func main() {
//		ctx := control.Context()
//		for ctx.Err() == nil {
//			serve(ctx)
//		}
//		fmt.Println("stopping:", context.Cause(ctx))
//	}
//
// The parts work on any xenbus.Client (so they are tested on the host
// against memstore): [Advertise] writes the feature keys, [Listen] watches
// and acknowledges requests, and a [Controller] applies the policy.
package control

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gozen-dev/gozen/platform"
	"github.com/gozen-dev/gozen/xenbus"
)

// The nodes, relative to the domain's home.
const (
	ShutdownNode = "control/shutdown"
	featureNode  = "control/feature-"
)

// DefaultGrace is how long apps get to finish after a poweroff or reboot
// request before the domain goes down anyway.
const DefaultGrace = 5 * time.Second

// Action is what a request asks for.
type Action int

const (
	// Unknown is a request this package does not know; it is ignored.
	Unknown Action = iota
	// Poweroff stops the domain ("poweroff", and "halt" as Linux treats it).
	Poweroff
	// Reboot restarts the domain ("reboot").
	Reboot
	// Suspend asks the domain to suspend for save, checkpoint or
	// migration ("suspend").
	Suspend
)

func (a Action) String() string {
	switch a {
	case Poweroff:
		return "poweroff"
	case Reboot:
		return "reboot"
	case Suspend:
		return "suspend"
	}
	return "unknown"
}

// Request is one command the toolstack wrote to control/shutdown.
type Request struct {
	// Command is the value as written, e.g. "halt".
	Command string
	// Action is what it means.
	Action Action
}

// ParseRequest maps a control/shutdown value to its action.
func ParseRequest(cmd string) Request {
	r := Request{Command: cmd}
	switch cmd {
	case "poweroff", "halt":
		r.Action = Poweroff
	case "reboot":
		r.Action = Reboot
	case "suspend":
		r.Action = Suspend
	}
	return r
}

// Advertise writes control/feature-poweroff and control/feature-reboot as
// "1", and control/feature-suspend as "1" if suspend is answered, else "0"
// (the toolstack creates these nodes writable by the guest), so tools know
// which requests are answered.
func Advertise(ctx context.Context, c *xenbus.Client, suspend bool) error {
	sus := "0"
	if suspend {
		sus = "1"
	}
	var errs []error
	for _, f := range []struct{ name, val string }{{"poweroff", "1"}, {"reboot", "1"}, {"suspend", sus}} {
		if err := c.WriteString(ctx, featureNode+f.name, f.val); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Ack reads control/shutdown and, if it holds a request, empties it, in
// one transaction (retried on conflict), as Linux does. It returns the
// command, or "" when there was none.
func Ack(ctx context.Context, c *xenbus.Client) (string, error) {
	var cmd string
	err := c.Transaction(ctx, func(tx *xenbus.Tx) error {
		v, err := tx.ReadString(ctx, ShutdownNode)
		if errors.Is(err, fs.ErrNotExist) {
			cmd = ""
			return nil
		}
		if err != nil {
			return err
		}
		cmd = v
		if v == "" {
			return nil
		}
		return tx.WriteString(ctx, ShutdownNode, "")
	})
	if err != nil {
		return "", err
	}
	return cmd, nil
}

// Listen watches control/shutdown and sends every request, already
// acknowledged, on the returned channel, which is closed when ctx ends or
// the client fails. A request pending before the call is delivered too.
func Listen(ctx context.Context, c *xenbus.Client) (<-chan Request, error) {
	w, err := c.Watch(ctx, ShutdownNode)
	if err != nil {
		return nil, err
	}
	ch := make(chan Request)
	go func() {
		defer close(ch)
		defer func() {
			uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
			w.Unwatch(uctx)
			cancel()
		}()
		for {
			select {
			case _, ok := <-w.Events():
				if !ok {
					return
				}
			case <-ctx.Done():
				return
			}
			cmd, err := Ack(ctx, c)
			if err != nil {
				if c.Err() != nil || ctx.Err() != nil {
					return
				}
				continue // transient: the next event re-reads
			}
			if cmd == "" {
				continue
			}
			select {
			case ch <- ParseRequest(cmd):
			case <-ctx.Done():
				return
			}
		}
	}()
	return ch, nil
}

// Options configure a Controller.
type Options struct {
	// Grace bounds the time the app gets between a poweroff or reboot
	// request and the end of the domain (DefaultGrace if zero).
	Grace time.Duration
	// Prepare, if set, is called first on a poweroff or reboot request
	// (the guest makes a clean exit reboot from then on).
	Prepare func(Request)
	// Finish ends the domain after the grace period or once every hook
	// returned. Required.
	Finish func(Request)
	// Suspend, if set, suspends the domain on a suspend request and
	// returns when it runs again, with what the resume found. An error
	// wrapping platform.ErrRefused (with the kind Cancelled) means the
	// domain did not suspend; other errors are resume steps that failed.
	// Without it, suspend requests are reported as unsupported.
	Suspend func(ctx context.Context) (platform.Kind, error)
	// Logf prints the controller's messages (default: "gozen: " lines on
	// os.Stdout, the console).
	Logf func(format string, args ...any)
}

// Controller applies the lifecycle policy to requests.
type Controller struct {
	opts     Options
	grace    atomic.Int64
	ctx      context.Context
	cancel   context.CancelCauseFunc
	ctxTaken atomic.Bool
	ready    chan struct{}
	readyOne sync.Once
	stopping atomic.Bool

	mu      sync.Mutex
	hooks   []func(context.Context, Request)
	resumes []func(platform.Kind)
	client  *xenbus.Client // set by Serve, to advertise again after a resume
}

// ErrShutdown is the cause of a Controller's context once a request
// stopped it (see context.Cause).
var ErrShutdown = errors.New("domain shutting down")

// ShutdownError is the cause of the context: it names the request.
type ShutdownError struct{ Request Request }

func (e *ShutdownError) Error() string {
	return fmt.Sprintf("domain shutting down: %s requested", e.Request.Command)
}

// Is makes ShutdownError match ErrShutdown.
func (e *ShutdownError) Is(target error) bool { return target == ErrShutdown }

// New returns a controller; Serve starts it.
func New(opts Options) *Controller {
	k := &Controller{opts: opts, ready: make(chan struct{})}
	if opts.Grace <= 0 {
		opts.Grace = DefaultGrace
	}
	k.grace.Store(int64(opts.Grace))
	if k.opts.Logf == nil {
		k.opts.Logf = func(format string, args ...any) {
			fmt.Fprintf(os.Stdout, "gozen: "+format+"\n", args...)
		}
	}
	k.ctx, k.cancel = context.WithCancelCause(context.Background())
	return k
}

// Context returns a context canceled when a poweroff or reboot request
// arrives; context.Cause tells which (a *ShutdownError). An app that took
// it is given the grace period to return from main.
func (k *Controller) Context() context.Context {
	k.ctxTaken.Store(true)
	return k.ctx
}

// OnShutdown registers a hook run (concurrently with the others) when a
// poweroff or reboot request arrives; its context ends with the grace
// period. The domain goes down when every hook returned or the grace
// period is over, whichever comes first.
func (k *Controller) OnShutdown(f func(ctx context.Context, r Request)) {
	k.mu.Lock()
	k.hooks = append(k.hooks, f)
	k.mu.Unlock()
}

// OnResume registers a hook run (in its own goroutine) each time the
// domain runs again after a suspend request: k tells what the resume
// found (Cancelled: the suspend was refused or cancelled; SameDomain: a
// checkpoint; NewDomain: a restore or migration, where event channels and
// grants were made anew).
func (k *Controller) OnResume(f func(k platform.Kind)) {
	k.mu.Lock()
	k.resumes = append(k.resumes, f)
	k.mu.Unlock()
}

// SetGrace changes the grace period (DefaultGrace if d <= 0).
func (k *Controller) SetGrace(d time.Duration) {
	if d <= 0 {
		d = DefaultGrace
	}
	k.grace.Store(int64(d))
}

// Ready is closed once the controller advertised its features and watches
// control/shutdown.
func (k *Controller) Ready() <-chan struct{} { return k.ready }

// Serve advertises the features, then handles requests until ctx ends or
// the client fails (a shutdown request ends with Finish, which normally
// does not return).
func (k *Controller) Serve(ctx context.Context, c *xenbus.Client) error {
	k.mu.Lock()
	k.client = c
	k.mu.Unlock()
	actx, cancel := context.WithTimeout(ctx, 10*time.Second)
	err := Advertise(actx, c, k.opts.Suspend != nil)
	cancel()
	if err != nil {
		k.opts.Logf("control: advertising features: %v", err)
	}
	reqs, err := Listen(ctx, c)
	if err != nil {
		return fmt.Errorf("control: watching %s: %w", ShutdownNode, err)
	}
	k.readyOne.Do(func() { close(k.ready) })
	for r := range reqs {
		k.Handle(r)
	}
	if err := c.Err(); err != nil {
		return fmt.Errorf("control: %w", err)
	}
	return ctx.Err()
}

// Handle applies the policy to one request: poweroff and reboot stop the
// app and end the domain (it returns after Finish, which in a guest does
// not return), suspend suspends the domain and returns when it runs again,
// unknown requests are reported and ignored.
func (k *Controller) Handle(r Request) {
	switch r.Action {
	case Suspend:
		k.suspend(r)
		return
	case Unknown:
		k.opts.Logf("control: ignoring unknown shutdown request %q", r.Command)
		return
	}
	if !k.stopping.CompareAndSwap(false, true) {
		k.opts.Logf("control: %s requested while already shutting down", r.Command)
		return
	}
	grace := time.Duration(k.grace.Load())
	if k.opts.Prepare != nil {
		k.opts.Prepare(r)
	}
	k.mu.Lock()
	hooks := append([]func(context.Context, Request){}, k.hooks...)
	k.mu.Unlock()
	k.opts.Logf("control: %s requested by the toolstack; stopping (grace %v, %d hooks)", r.Command, grace, len(hooks))
	dctx, cancel := context.WithTimeout(context.Background(), grace)
	defer cancel()
	k.cancel(&ShutdownError{Request: r})
	var wg sync.WaitGroup
	for _, h := range hooks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			h(dctx, r)
		}()
	}
	allDone := make(chan struct{})
	go func() { wg.Wait(); close(allDone) }()
	var done <-chan struct{} = allDone
	if k.ctxTaken.Load() {
		// the app may be finishing main: give it the whole grace period
		done = nil
	}
	select {
	case <-done:
	case <-dctx.Done():
		if !k.ctxTaken.Load() {
			k.opts.Logf("control: grace period of %v over with hooks still running", grace)
		}
	}
	k.opts.Logf("control: %s now", r.Action)
	if k.opts.Finish != nil {
		k.opts.Finish(r)
	}
}

// SuspendTimeout bounds the platform's suspend (devices quiescing, the
// xenstore replies in flight); the toolstack waits 60 s for the domain to
// suspend.
const SuspendTimeout = 20 * time.Second

// suspend answers a suspend request with opts.Suspend, then advertises the
// features again (a restored domain's toolstack made the nodes anew,
// empty) and runs the resume hooks.
func (k *Controller) suspend(r Request) {
	if k.opts.Suspend == nil {
		k.opts.Logf("control: %q requested, but this domain cannot suspend; "+
			"request acknowledged and ignored, the domain keeps running", r.Command)
		return
	}
	if k.stopping.Load() {
		k.opts.Logf("control: %s requested while shutting down; ignored", r.Command)
		return
	}
	k.opts.Logf("control: %s requested by the toolstack (xl save, checkpoint or migration); suspending", r.Command)
	ctx, cancel := context.WithTimeout(context.Background(), SuspendTimeout)
	start := time.Now()
	kind, err := k.opts.Suspend(ctx)
	cancel()
	switch {
	case errors.Is(err, platform.ErrRefused):
		k.opts.Logf("control: suspend refused, the domain keeps running: %v", err)
	case err != nil:
		k.opts.Logf("control: resumed (%s) after %v, with errors: %v", kind, time.Since(start).Round(time.Millisecond), err)
	default:
		k.opts.Logf("control: resumed (%s) after %v", kind, time.Since(start).Round(time.Millisecond))
	}
	k.mu.Lock()
	c, hooks := k.client, append([]func(platform.Kind){}, k.resumes...)
	k.mu.Unlock()
	if kind != platform.Cancelled && c != nil {
		actx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		if err := Advertise(actx, c, true); err != nil {
			k.opts.Logf("control: advertising features after the resume: %v", err)
		}
		cancel()
	}
	for _, h := range hooks {
		go h(kind)
	}
}

// std is the guest's controller, started by this package's init in a
// domU (see control_tamago.go).
var std = New(Options{})

// Context returns a context canceled when the toolstack asks the domain to
// power off or reboot (see Controller.Context).
func Context() context.Context { return std.Context() }

// OnShutdown registers a hook run when the toolstack asks the domain to
// power off or reboot (see Controller.OnShutdown).
func OnShutdown(f func(ctx context.Context, r Request)) { std.OnShutdown(f) }

// OnResume registers a hook run each time the domain runs again after a
// suspend request (see Controller.OnResume).
func OnResume(f func(k platform.Kind)) { std.OnResume(f) }

// SetGrace sets how long apps get to finish (default 5 s).
func SetGrace(d time.Duration) { std.SetGrace(d) }

// Ready is closed once the domain answers control/shutdown.
func Ready() <-chan struct{} { return std.Ready() }
