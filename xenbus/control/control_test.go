package control_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gozen-dev/gozen/platform"
	"github.com/gozen-dev/gozen/xenbus"
	"github.com/gozen-dev/gozen/xenbus/control"
	"github.com/gozen-dev/gozen/xenbus/memstore"
)

const home = "/local/domain/7"

type rec struct {
	mu   sync.Mutex
	logs []string
}

func (r *rec) logf(format string, args ...any) {
	r.mu.Lock()
	r.logs = append(r.logs, fmt.Sprintf(format, args...))
	r.mu.Unlock()
}

func (r *rec) has(s string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, l := range r.logs {
		if strings.Contains(l, s) {
			return true
		}
	}
	return false
}

func setup(t *testing.T) (*memstore.Store, *xenbus.Client, context.Context) {
	t.Helper()
	s := memstore.New()
	t.Cleanup(func() { s.Close() })
	c, err := s.Connect(7)
	if err != nil {
		t.Fatal(err)
	}
	// the toolstack makes control/ writable by the guest
	if err := s.Write(home+"/control/shutdown", ""); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return s, c, ctx
}

func waitNode(t *testing.T, s *memstore.Store, p, want string) {
	t.Helper()
	for i := 0; i < 500; i++ {
		if v, err := s.Read(p); err == nil && v == want {
			return
		}
		time.Sleep(10 * time.Millisecond)
	}
	v, err := s.Read(p)
	t.Fatalf("%s = %q, %v; want %q", p, v, err, want)
}

func TestParseRequest(t *testing.T) {
	for cmd, a := range map[string]control.Action{
		"poweroff": control.Poweroff, "halt": control.Poweroff, "reboot": control.Reboot,
		"suspend": control.Suspend, "crash": control.Unknown, "": control.Unknown,
	} {
		if r := control.ParseRequest(cmd); r.Action != a || r.Command != cmd {
			t.Errorf("ParseRequest(%q) = %+v, want %v", cmd, r, a)
		}
	}
}

func TestListenAcks(t *testing.T) {
	s, c, ctx := setup(t)
	// a request made before anyone listened is delivered too
	s.Write(home+"/control/shutdown", "halt")
	reqs, err := control.Listen(ctx, c)
	if err != nil {
		t.Fatal(err)
	}
	if r := <-reqs; r.Action != control.Poweroff || r.Command != "halt" {
		t.Fatalf("got %+v", r)
	}
	waitNode(t, s, home+"/control/shutdown", "")
	s.Write(home+"/control/shutdown", "reboot")
	if r := <-reqs; r.Action != control.Reboot {
		t.Fatalf("got %+v", r)
	}
	waitNode(t, s, home+"/control/shutdown", "")
	// removal of the node is not a request
	s.Rm(home + "/control/shutdown")
	s.Write(home+"/control/shutdown", "suspend")
	if r := <-reqs; r.Action != control.Suspend {
		t.Fatalf("got %+v", r)
	}
}

func TestAdvertise(t *testing.T) {
	for _, tc := range []struct {
		suspend bool
		want    string
	}{{false, "0"}, {true, "1"}} {
		s, c, ctx := setup(t)
		if err := control.Advertise(ctx, c, tc.suspend); err != nil {
			t.Fatal(err)
		}
		for f, want := range map[string]string{"poweroff": "1", "reboot": "1", "suspend": tc.want} {
			if v, err := s.Read(home + "/control/feature-" + f); err != nil || v != want {
				t.Errorf("suspend %v: feature-%s = %q, %v; want %q", tc.suspend, f, v, err, want)
			}
		}
	}
}

