package device

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gozen-dev/gozen/xenbus/wire"
)

// Driver serves one device class. Its package keeps the ring side (grant
// references, event channel, request queues) apart from the xenstore
// negotiation, which it runs on the *Frontend the bus hands it.
type Driver interface {
	// Class is the device class served, e.g. "vif" or "vbd": the bus
	// enumerates device/<Class>/<id> in the domain's home.
	Class() string
	// Connect sets the device up on f, already opened (its backend path
	// and domain read): it allocates and grants the rings, binds an event
	// channel, reads the backend's features, publishes its keys
	// (Frontend.Publish) and waits for the backend to be Connected, ending
	// with our state Connected. ctx bounds the whole handshake.
	//
	// On error Connect releases what it set up, and the bus runs the close
	// handshake (Frontend.Disconnect). A driver that already published
	// rings the backend may have mapped may instead return a non-nil Conn
	// with the error: the bus then calls its Close after the handshake,
	// once the backend has unmapped them.
	Connect(ctx context.Context, f *Frontend) (Conn, error)
}

// Conn is the driver's side of a connected device, returned by
// Driver.Connect. The bus wraps it into a Device and calls its methods
// one at a time, never concurrently with each other; the xenstore side of
// the lifecycle (our state, the backend watch, re-opening) is the bus's.
type Conn interface {
	// Suspend quiesces the device before the domain suspends: no new
	// requests, in-flight ones completed or recorded for re-issue.
	Suspend(ctx context.Context) error
	// Resume is called after Suspend. With cancelled true the suspend did
	// not happen: rings, grants and the event channel are still valid and
	// I/O restarts on them. With cancelled false the domain is new: every
	// grant and port of the device is gone and must be forgotten, not
	// revoked; Reconnect (or, if it fails, Close) follows.
	Resume(cancelled bool) error
	// Reconnect sets the device up again after Resume(false), like
	// Connect, on f re-opened in the new domain (its backend path and
	// domain may have changed), then re-issues the recorded requests.
	Reconnect(ctx context.Context, f *Frontend) error
	// Close releases every grant and port the device still holds. The bus
	// calls it after the close handshake (the backend Closed or gone, or
	// the handshake timed out), or after a failed Reconnect.
	Close() error
}

// Device is a connected frontend the platform suspends and resumes.
type Device interface {
	// Name is "<class>/<id>", e.g. "vif/0".
	Name() string
	// Suspend quiesces the device before the domain suspends: no new
	// requests, in-flight ones completed or recorded for re-issue.
	Suspend(ctx context.Context) error
	// Resume brings the device back. cancelled means the suspend did not
	// happen (same domain, rings and grants still valid); otherwise the
	// domain is new: grants and event channels are gone and the frontend
	// reconnects to its backend from scratch.
	Resume(cancelled bool) error
	// Close disconnects from the backend and releases every grant and port.
	Close() error
}

// DeviceError is a failure of one device (or, with Name a bare class,
// of enumerating that class), as given to Bus.OnError.
type DeviceError struct {
	// Name is "<class>/<id>", or "<class>" for an enumeration failure.
	Name string
	// Err is what went wrong.
	Err error
}

// Error returns "xenbus device <name>: <err>".
func (e *DeviceError) Error() string { return "xenbus device " + e.Name + ": " + e.Err.Error() }

// Unwrap returns e.Err.
func (e *DeviceError) Unwrap() error { return e.Err }

// ErrRemoved is reported for a connected device whose directory was
// removed from xenstore (hot-unplug): the device was closed.
var ErrRemoved = errors.New("xenbus device: device directory removed")

// ErrBusState is returned by Register and Start when the bus is already
// started or closed.
var ErrBusState = errors.New("xenbus device: bus already started or closed")

// Default timeouts of a Bus.
const (
	// DefaultTimeout bounds a Connect or a Resume's reconnection.
	DefaultTimeout = 30 * time.Second
	// DefaultCloseTimeout bounds each wait of the close handshake, as
	// Linux's frontends bound theirs (5 s).
	DefaultCloseTimeout = 5 * time.Second
)

