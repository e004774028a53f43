package device_test

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gozen-dev/gozen/domid"
	"github.com/gozen-dev/gozen/xenbus"
	"github.com/gozen-dev/gozen/xenbus/device"
	"github.com/gozen-dev/gozen/xenbus/memstore"
	"github.com/gozen-dev/gozen/xenbus/wire"
)

const guest domid.ID = 5

// beMode is how a fake backend behaves.
type beMode int

const (
	beNormal    beMode = iota // InitWait, then Connected once ring-ref is published
	beMalformed               // writes a malformed state instead of InitWait
)

// backend plays a backend's states (netback's and blkback's
// frontend_changed): InitWait at start; Connected when the frontend is
// Initialised or Connected with a ring-ref; Closing and Closed after the
// frontend; InitWait again when a connected frontend goes back to
// Initialising (a reconnection to the same backend).
type backend struct {
	front, back string
	cancel      context.CancelFunc
	done        chan struct{}

	mu   sync.Mutex
	seen []device.State // the frontend's states, as observed
}

func (b *backend) stop() {
	b.cancel()
	<-b.done
}

// frontStates returns the frontend's states the backend saw, but the
// toolstack's initial Initialising (seen or not, depending on timing).
func (b *backend) frontStates() []device.State {
	b.mu.Lock()
	defer b.mu.Unlock()
	if len(b.seen) > 0 && b.seen[0] == device.Initialising {
		return slices.Clone(b.seen[1:])
	}
	return slices.Clone(b.seen)
}

func hasSuffix(got []device.State, want ...device.State) bool {
	return len(got) >= len(want) && slices.Equal(got[len(got)-len(want):], want)
}

// env is one scenario's world: a store, a dom0 client for the backends,
// the guest's client, the bus and its drivers, and what was reported.
type env struct {
	t       *testing.T
	ctx     context.Context
	s       *memstore.Store
	dom0    *xenbus.Client
	g       *xenbus.Client
	dom     domid.ID   // the guest's current domid
	store   *swapStore // what the bus uses: forwards to g
	bus     *device.Bus
	log     *eventLog
	drivers map[string]*testDriver
	bes     map[string]*backend // by "<class>/<id>"

	mu   sync.Mutex
	errs []*device.DeviceError
}

func (e *env) reported() []*device.DeviceError {
	e.mu.Lock()
	defer e.mu.Unlock()
	return slices.Clone(e.errs)
}

// addDevice creates device <class>/<id> of the guest with its backend in
// domain bdom, and starts a fake backend for it.
func (e *env) addDevice(class, id string, bdom domid.ID, mode beMode) *backend {
	e.t.Helper()
	front, back, err := e.s.AddDevice(memstore.Device{
		Frontend: e.dom, Backend: bdom, Class: class, ID: id,
		BackendKeys: map[string]string{"feature-test": "1"},
	})
	if err != nil {
		e.t.Fatal(err)
	}
	be := e.startBackend(front, back, mode)
	e.bes[class+"/"+id] = be
	return be
}

func (e *env) startBackend(front, back string, mode beMode) *backend {
	e.t.Helper()
	ctx, cancel := context.WithCancel(e.ctx)
	be := &backend{front: front, back: back, cancel: cancel, done: make(chan struct{})}
	w, err := e.dom0.Watch(ctx, front+"/state")
	if err != nil {
		e.t.Fatal(err)
	}
	c := e.dom0
	set := func(st string) {
		// A removed backend directory stays removed.
		if _, err := c.ReadString(ctx, back+"/frontend"); err == nil {
			c.WriteString(ctx, back+"/state", st)
		}
	}
	go func() {
		defer close(be.done)
		defer func() {
			uctx, cancel := context.WithTimeout(context.Background(), time.Second)
			w.Unwatch(uctx)
			cancel()
		}()
		if mode == beMalformed {
			set("banana")
		} else {
			set("2")
		}
		last := device.State(-1)
		for {
			select {
			case <-ctx.Done():
				return
			case _, ok := <-w.Events():
				if !ok {
					return
				}
			}
			v, err := c.ReadString(ctx, front+"/state")
			if err != nil {
				continue
			}
			st, err := device.ParseState(v)
			if err != nil || st == last {
				continue
			}
			last = st
			be.mu.Lock()
			be.seen = append(be.seen, st)
			be.mu.Unlock()
			bst, _ := c.ReadString(ctx, back+"/state")
			switch st {
			case device.Initialising:
				if bst == "4" {
					set("2")
				}
			case device.Initialised, device.Connected:
				if _, err := c.ReadString(ctx, front+"/ring-ref"); err == nil && bst == "2" {
					set("4")
				}
			case device.Closing:
				set("5")
			case device.Closed:
				set("6")
			}
		}
	}()
	return be
}

