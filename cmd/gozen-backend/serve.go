//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"time"

	"github.com/gozen-dev/gozen/evtchn"
	"github.com/gozen-dev/gozen/gnttab"
	"github.com/gozen-dev/gozen/xenbus/device"
	"github.com/gozen-dev/gozen/xenbus/wire"
)

// eventService is an event-channel service whose live ports can be
// counted (evlinux in dom0, evheap in tests).
type eventService interface {
	evtchn.Events
	Stats() evtchn.Stats
}

// grantService is a grant service whose live grants and mappings can be
// counted (gntlinux in dom0, gntheap in tests).
type grantService interface {
	gnttab.SharedMemory
	Stats() gnttab.Stats
}

// env is what the backends run on: the store (as the backend domain),
// the backend domain's event channels and grants, and where status lines
// go. main wires xslinux, evlinux and gntlinux; tests wire memstore,
// evheap and gntheap.
type env struct {
	Store  device.Store
	Events eventService
	Grants grantService
	Out    io.Writer
}

// ErrLeftovers means ports or grants were still live after the teardown.
var ErrLeftovers = errors.New("gozen-backend: leftover ports or grants")

// Waits of the teardown.
var (
	// closeWait bounds the wait for the frontend to answer our Closing
	// (its driver running the close handshake with ours).
	closeWait = 10 * time.Second
	// frontWait bounds the wait for the frontend to reach Closed once we
	// are Closed.
	frontWait = 5 * time.Second
)

// session is one device being served: its nodes, its backend end, and
// the status lines.
type session struct {
	env *env
	h   *hotplug
	b   *device.Backend

	outMu sync.Mutex
}

// logf prints one status line about the device.
func (s *session) logf(format string, args ...any) {
	s.outMu.Lock()
	defer s.outMu.Unlock()
	fmt.Fprintf(s.env.Out, "gozen-backend: %s %s\n", s.h.Name(), fmt.Sprintf(format, args...))
}

// start creates the device's nodes and opens its backend end. On
// failure nothing is left in the store.
func (s *session) start(ctx context.Context) error {
	if err := s.h.Create(ctx, s.env.Store); err != nil {
		return err
	}
	b, err := device.OpenBackend(ctx, s.env.Store, s.h.BackendClass, s.h.Front, s.h.ID)
	if err != nil {
		return errors.Join(err, s.h.Remove(context.WithoutCancel(ctx), s.env.Store))
	}
	s.b = b
	s.logf("created: frontend %s, backend %s", s.h.FrontPath(), s.h.BackPath())
	return nil
}

// waitState waits until the state node at path satisfies ok (a missing
// node reads Unknown, a malformed one is skipped), or ctx ends.
func waitState(ctx context.Context, st device.Store, path string, ok func(device.State) bool) (device.State, error) {
	var got device.State
	err := st.WaitFor(ctx, path, func() (bool, error) {
		got = readState(ctx, st, path)
		return ok(got), nil
	})
	return got, err
}

// readState reads a state node; missing, unreadable or malformed nodes
// read Unknown.
func readState(ctx context.Context, st device.Store, path string) device.State {
	v, err := st.ReadString(ctx, path)
	if err != nil {
		return device.Unknown
	}
	s, err := device.ParseState(v)
	if err != nil {
		return device.Unknown
	}
	return s
}

// follow prints a line for every state change of the frontend and the
// backend until ctx ends. onBackend is called (from follow's goroutine)
// with each new backend state, before its line is printed; it may
// return more to print. The returned channel is closed when the frontend
// closes: its state is Closed, or its node vanished. follow returns once
// both watches are set up.
func (s *session) follow(ctx context.Context, onBackend func(device.State) string) (frontClosed <-chan struct{}, done func()) {
	closed := make(chan struct{})
	var wg sync.WaitGroup
	watch := func(who, path string, each func(device.State)) {
		ready := make(chan struct{})
		wg.Go(func() {
			last := device.State(-1)
			first := true
			s.env.Store.WaitFor(ctx, path, func() (bool, error) {
				if first {
					first = false
					close(ready)
				}
				st := readState(ctx, s.env.Store, path)
				if ctx.Err() == nil && st != last {
					last = st
					each(st)
				}
				return false, nil
			})
			if first {
				close(ready)
			}
		})
		<-ready
	}
	var once sync.Once
	watch("frontend", s.h.FrontPath()+"/state", func(st device.State) {
		s.logf("frontend %s", st)
		if st == device.Closed || st == device.Unknown {
			once.Do(func() { close(closed) })
		}
	})
	watch("backend", s.b.Path+"/state", func(st device.State) {
		extra := ""
		if onBackend != nil {
			extra = onBackend(st)
		}
		if extra != "" {
			s.logf("%s", extra)
		} else {
			s.logf("backend %s", st)
		}
	})
	return closed, wg.Wait
}