// Bus enumerates the devices of the registered classes, connects them
// with their drivers and follows them: devices added later are
// connected, devices whose backend goes away (Closing, Closed, its state
// node removed or malformed) or whose directory is removed are closed.
// One device's failure is reported and never stops the others.
type Bus struct {
	// OnError, if not nil, is called with every per-device failure: a
	// device that could not be opened or connected, lost its backend or
	// was removed, and enumeration failures. Calls are made one at a
	// time from the bus's goroutines; OnError must not call Bus.Close.
	// Set it before Start.
	OnError func(*DeviceError)
	// Timeout bounds each Connect and each reconnection after a resume
	// (DefaultTimeout if zero). Set it before Start.
	Timeout time.Duration
	// CloseTimeout bounds each wait of the close handshake
	// (DefaultCloseTimeout if zero). Set it before Start.
	CloseTimeout time.Duration

	s Store

	mu      sync.Mutex
	drivers map[string]Driver
	classes []string
	devs    map[string]*Bound // by name
	started bool
	closed  bool
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup

	// Under mu: the home each class is watched under, and how to stop
	// that watch when the home changes (a resume in a new domain).
	watched map[string]classWatch

	scanMu sync.Mutex // one scan at a time
	repMu  sync.Mutex // one OnError call at a time

	chMu    sync.Mutex
	changed chan struct{} // closed by notify; nil until Changed asks
}

// NewBus returns a bus using the xenstore connection s.
func NewBus(s Store) *Bus {
	return &Bus{s: s, drivers: map[string]Driver{}, devs: map[string]*Bound{}, watched: map[string]classWatch{}}
}

// Register adds the driver of a class. It fails for a nil driver, an
// empty class or one containing '/', a class already registered, and
// after Start.
func (b *Bus) Register(d Driver) error {
	if d == nil {
		return errors.New("xenbus device: Register: nil driver")
	}
	class := d.Class()
	if class == "" || strings.Contains(class, "/") || wire.CheckPath("device/"+class, true) != nil {
		return fmt.Errorf("xenbus device: Register: bad class %q", clip(class))
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.started || b.closed {
		return fmt.Errorf("xenbus device: Register %s: %w", class, ErrBusState)
	}
	if b.drivers[class] != nil {
		return fmt.Errorf("xenbus device: Register: class %s registered twice", class)
	}
	b.drivers[class] = d
	b.classes = append(b.classes, class)
	return nil
}

// Start enumerates device/<class>/<id> for each registered class, opens
// and connects every device (concurrently) and returns once each has been
// connected or has failed (failures go to OnError). It then keeps
// watching until ctx ends or Close: devices that appear are connected,
// devices whose backend goes away are closed. Start returns the
// enumeration errors, if any (those classes are still watched), or
// ErrBusState if called twice or after Close.
func (b *Bus) Start(ctx context.Context) error {
	b.mu.Lock()
	if b.started || b.closed {
		b.mu.Unlock()
		return fmt.Errorf("xenbus device: Start: %w", ErrBusState)
	}
	b.started = true
	b.ctx, b.cancel = context.WithCancel(ctx)
	classes := slices.Clone(b.classes)
	b.mu.Unlock()

	var errs []error
	var news []*Bound
	for _, class := range classes {
		n, err := b.scan(class)
		news = append(news, n...)
		if err != nil {
			errs = append(errs, err)
			b.report(class, err)
		}
	}
	for _, d := range news {
		select {
		case <-d.ready:
		case <-b.ctx.Done():
		}
	}
	for _, class := range classes {
		b.spawn(func() { b.watchClass(class) })
	}
	return errors.Join(errs...)
}

// Devices returns the connected devices (suspended ones included), in
// registration order of their classes, then by id (numerically).
func (b *Bus) Devices() []Device {
	b.mu.Lock()
	var ds []*Bound
	for _, d := range b.devs {
		if st := d.state(); st == stConnected || st == stSuspended {
			ds = append(ds, d)
		}
	}
	order := map[string]int{}
	for i, c := range b.classes {
		order[c] = i
	}
	b.mu.Unlock()
	slices.SortFunc(ds, func(x, y *Bound) int {
		if c := cmp.Compare(order[x.class], order[y.class]); c != 0 {
			return c
		}
		return compareIDs(x.id, y.id)
	})
	out := make([]Device, len(ds))
	for i, d := range ds {
		out[i] = d
	}
	return out
}

// Changed returns a channel that is closed at the next change of the set
// of devices Devices returns: a device connected, suspended, resumed or
// closed (its backend went away, its directory was removed, Close). To
// follow the devices (a network stack that moves to a re-attached vif),
// take the channel, call Devices, then wait for the channel and start
// over; no change is missed that way. Changed may be called at any time,
// before or after Start.
func (b *Bus) Changed() <-chan struct{} {
	b.chMu.Lock()
	defer b.chMu.Unlock()
	if b.changed == nil {
		b.changed = make(chan struct{})
	}
	return b.changed
}

// notify closes the channel of Changed.
func (b *Bus) notify() {
	b.chMu.Lock()
	defer b.chMu.Unlock()
	if b.changed != nil {
		close(b.changed)
		b.changed = nil
	}
}

func compareIDs(x, y string) int {
	nx, ex := strconv.ParseUint(x, 10, 64)
	ny, ey := strconv.ParseUint(y, 10, 64)
	switch {
	case ex == nil && ey == nil:
		return cmp.Compare(nx, ny)
	case ex == nil:
		return -1
	case ey == nil:
		return 1
	}
	return strings.Compare(x, y)
}

// Close stops watching, closes every device (the close handshake, then
// the driver's Close) and waits for the bus's goroutines. It returns the
// devices' Close errors.
func (b *Bus) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	cancel := b.cancel
	ds := make([]*Bound, 0, len(b.devs))
	for _, d := range b.devs {
		ds = append(ds, d)
	}
	b.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	slices.SortFunc(ds, func(x, y *Bound) int { return strings.Compare(x.name, y.name) })
	var errs []error
	for _, d := range ds {
		if err := d.Close(); err != nil {
			errs = append(errs, err)
		}
	}
	b.wg.Wait()
	return errors.Join(errs...)
}