func (e *env) frontState(class, id string) string {
	v, err := e.s.Read(fmt.Sprintf("/local/domain/%d/device/%s/%s/state", e.dom, class, id))
	if err != nil {
		return err.Error()
	}
	return v
}

func (e *env) names() []string {
	var out []string
	for _, d := range e.bus.Devices() {
		out = append(out, d.Name())
	}
	return out
}

func (e *env) device(name string) *device.Bound {
	for _, d := range e.bus.Devices() {
		if d.Name() == name {
			return d.(*device.Bound)
		}
	}
	e.t.Fatalf("no device %s in %q", name, e.names())
	return nil
}

// closed reports whether the drivers closed these devices last.
func (e *env) closed(names ...string) bool {
	for _, n := range names {
		if ev := e.log.of(n); len(ev) == 0 || ev[len(ev)-1] != "close" {
			return false
		}
	}
	return true
}

// eventually polls cond for up to 5 s.
func (e *env) eventually(what string, cond func() bool) {
	e.t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			e.t.Fatalf("timed out waiting for %s (devices %q, log %q, reported %v)", what, e.names(), e.log.all(), e.reported())
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// follow waits, through Bus.Changed only (no polling), until the bus
// lists the devices want.
func (e *env) follow(want ...string) {
	e.t.Helper()
	for {
		ch := e.bus.Changed()
		if slices.Equal(e.names(), want) {
			return
		}
		select {
		case <-ch:
		case <-time.After(5 * time.Second):
			e.t.Fatalf("no change while waiting for %q (devices %q, reported %v)", want, e.names(), e.reported())
		}
	}
}

// eventLog records the drivers' calls.
type eventLog struct {
	mu sync.Mutex
	ev []string
}

func (l *eventLog) add(format string, args ...any) {
	l.mu.Lock()
	l.ev = append(l.ev, fmt.Sprintf(format, args...))
	l.mu.Unlock()
}

func (l *eventLog) all() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.ev)
}

// of returns the events of one device, without its name.
func (l *eventLog) of(name string) []string {
	var out []string
	for _, ev := range l.all() {
		if verb, rest, _ := strings.Cut(ev, " "); rest == name || strings.HasPrefix(rest, name+" ") {
			out = append(out, strings.TrimSpace(verb+strings.TrimPrefix(rest, name)))
		}
	}
	return out
}

// errRemovedOrClosed matches ErrRemoved and ErrBackendClosed: when the
// toolstack removes both directories, either removal may be seen first.
var errRemovedOrClosed = anyOf{device.ErrRemoved, device.ErrBackendClosed}

type anyOf []error

func (a anyOf) Error() string { return fmt.Sprint([]error(a)) }