// TestControllerPoweroff: the hooks run with a deadline, the context is
// canceled with the request as cause, then Finish.
func TestControllerPoweroff(t *testing.T) {
	s, c, ctx := setup(t)
	var r rec
	finished := make(chan control.Request, 1)
	var prepared control.Request
	k := control.New(control.Options{
		Grace:   2 * time.Second,
		Prepare: func(q control.Request) { prepared = q },
		Finish:  func(q control.Request) { finished <- q },
		Logf:    r.logf,
	})
	hook := make(chan time.Duration, 1)
	k.OnShutdown(func(ctx context.Context, q control.Request) {
		dl, ok := ctx.Deadline()
		if !ok {
			t.Error("hook context has no deadline")
		}
		hook <- time.Until(dl)
	})
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go k.Serve(sctx, c)
	<-k.Ready()
	waitNode(t, s, home+"/control/feature-poweroff", "1")
	start := time.Now()
	s.Write(home+"/control/shutdown", "poweroff")
	q := <-finished
	if q.Action != control.Poweroff || prepared.Action != control.Poweroff {
		t.Fatalf("finished %+v prepared %+v", q, prepared)
	}
	if d := <-hook; d <= 0 || d > 2*time.Second {
		t.Errorf("hook deadline %v away", d)
	}
	if took := time.Since(start); took > time.Second {
		t.Errorf("finishing took %v although the only hook returned at once", took)
	}
	cctx := k.Context()
	if !errors.Is(context.Cause(cctx), control.ErrShutdown) || !strings.Contains(context.Cause(cctx).Error(), "poweroff") {
		t.Errorf("cause %v", context.Cause(cctx))
	}
	waitNode(t, s, home+"/control/shutdown", "")
}

// TestControllerGrace: a hook that does not return is cut off by the
// grace period; a second request while stopping is only reported.
func TestControllerGrace(t *testing.T) {
	s, c, ctx := setup(t)
	var r rec
	finished := make(chan time.Time, 2)
	k := control.New(control.Options{Finish: func(control.Request) { finished <- time.Now() }, Logf: r.logf})
	k.SetGrace(300 * time.Millisecond)
	k.OnShutdown(func(ctx context.Context, _ control.Request) { select {} })
	go k.Serve(ctx, c)
	<-k.Ready()
	start := time.Now()
	s.Write(home+"/control/shutdown", "reboot")
	end := <-finished
	if d := end.Sub(start); d < 300*time.Millisecond || d > 3*time.Second {
		t.Errorf("finished after %v, want the 300 ms grace", d)
	}
	if !r.has("grace period of 300ms over") {
		t.Errorf("no grace message: %q", r.logs)
	}
	s.Write(home+"/control/shutdown", "poweroff")
	waitNode(t, s, home+"/control/shutdown", "")
	time.Sleep(50 * time.Millisecond)
	if !r.has("while already shutting down") {
		t.Errorf("second request not reported: %q", r.logs)
	}
	select {
	case <-finished:
		t.Error("Finish called twice")
	default:
	}
}

// TestControllerSuspendUnsupported: without a Suspend function, suspend
// is acknowledged, reported and changes nothing; feature-suspend is "0".
func TestControllerSuspendUnsupported(t *testing.T) {
	s, c, ctx := setup(t)
	var r rec
	k := control.New(control.Options{Finish: func(control.Request) { t.Error("Finish on suspend") }, Logf: r.logf})
	go k.Serve(ctx, c)
	<-k.Ready()
	waitNode(t, s, home+"/control/feature-suspend", "0")
	for _, cmd := range []string{"suspend", "frobnicate"} {
		s.Write(home+"/control/shutdown", cmd)
		waitNode(t, s, home+"/control/shutdown", "")
	}
	time.Sleep(50 * time.Millisecond)
	if !r.has("cannot suspend") || !r.has(`unknown shutdown request "frobnicate"`) {
		t.Errorf("logs %q", r.logs)
	}
	if k.Context().Err() != nil {
		t.Error("context canceled by suspend")
	}
}