// spawn runs fn in a goroutine counted by b.wg, unless the bus is closed.
func (b *Bus) spawn(fn func()) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return false
	}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		fn()
	}()
	return true
}

func (b *Bus) report(name string, err error) {
	if err == nil || b.OnError == nil {
		return
	}
	b.repMu.Lock()
	defer b.repMu.Unlock()
	b.OnError(&DeviceError{Name: name, Err: err})
}

func (b *Bus) timeout() time.Duration { return cmp.Or(b.Timeout, DefaultTimeout) }

func (b *Bus) closeTimeout() time.Duration { return cmp.Or(b.CloseTimeout, DefaultCloseTimeout) }

type classWatch struct {
	home string
	stop context.CancelFunc
}

// watchClass rescans device/<class> on every change under it until the
// bus stops. A watch that ends (the store broke) is retried with
// back-off; the first failure of a streak is reported. A watch whose home
// is no longer the store's (see rehome) is registered again under the
// new one.
func (b *Bus) watchClass(class string) {
	backoff := 100 * time.Millisecond
	failing := false
	for b.ctx.Err() == nil {
		home := b.s.Home()
		ctx, cancel := context.WithCancel(b.ctx)
		b.mu.Lock()
		b.watched[class] = classWatch{home, cancel}
		b.mu.Unlock()
		err := b.s.WaitFor(ctx, home+"/device/"+class, func() (bool, error) {
			failing = false
			if _, err := b.scan(class); err != nil {
				b.report(class, err)
			}
			return false, nil
		})
		rehomed := ctx.Err() != nil
		cancel()
		if b.ctx.Err() != nil {
			return
		}
		if rehomed {
			continue
		}
		if !failing {
			b.report(class, fmt.Errorf("watching: %w", err))
			failing = true
		}
		select {
		case <-time.After(backoff):
		case <-b.ctx.Done():
			return
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// rehome restarts the class watches registered under another home than
// the store's: after a resume in a new domain (a new domid), devices
// appear under the new home.
func (b *Bus) rehome() {
	home := b.s.Home()
	b.mu.Lock()
	defer b.mu.Unlock()
	for _, w := range b.watched {
		if w.home != home {
			w.stop()
		}
	}
}

// scan enumerates one class and starts connecting new devices (returned)
// and closing removed ones.
func (b *Bus) scan(class string) ([]*Bound, error) {
	b.scanMu.Lock()
	defer b.scanMu.Unlock()
	ctx, cancel := context.WithTimeout(b.ctx, b.timeout())
	ids, err := Enumerate(ctx, b.s, class)
	cancel()
	if err != nil {
		if b.ctx.Err() != nil {
			return nil, nil
		}
		return nil, err
	}
	present := map[string]bool{}
	for _, id := range ids {
		present[id] = true
	}
	var news, retry, gone []*Bound
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil, nil
	}
	drv := b.drivers[class]
	for _, id := range ids {
		name := class + "/" + id
		if d := b.devs[name]; d != nil {
			if d.retry {
				d.retry = false
				retry = append(retry, d)
			}
			continue
		}
		d := &Bound{b: b, drv: drv, class: class, id: id, name: name, ready: make(chan struct{})}
		b.devs[name] = d
		news = append(news, d)
	}
	for _, d := range b.devs {
		if d.class != class || present[d.id] || d.removing || d.state() == stSuspended {
			continue
		}
		d.removing = true
		gone = append(gone, d)
	}
	b.mu.Unlock()
	for _, d := range append(news, retry...) {
		if !b.spawn(d.connect) {
			d.readyOnce.Do(func() { close(d.ready) })
		}
	}
	for _, d := range gone {
		b.spawn(d.removed)
	}
	return news, nil
}

// Device states.
const (
	stConnecting int32 = iota
	stConnected
	stSuspended
	stClosed
)