func (a anyOf) Is(err error) bool {
	for _, e := range a {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

var (
	errConnect   = errors.New("test: connect refused")
	errReconnect = errors.New("test: reconnect refused")
	errSuspend   = errors.New("test: suspend refused")
)

// testDriver runs the handshake blkfront runs: wait for InitWait, publish
// ring-ref and event-channel with Initialised, wait for Connected, switch
// to Connected.
type testDriver struct {
	class         string
	log           *eventLog
	failConnect   bool
	failReconnect bool
	failSuspend   bool

	mu  sync.Mutex
	ref uint32
}

func (d *testDriver) Class() string { return d.class }

func (d *testDriver) nextRef() uint32 {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.ref++
	return d.ref
}

func handshake(ctx context.Context, f *device.Frontend, ref uint32) error {
	if _, err := f.WaitBackend(ctx, device.InitWait); err != nil {
		return err
	}
	if ok, err := f.Feature(ctx, "test"); err != nil || !ok {
		return fmt.Errorf("feature-test: %v %v", ok, err)
	}
	if err := f.Publish(ctx, []device.KV{device.Uint("ring-ref", ref), device.Uint("event-channel", uint32(3))}, device.Initialised); err != nil {
		return err
	}
	if _, err := f.WaitBackend(ctx, device.Connected); err != nil {
		return err
	}
	return f.SwitchState(ctx, device.Connected)
}

func (d *testDriver) Connect(ctx context.Context, f *device.Frontend) (device.Conn, error) {
	d.log.add("connect %s", f.Name())
	if d.failConnect {
		if f.ID == "1" {
			// Failing after publishing: the bus closes the Conn after the
			// handshake.
			return &testConn{d: d, name: f.Name()}, errConnect
		}
		return nil, errConnect
	}
	if err := handshake(ctx, f, d.nextRef()); err != nil {
		return nil, err
	}
	return &testConn{d: d, name: f.Name()}, nil
}

type testConn struct {
	d    *testDriver
	name string
}

func (c *testConn) Suspend(ctx context.Context) error {
	c.d.log.add("suspend %s", c.name)
	if c.d.failSuspend {
		return errSuspend
	}
	return nil
}

func (c *testConn) Resume(cancelled bool) error {
	c.d.log.add("resume(%v) %s", cancelled, c.name)
	return nil
}

func (c *testConn) Reconnect(ctx context.Context, f *device.Frontend) error {
	c.d.log.add("reconnect %s %s", c.name, f.Backend)
	if c.d.failReconnect {
		return errReconnect
	}
	return handshake(ctx, f, c.d.nextRef())
}

func (c *testConn) Close() error {
	c.d.log.add("close %s", c.name)
	return nil
}

// swapStore forwards to a client a test can replace, as a platform's
// store does when the domain is resumed elsewhere under a new domid.
type swapStore struct{ c atomic.Pointer[xenbus.Client] }

var _ device.Store = (*swapStore)(nil)

func (s *swapStore) Read(ctx context.Context, p string) ([]byte, error) {
	return s.c.Load().Read(ctx, p)
}
func (s *swapStore) ReadString(ctx context.Context, p string) (string, error) {
	return s.c.Load().ReadString(ctx, p)
}
func (s *swapStore) Write(ctx context.Context, p string, v []byte) error {
	return s.c.Load().Write(ctx, p, v)
}
func (s *swapStore) WriteString(ctx context.Context, p, v string) error {
	return s.c.Load().WriteString(ctx, p, v)
}
func (s *swapStore) Mkdir(ctx context.Context, p string) error { return s.c.Load().Mkdir(ctx, p) }
func (s *swapStore) Rm(ctx context.Context, p string) error    { return s.c.Load().Rm(ctx, p) }
func (s *swapStore) Directory(ctx context.Context, p string) ([]string, error) {
	return s.c.Load().Directory(ctx, p)
}
func (s *swapStore) GetPerms(ctx context.Context, p string) ([]wire.Perm, error) {
	return s.c.Load().GetPerms(ctx, p)
}
func (s *swapStore) SetPerms(ctx context.Context, p string, perms []wire.Perm) error {
	return s.c.Load().SetPerms(ctx, p, perms)
}
func (s *swapStore) Home() string { return s.c.Load().Home() }
func (s *swapStore) WaitFor(ctx context.Context, p string, check func() (bool, error)) error {
	return s.c.Load().WaitFor(ctx, p, check)
}
func (s *swapStore) Transaction(ctx context.Context, fn func(tx *xenbus.Tx) error) error {
	return s.c.Load().Transaction(ctx, fn)
}

type devSpec struct {
	class, id string
	bdom      domid.ID
	mode      beMode
	badPath   bool // a malformed backend path in the frontend directory
}

func TestBus(t *testing.T) {
	vif := func(id string) devSpec { return devSpec{class: "vif", id: id} }
	vbd := func(id string) devSpec { return devSpec{class: "vbd", id: id} }
	tests := []struct {
		name     string
		devs     []devSpec
		failConn string // class whose driver's Connect fails
		failRec  string // class whose driver's Reconnect fails
		failSus  string // class whose driver's Suspend fails
		// want are the devices connected after Start.
		want []string
		// wantErrs are the names reported to OnError, with an error each
		// must wrap; nothing else may be reported.
		wantErrs map[string]error
		run      func(t *testing.T, e *env)
	}{{
		name: "two classes",
		devs: []devSpec{vif("0"), vbd("51712"), vif("1")},
		want: []string{"vif/0", "vif/1", "vbd/51712"},
		run: func(t *testing.T, e *env) {
			for _, n := range []string{"vif/0", "vif/1", "vbd/51712"} {
				c, id, _ := strings.Cut(n, "/")
				if st := e.frontState(c, id); st != "4" {
					t.Errorf("%s: state %s", n, st)
				}
				if got := e.log.of(n); !slices.Equal(got, []string{"connect"}) {
					t.Errorf("%s: log %q", n, got)
				}
			}
			if f := e.device("vbd/51712").Frontend(); f.Backend != e.bes["vbd/51712"].back || f.BackendID != 0 {
				t.Errorf("frontend %+v", f)
			}
		},
	}, {
		name: "added later",
		devs: []devSpec{vif("0")},
		want: []string{"vif/0"},
		run: func(t *testing.T, e *env) {
			e.addDevice("vif", "1", 0, beNormal)
			e.addDevice("vbd", "768", 3, beNormal)
			e.eventually("vif/1 and vbd/768", func() bool {
				return slices.Equal(e.names(), []string{"vif/0", "vif/1", "vbd/768"})
			})
			if f := e.device("vbd/768").Frontend(); f.BackendID != 3 {
				t.Errorf("vbd/768 backend %d", f.BackendID)
			}
		},
	}, {
		name:     "backend goes away",
		devs:     []devSpec{vif("0"), vif("1"), vif("2"), vbd("0")},
		want:     []string{"vif/0", "vif/1", "vif/2", "vbd/0"},
		wantErrs: map[string]error{"vif/0": device.ErrBackendClosed, "vif/1": device.ErrBackendClosed, "vif/2": wire.ErrMalformed},
		run: func(t *testing.T, e *env) {
			e.dom0.WriteString(e.ctx, e.bes["vif/0"].back+"/state", "5") // Closing
			e.s.Rm(e.bes["vif/1"].back)                                  // backend node removed
			e.dom0.WriteString(e.ctx, e.bes["vif/2"].back+"/state", "4\x00garbage")
			e.eventually("vif/0..2 closed", func() bool {
				return slices.Equal(e.names(), []string{"vbd/0"}) && e.closed("vif/0", "vif/1", "vif/2")
			})
			for _, id := range []string{"0", "1", "2"} {
				if st := e.frontState("vif", id); st != "6" {
					t.Errorf("vif/%s: state %s", id, st)
				}
				if got := e.log.of("vif/" + id); !slices.Equal(got, []string{"connect", "close"}) {
					t.Errorf("vif/%s: log %q", id, got)
				}
			}
			// (Watches coalesce: the backend may miss our Closing, which
			// follows its own Closing at once.)
			if got := e.bes["vif/0"].frontStates(); !hasSuffix(got, device.Closed) {
				t.Errorf("vif/0: backend saw %v", got)
			}
			// The backend coming back does not reconnect a closed device.
			e.dom0.WriteString(e.ctx, e.bes["vif/0"].back+"/state", "2")
			time.Sleep(50 * time.Millisecond)
			if got := e.log.of("vif/0"); len(got) != 2 {
				t.Errorf("vif/0: log %q", got)
			}
		},
	}, {
		name: "hostile",
		devs: []devSpec{
			{class: "vif", id: "0", badPath: true},
			{class: "vif", id: "1", mode: beMalformed},
			vif("2"), vbd("0"),
		},
		want:     []string{"vif/2", "vbd/0"},
		wantErrs: map[string]error{"vif/0": wire.ErrMalformed, "vif/1": wire.ErrMalformed},
		run: func(t *testing.T, e *env) {
			if got := e.log.of("vif/0"); len(got) != 0 {
				t.Errorf("vif/0 connected: %q", got)
			}
			if st := e.frontState("vif", "1"); st != "6" {
				t.Errorf("vif/1: state %s", st)
			}
		},
	}, {
		name:     "connect fails",
		devs:     []devSpec{vif("0"), vbd("0"), vbd("1")},
		failConn: "vbd",
		want:     []string{"vif/0"},
		wantErrs: map[string]error{"vbd/0": errConnect, "vbd/1": errConnect},
		run: func(t *testing.T, e *env) {
			for _, id := range []string{"0", "1"} {
				if st := e.frontState("vbd", id); st != "6" {
					t.Errorf("vbd/%s: state %s", id, st)
				}
				if got := e.bes["vbd/"+id].frontStates(); !hasSuffix(got, device.Closing, device.Closed) {
					t.Errorf("vbd/%s: backend saw %v", id, got)
				}
			}
			if got := e.log.of("vbd/0"); !slices.Equal(got, []string{"connect"}) {
				t.Errorf("vbd/0: log %q", got)
			}
			if got := e.log.of("vbd/1"); !slices.Equal(got, []string{"connect", "close"}) {
				t.Errorf("vbd/1: log %q", got)
			}
		},
	}, {
		name: "close handshake",
		devs: []devSpec{vif("0"), vif("1")},
		want: []string{"vif/0", "vif/1"},
		run: func(t *testing.T, e *env) {
			d := e.device("vif/0")
			if err := d.Close(); err != nil {
				t.Fatal(err)
			}
			// The backend answered our Closing, so it saw it.
			if got := e.bes["vif/0"].frontStates(); !hasSuffix(got, device.Closing, device.Closed) {
				t.Errorf("backend saw %v", got)
			}
			if st, _ := e.s.Read(e.bes["vif/0"].back + "/state"); st != "6" || e.frontState("vif", "0") != "6" {
				t.Errorf("states: backend %s, frontend %s", st, e.frontState("vif", "0"))
			}
			if got := e.log.of("vif/0"); !slices.Equal(got, []string{"connect", "close"}) {
				t.Errorf("log %q", got)
			}
			if !slices.Equal(e.names(), []string{"vif/1"}) {
				t.Errorf("devices %q", e.names())
			}
			// Closed: the lifecycle calls do nothing.
			if err := errors.Join(d.Close(), d.Suspend(e.ctx), d.Resume(false), d.Resume(true)); err != nil {
				t.Error(err)
			}
			if got := e.log.of("vif/0"); len(got) != 2 {
				t.Errorf("log %q", got)
			}
		},
	}, {
		name:     "resume cancelled",
		devs:     []devSpec{vif("0"), vif("1")},
		want:     []string{"vif/0", "vif/1"},
		wantErrs: map[string]error{"vif/0": device.ErrBackendClosed},
		run: func(t *testing.T, e *env) {
			d := e.device("vif/0")
			if err := d.Suspend(e.ctx); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(e.names(), []string{"vif/0", "vif/1"}) {
				t.Errorf("suspended device not listed: %q", e.names())
			}
			ref, _ := e.s.Read(e.bes["vif/0"].front + "/ring-ref")
			if err := d.Resume(true); err != nil {
				t.Fatal(err)
			}
			if got := e.log.of("vif/0"); !slices.Equal(got, []string{"connect", "suspend", "resume(true)"}) {
				t.Errorf("log %q", got)
			}
			if ref2, _ := e.s.Read(e.bes["vif/0"].front + "/ring-ref"); ref2 != ref || e.frontState("vif", "0") != "4" {
				t.Errorf("ring-ref %s -> %s, state %s", ref, ref2, e.frontState("vif", "0"))
			}
			// Watching again.
			e.s.Rm(e.bes["vif/0"].back)
			e.eventually("vif/0 closed", func() bool { return slices.Equal(e.names(), []string{"vif/1"}) && e.closed("vif/0") })
		},
	}, {
		name:     "resume in a new domain",
		devs:     []devSpec{vif("0"), vif("1")},
		want:     []string{"vif/0", "vif/1"},
		wantErrs: map[string]error{"vif/0": device.ErrBackendClosed},
		run: func(t *testing.T, e *env) {
			d := e.device("vif/0")
			old := e.bes["vif/0"]
			if err := d.Suspend(e.ctx); err != nil {
				t.Fatal(err)
			}
			// The domain is moved: the old backend goes (unnoticed while
			// suspended) and the toolstack sets the device up again with a
			// backend in domain 7.
			old.stop()
			e.s.Rm(old.back)
			be := e.addDevice("vif", "0", 7, beNormal)
			time.Sleep(20 * time.Millisecond)
			if !slices.Equal(e.names(), []string{"vif/0", "vif/1"}) {
				t.Fatalf("devices while suspended: %q", e.names())
			}
			if err := d.Resume(false); err != nil {
				t.Fatal(err)
			}
			if got := e.log.of("vif/0"); !slices.Equal(got, []string{"connect", "suspend", "resume(false)", "reconnect " + be.back}) {
				t.Errorf("log %q", got)
			}
			if f := d.Frontend(); f.Backend != be.back || f.BackendID != 7 {
				t.Errorf("frontend %+v", f)
			}
			e.eventually("the new backend to see Connected", func() bool {
				return hasSuffix(be.frontStates(), device.Connected)
			})
			// Same backend, reconnecting: Initialising makes it InitWait again.
			d1 := e.device("vif/1")
			if err := errors.Join(d1.Suspend(e.ctx), d1.Resume(false)); err != nil {
				t.Fatal(err)
			}
			if got := e.log.of("vif/1"); !slices.Equal(got, []string{"connect", "suspend", "resume(false)", "reconnect " + e.bes["vif/1"].back}) {
				t.Errorf("vif/1: log %q", got)
			}
			if e.frontState("vif", "1") != "4" {
				t.Errorf("vif/1: state %s", e.frontState("vif", "1"))
			}
			// The new backend is watched.
			e.dom0.WriteString(e.ctx, be.back+"/state", "6")
			e.eventually("vif/0 closed", func() bool { return slices.Equal(e.names(), []string{"vif/1"}) && e.closed("vif/0") })
		},
	}, {
		name: "resume under a new domid",
		devs: []devSpec{vif("0")},
		want: []string{"vif/0"},
		run: func(t *testing.T, e *env) {
			d := e.device("vif/0")
			if err := d.Suspend(e.ctx); err != nil {
				t.Fatal(err)
			}
			e.bes["vif/0"].stop()
			// The domain comes back as domain 9, with its own connection
			// to the store and its devices set up again there.
			g9, err := e.s.Connect(9)
			if err != nil {
				t.Fatal(err)
			}
			old := e.store.c.Swap(g9)
			e.dom = 9
			be := e.addDevice("vif", "0", 0, beNormal)
			if err := d.Resume(false); err != nil {
				t.Fatal(err)
			}
			if f := d.Frontend(); f.Path != "/local/domain/9/device/vif/0" || f.Backend != be.back {
				t.Errorf("frontend %+v", f)
			}
			if e.frontState("vif", "0") != "4" {
				t.Errorf("state %s", e.frontState("vif", "0"))
			}
			// The old connection goes; devices added under the new home
			// are found.
			old.Close()
			e.addDevice("vif", "1", 0, beNormal)
			e.eventually("vif/1 under the new home", func() bool { return slices.Equal(e.names(), []string{"vif/0", "vif/1"}) })
			if f := e.device("vif/1").Frontend(); f.Path != "/local/domain/9/device/vif/1" {
				t.Errorf("vif/1 frontend %+v", f)
			}
		},
	}, {
		name:     "reconnect fails",
		devs:     []devSpec{vif("0"), vbd("0")},
		failRec:  "vif",
		want:     []string{"vif/0", "vbd/0"},
		wantErrs: map[string]error{"vif/0": errReconnect},
		run: func(t *testing.T, e *env) {
			d := e.device("vif/0")
			if err := d.Suspend(e.ctx); err != nil {
				t.Fatal(err)
			}
			if err := d.Resume(false); !errors.Is(err, errReconnect) {
				t.Fatalf("resume: %v", err)
			}
			if got := e.log.of("vif/0"); !slices.Equal(got, []string{"connect", "suspend", "resume(false)", "reconnect " + e.bes["vif/0"].back, "close"}) {
				t.Errorf("log %q", got)
			}
			if !slices.Equal(e.names(), []string{"vbd/0"}) || e.frontState("vif", "0") != "6" {
				t.Errorf("devices %q, state %s", e.names(), e.frontState("vif", "0"))
			}
		},
	}, {
		name:     "half-written directory",
		devs:     []devSpec{vif("0")},
		want:     []string{"vif/0"},
		wantErrs: map[string]error{"vif/1": wire.ErrNotExist},
		run: func(t *testing.T, e *env) {
			// The directory appears without its backend keys: reported
			// once, tried again when it changes.
			front := fmt.Sprintf("/local/domain/%d/device/vif/1", guest)
			e.s.Write(front+"/state", "1")
			e.s.SetPerms(front, wire.Perm{Dom: guest, Access: wire.AccessNone})
			e.s.SetPerms(front+"/state", wire.Perm{Dom: guest, Access: wire.AccessNone})
			e.eventually("vif/1 reported", func() bool { return len(e.reported()) == 1 })
			e.s.Write(front+"/mac", "00:16:3e:00:00:02")
			time.Sleep(20 * time.Millisecond)
			e.addDevice("vif", "1", 0, beNormal)
			e.eventually("vif/1 connected", func() bool { return slices.Equal(e.names(), []string{"vif/0", "vif/1"}) })
			if n := len(e.reported()); n != 1 {
				t.Errorf("%d reports", n)
			}
		},
	}, {
		name:     "suspend fails",
		devs:     []devSpec{vif("0")},
		failSus:  "vif",
		want:     []string{"vif/0"},
		wantErrs: map[string]error{"vif/0": device.ErrBackendClosed},
		run: func(t *testing.T, e *env) {
			d := e.device("vif/0")
			if err := d.Suspend(e.ctx); !errors.Is(err, errSuspend) {
				t.Fatalf("suspend: %v", err)
			}
			// Still connected and watched; Resume does nothing.
			if err := d.Resume(false); err != nil {
				t.Fatal(err)
			}
			e.dom0.WriteString(e.ctx, e.bes["vif/0"].back+"/state", "6")
			e.eventually("vif/0 closed", func() bool { return len(e.names()) == 0 && e.closed("vif/0") })
			if got := e.log.of("vif/0"); !slices.Equal(got, []string{"connect", "suspend", "close"}) {
				t.Errorf("log %q", got)
			}
		},
	}, {
		name:     "device removed and added again",
		devs:     []devSpec{vif("0"), vif("1")},
		want:     []string{"vif/0", "vif/1"},
		wantErrs: map[string]error{"vif/0": errRemovedOrClosed},
		run: func(t *testing.T, e *env) {
			be := e.bes["vif/0"]
			be.stop()
			e.s.Rm(be.front)
			e.s.Rm(be.back)
			e.eventually("vif/0 closed", func() bool { return slices.Equal(e.names(), []string{"vif/1"}) && e.closed("vif/0") })
			if got := e.log.of("vif/0"); !slices.Equal(got, []string{"connect", "close"}) {
				t.Errorf("log %q", got)
			}
			e.addDevice("vif", "0", 0, beNormal)
			e.eventually("vif/0 back", func() bool { return slices.Equal(e.names(), []string{"vif/0", "vif/1"}) })
			if got := e.log.of("vif/0"); !slices.Equal(got, []string{"connect", "close", "connect"}) {
				t.Errorf("log %q", got)
			}
		},
	}, {
		name:     "followed with Changed",
		devs:     []devSpec{vif("0")},
		want:     []string{"vif/0"},
		wantErrs: map[string]error{"vif/0": device.ErrBackendClosed},
		run: func(t *testing.T, e *env) {
			e.addDevice("vif", "1", 0, beNormal)
			e.follow("vif/0", "vif/1")
			e.dom0.WriteString(e.ctx, e.bes["vif/0"].back+"/state", "5") // Closing
			e.follow("vif/1")
			e.addDevice("vbd", "768", 0, beNormal)
			e.follow("vif/1", "vbd/768")
		},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			defer checkLeaks(t)
			s := memstore.New()
			defer s.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			dom0, err := s.Connect(0)
			if err != nil {
				t.Fatal(err)
			}
			g, err := s.Connect(guest)
			if err != nil {
				t.Fatal(err)
			}
			e := &env{t: t, ctx: ctx, s: s, dom0: dom0, g: g, dom: guest, store: &swapStore{}, log: &eventLog{}, drivers: map[string]*testDriver{}, bes: map[string]*backend{}}
			e.store.c.Store(g)
			e.bus = device.NewBus(e.store)
			e.bus.Timeout = 5 * time.Second
			e.bus.CloseTimeout = time.Second
			e.bus.OnError = func(err *device.DeviceError) {
				e.mu.Lock()
				e.errs = append(e.errs, err)
				e.mu.Unlock()
			}
			for _, class := range []string{"vif", "vbd"} {
				d := &testDriver{class: class, log: e.log, failConnect: tc.failConn == class, failReconnect: tc.failRec == class, failSuspend: tc.failSus == class}
				e.drivers[class] = d
				if err := e.bus.Register(d); err != nil {
					t.Fatal(err)
				}
			}
			for _, ds := range tc.devs {
				e.addDevice(ds.class, ds.id, ds.bdom, ds.mode)
				if ds.badPath {
					s.Write(e.bes[ds.class+"/"+ds.id].front+"/backend", "local/domain/0/backend")
				}
			}
			if err := e.bus.Start(ctx); err != nil {
				t.Fatal(err)
			}
			if got := e.names(); !slices.Equal(got, tc.want) {
				t.Fatalf("devices after Start: %q, want %q (reported %v)", got, tc.want, e.reported())
			}
			if tc.run != nil {
				tc.run(t, e)
			}
			if err := e.bus.Close(); err != nil {
				t.Errorf("bus close: %v", err)
			}
			if got := e.names(); len(got) != 0 {
				t.Errorf("devices after Close: %q", got)
			}
			for name, be := range e.bes {
				be.stop()
				class, id, _ := strings.Cut(name, "/")
				if st := e.frontState(class, id); slices.Contains(tc.want, name) && st == "4" {
					t.Errorf("%s still Connected after Close", name)
				}
			}
			got := map[string]bool{}
			for _, err := range e.reported() {
				want, ok := tc.wantErrs[err.Name]
				if a, any := want.(anyOf); any && a.Is(err) {
					want = err
				}
				if !ok || !errors.Is(err, want) {
					t.Errorf("reported %v", err)
				}
				got[err.Name] = true
			}
			for name, want := range tc.wantErrs {
				if !got[name] {
					t.Errorf("%s: %v not reported", name, want)
				}
			}
		})
	}
}

func TestBusRegister(t *testing.T) {
	defer checkLeaks(t)
	s := memstore.New()
	defer s.Close()
	g, _ := s.Connect(guest)
	b := device.NewBus(g)
	l := &eventLog{}
	for _, bad := range []device.Driver{nil, &testDriver{class: ""}, &testDriver{class: "a/b"}, &testDriver{class: "sp ace"}} {
		if err := b.Register(bad); err == nil {
			t.Errorf("Register(%v) accepted", bad)
		}
	}
	if err := b.Register(&testDriver{class: "vif", log: l}); err != nil {
		t.Fatal(err)
	}
	if err := b.Register(&testDriver{class: "vif", log: l}); err == nil {
		t.Error("class registered twice")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := b.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if len(b.Devices()) != 0 {
		t.Errorf("devices %v", b.Devices())
	}
	if err := b.Start(ctx); !errors.Is(err, device.ErrBusState) {
		t.Errorf("second Start: %v", err)
	}
	if err := b.Register(&testDriver{class: "vbd", log: l}); !errors.Is(err, device.ErrBusState) {
		t.Errorf("Register after Start: %v", err)
	}
	if err := errors.Join(b.Close(), b.Close()); err != nil {
		t.Error(err)
	}
	if err := b.Start(ctx); !errors.Is(err, device.ErrBusState) {
		t.Errorf("Start after Close: %v", err)
	}
}

// TestDisconnectGoneBackend: the close handshake with a backend whose
// directory is gone ends at once with our state Closed.
func TestDisconnectGoneBackend(t *testing.T) {
	defer checkLeaks(t)
	s := memstore.New()
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	g, _ := s.Connect(guest)
	_, back, _ := s.AddDevice(memstore.Device{Frontend: guest, Class: "vif", ID: "0"})
	f, err := device.Open(ctx, g, "vif", "0")
	if err != nil {
		t.Fatal(err)
	}
	s.Rm(back)
	start := time.Now()
	if err := f.Disconnect(ctx, 2*time.Second); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("took %v", d)
	}
	if st, _ := f.State(ctx); st != device.Closed {
		t.Errorf("state %v", st)
	}
	// A silent backend: Disconnect gives up after the wait, Closed anyway.
	s.AddDevice(memstore.Device{Frontend: guest, Class: "vif", ID: "1"})
	f, _ = device.Open(ctx, g, "vif", "1")
	if err := f.Disconnect(ctx, 50*time.Millisecond); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("silent backend: %v", err)
	}
	if st, _ := f.State(ctx); st != device.Closed {
		t.Errorf("state %v", st)
	}
}

// checkLeaks fails the test if goroutines of the xenbus packages (or of
// these tests' fake backends) outlive it.
func checkLeaks(t *testing.T) {
	t.Helper()
	var left []string
	for deadline := time.Now().Add(5 * time.Second); ; {
		buf := make([]byte, 1<<20)
		buf = buf[:runtime.Stack(buf, true)]
		gs := strings.Split(string(buf), "\n\n")
		left = left[:0]
		for _, g := range gs[1:] { // gs[0] is this goroutine
			if strings.Contains(g, "gozen-dev/gozen/xenbus") && !strings.Contains(g, "testing.tRunner(") {
				left = append(left, g)
			}
		}
		if len(left) == 0 {
			return
		}
		if time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Errorf("%d goroutines leaked:\n%s", len(left), strings.Join(left, "\n\n"))
}