// teardown ends the device: if the frontend is engaged (Initialised,
// Connected or Closing), we go Closing and give its driver and ours
// closeWait to run the close handshake (the backend driver goes Closed
// once it unmapped the rings); then stop stops the driver (and must wait
// until it released everything), we go Closed if we are not yet, wait up
// to frontWait for the frontend to be Closed (or gone), and remove both
// directories, as libxl does when detaching a device.
//
// quiet is called before the removal (to stop following the states).
func (s *session) teardown(stop func() error, quiet func()) error {
	ctx, cancel := context.WithTimeout(context.Background(), closeWait+frontWait+30*time.Second)
	defer cancel()
	st := s.env.Store
	front := s.h.FrontPath() + "/state"
	engaged := func(f device.State) bool {
		return f == device.Initialised || f == device.Connected || f == device.Closing
	}
	var errs []error
	fs := readState(ctx, st, front)
	if engaged(fs) && readState(ctx, st, s.b.Path+"/state") != device.Closed {
		if err := st.WriteString(ctx, s.b.Path+"/online", "0"); err != nil && !errors.Is(err, wire.ErrNotExist) {
			errs = append(errs, err)
		}
		if err := s.b.SwitchState(ctx, device.Closing); err != nil && !errors.Is(err, wire.ErrNotExist) {
			errs = append(errs, err)
		}
		wctx, wcancel := context.WithTimeout(ctx, closeWait)
		_, err := waitState(wctx, st, s.b.Path+"/state", func(b device.State) bool { return b == device.Closed || b == device.Unknown })
		wcancel()
		if err != nil {
			s.logf("the frontend did not close within %v (it is %s): stopping anyway", closeWait, readState(ctx, st, front))
		}
	}
	if err := stop(); err != nil {
		errs = append(errs, err)
	}
	if readState(ctx, st, s.b.Path+"/state") != device.Closed {
		if err := s.b.SwitchState(ctx, device.Closed); err != nil && !errors.Is(err, wire.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	if fs != device.Closed && fs != device.Unknown {
		wctx, wcancel := context.WithTimeout(ctx, frontWait)
		_, err := waitState(wctx, st, front, func(f device.State) bool {
			return f == device.Closed || f == device.Unknown || !engaged(f)
		})
		wcancel()
		if err != nil {
			s.logf("the frontend is still %s after %v: removing the device anyway", readState(ctx, st, front), frontWait)
		}
	}
	quiet()
	s.logf("closed: backend %s, frontend %s", readState(ctx, st, s.b.Path+"/state"), readState(ctx, st, front))
	if err := s.h.Remove(ctx, st); err != nil {
		errs = append(errs, err)
	} else {
		s.logf("removed")
	}
	return errors.Join(errs...)
}

// leftovers prints the live ports and grants of the services and returns
// an error wrapping ErrLeftovers if there are any.
func (s *session) leftovers() error {
	ev, gn := s.env.Events.Stats(), s.env.Grants.Stats()
	if ev.Ports == 0 && gn.String() == "" {
		s.logf("leftovers: none")
		return nil
	}
	var parts []string
	if ev.Ports != 0 {
		parts = append(parts, fmt.Sprintf("%d event-channel ports", ev.Ports))
	}
	if g := gn.String(); g != "" {
		parts = append(parts, g)
	}
	what := strings.Join(parts, ", ")
	s.logf("leftovers: %s", what)
	return fmt.Errorf("%w: %s", ErrLeftovers, what)
}