// TestControllerSuspend: a suspend request is acknowledged (the node
// emptied, as libxl waits for) before the domain suspends, the Suspend
// function runs with a deadline, the outcome is reported, the resume hooks
// are told the kind, and after a resume that was not cancelled the
// features are advertised again (a restored domain's nodes are new and
// empty). The app's context is never canceled.
func TestControllerSuspend(t *testing.T) {
	for _, tc := range []struct {
		name    string
		kind    platform.Kind
		err     error
		log     string
		readver bool // features advertised again
	}{
		{"checkpoint", platform.SameDomain, nil, "resumed (same-domain)", true},
		{"restored", platform.NewDomain, nil, "resumed (new-domain)", true},
		{"cancelled", platform.Cancelled, nil, "resumed (cancelled)", false},
		{"refused", platform.Cancelled, fmt.Errorf("platform: suspend: device vif/0: %w: busy", platform.ErrRefused),
			"suspend refused, the domain keeps running: platform: suspend: device vif/0", false},
		{"resume-errors", platform.NewDomain, errors.New("platform: resume (new-domain): grants: lost"),
			"resumed (new-domain) after", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s, c, ctx := setup(t)
			var r rec
			type call struct {
				ack      string
				deadline bool
			}
			calls := make(chan call, 2)
			k := control.New(control.Options{
				Finish: func(control.Request) { t.Error("Finish on suspend") },
				Suspend: func(sctx context.Context) (platform.Kind, error) {
					v, _ := s.Read(home + "/control/shutdown")
					_, dl := sctx.Deadline()
					// the toolstack re-creates the nodes of a restored domain empty
					s.Write(home+"/control/feature-suspend", "")
					calls <- call{v, dl}
					return tc.kind, tc.err
				},
				Logf: r.logf,
			})
			resumed := make(chan platform.Kind, 1)
			k.OnResume(func(kind platform.Kind) { resumed <- kind })
			go k.Serve(ctx, c)
			<-k.Ready()
			waitNode(t, s, home+"/control/feature-suspend", "1")
			s.Write(home+"/control/shutdown", "suspend")
			select {
			case got := <-calls:
				if got.ack != "" || !got.deadline {
					t.Errorf("Suspend ran with control/shutdown = %q (want it acknowledged first), deadline %v", got.ack, got.deadline)
				}
			case <-ctx.Done():
				t.Fatal("Suspend never called")
			}
			select {
			case kind := <-resumed:
				if kind != tc.kind {
					t.Errorf("OnResume told %s, want %s", kind, tc.kind)
				}
			case <-ctx.Done():
				t.Fatal("OnResume hook never ran")
			}
			if tc.readver {
				waitNode(t, s, home+"/control/feature-suspend", "1")
			} else if v, _ := s.Read(home + "/control/feature-suspend"); v != "" {
				t.Errorf("features advertised again after a %s suspend: feature-suspend = %q", tc.name, v)
			}
			if !r.has(tc.log) {
				t.Errorf("logs %q, want %q", r.logs, tc.log)
			}
			if tc.err != nil && !r.has(tc.err.Error()) {
				t.Errorf("logs %q do not give the error %q", r.logs, tc.err)
			}
			if k.Context().Err() != nil {
				t.Error("context canceled by suspend")
			}
			// the controller still answers
			s.Write(home+"/control/shutdown", "suspend")
			select {
			case <-calls:
			case <-ctx.Done():
				t.Fatal("a second suspend request was not answered")
			}
		})
	}
}

// TestControllerContextTaken: an app that took the context gets the whole
// grace period (its main returning ends the domain first in a guest).
func TestControllerContextTaken(t *testing.T) {
	s, c, ctx := setup(t)
	finished := make(chan time.Time, 1)
	k := control.New(control.Options{Grace: 200 * time.Millisecond, Finish: func(control.Request) { finished <- time.Now() }, Logf: t.Logf})
	k.OnShutdown(func(context.Context, control.Request) {})
	appCtx := k.Context()
	go k.Serve(ctx, c)
	<-k.Ready()
	start := time.Now()
	s.Write(home+"/control/shutdown", "poweroff")
	<-appCtx.Done()
	if d := (<-finished).Sub(start); d < 200*time.Millisecond {
		t.Errorf("finished after %v, before the grace period", d)
	}
}
