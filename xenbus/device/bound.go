package device

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/gozen-dev/gozen/xenbus/wire"
)

// Bound is a device bound to its driver by a Bus: the Device the platform
// suspends and resumes. It runs the xenstore side of the lifecycle and
// calls the driver's Conn for the ring side:
//
//   - Suspend: stops watching the backend, then Conn.Suspend; nothing is
//     written to xenstore.
//   - Resume(true): Conn.Resume(true), watching again.
//   - Resume(false): Conn.Resume(false) (forget grants and ports), Open
//     again under the store's current home (the domid and the backend may
//     have changed; the bus then also watches for devices under the new
//     home), our state Initialising, Conn.Reconnect, watching again. On
//     failure the device is closed.
//   - Close, or the backend going away: our state Closing, then Closed
//     once the backend follows (Frontend.Disconnect), then Conn.Close.
//
// Suspend, Resume and Close on a closed device do nothing and return nil.
type Bound struct {
	b     *Bus
	drv   Driver
	class string
	id    string
	name  string

	ready     chan struct{} // closed after the first connection attempt
	readyOnce sync.Once

	// Under b.mu.
	retry    bool // Open found the directory half-written: try again on the next scan
	missing  bool // ...and that was reported
	removing bool // the directory vanished; being closed

	st   atomic.Int32
	f    atomic.Pointer[Frontend]
	conn Conn // set before st becomes stConnected, then fixed

	mu        sync.Mutex // serializes the lifecycle
	gen       uint64     // bumped whenever the backend watch stops
	stopWatch context.CancelFunc
}

var _ Device = (*Bound)(nil)

// Name returns "<class>/<id>", e.g. "vif/0".
func (d *Bound) Name() string { return d.name }

// Conn returns the driver's connection (nil if the device never
// connected), for the application to reach the driver's own type.
func (d *Bound) Conn() Conn {
	if d.state() == stConnecting {
		return nil
	}
	return d.conn
}

// Frontend returns the device's current frontend (nil before it was
// opened); Resume(false) replaces it.
func (d *Bound) Frontend() *Frontend { return d.f.Load() }

func (d *Bound) state() int32 { return d.st.Load() }

// setState changes the device's state and tells the bus's followers (see
// Bus.Changed).
func (d *Bound) setState(st int32) {
	if d.st.Swap(st) != st {
		d.b.notify()
	}
}

// connect opens the device and runs the driver's Connect.
func (d *Bound) connect() {
	defer d.readyOnce.Do(func() { close(d.ready) })
	b := d.b
	d.mu.Lock()
	if d.state() != stConnecting {
		d.mu.Unlock()
		return
	}
	ctx, cancel := context.WithTimeout(b.ctx, b.timeout())
	defer cancel()
	f, err := Open(ctx, b.s, d.class, d.id)
	if err != nil {
		if errors.Is(err, wire.ErrNotExist) {
			// Half-written by the toolstack, or removed: the next scan
			// tries again (or closes it); report only once.
			b.mu.Lock()
			first := !d.removing && !d.missing
			d.retry, d.missing = true, true
			b.mu.Unlock()
			d.mu.Unlock()
			if first && b.ctx.Err() == nil {
				b.report(d.name, err)
			}
			return
		}
		d.setState(stClosed)
		d.mu.Unlock()
		if b.ctx.Err() == nil {
			b.report(d.name, err)
		}
		return
	}
	d.f.Store(f)
	conn, err := d.drv.Connect(ctx, f)
	if err != nil {
		err = fmt.Errorf("connecting: %w", err)
		d.setState(stClosed)
		if cerr := d.teardown(f, conn); cerr != nil {
			err = fmt.Errorf("%w (closing: %w)", err, cerr)
		}
		d.mu.Unlock()
		if b.ctx.Err() == nil {
			b.report(d.name, err)
		}
		return
	}
	d.conn = conn
	d.setState(stConnected)
	d.watchLocked()
	d.mu.Unlock()
}

// teardown runs the close handshake on f, then closes conn if not nil.
func (d *Bound) teardown(f *Frontend, conn Conn) error {
	ctx, cancel := context.WithTimeout(context.Background(), d.b.timeout())
	defer cancel()
	err := f.Disconnect(ctx, d.b.closeTimeout())
	if conn != nil {
		err = errors.Join(err, conn.Close())
	}
	return err
}

// closeLocked closes a connected or suspended device.
func (d *Bound) closeLocked() error {
	d.unwatchLocked()
	d.setState(stClosed)
	return d.teardown(d.f.Load(), d.conn)
}

// watchLocked starts watching the backend's state.
func (d *Bound) watchLocked() {
	ctx, cancel := context.WithCancel(d.b.ctx)
	d.gen++
	gen, f := d.gen, d.f.Load()
	d.stopWatch = cancel
	if !d.b.spawn(func() { d.watch(ctx, gen, f) }) {
		cancel()
	}
}

// unwatchLocked stops the backend watch; a loss it saw meanwhile is
// ignored (the generation moved on).
func (d *Bound) unwatchLocked() {
	if d.stopWatch != nil {
		d.stopWatch()
		d.stopWatch = nil
	}
	d.gen++
}

// watch follows the backend's state until it goes away or ctx ends.
func (d *Bound) watch(ctx context.Context, gen uint64, f *Frontend) {
	s := d.b.s
	var why error
	err := s.WaitFor(ctx, f.Backend+"/state", func() (bool, error) {
		v, err := s.ReadString(ctx, f.Backend+"/state")
		switch {
		case gone(err):
			why = fmt.Errorf("backend state node removed: %w", ErrBackendClosed)
		case err != nil:
			if ctx.Err() != nil {
				return false, err
			}
			why = fmt.Errorf("reading backend state: %w", err)
		default:
			st, err := ParseState(v)
			if err != nil {
				why = fmt.Errorf("backend state: %w", err)
				break
			}
			switch st {
			case Closing, Closed, Unknown:
				why = fmt.Errorf("backend is %s: %w", st, ErrBackendClosed)
			default:
				return false, nil
			}
		}
		return true, nil
	})
	if ctx.Err() != nil {
		return
	}
	if err != nil {
		d.b.report(d.name, fmt.Errorf("watching backend: %w", err))
		return
	}
	d.lost(gen, why)
}

// lost closes the device after its backend went away.
func (d *Bound) lost(gen uint64, why error) {
	d.mu.Lock()
	if d.gen != gen || d.state() != stConnected {
		d.mu.Unlock()
		return
	}
	if err := d.closeLocked(); err != nil {
		why = fmt.Errorf("%w (closing: %w)", why, err)
	}
	d.mu.Unlock()
	d.b.report(d.name, why)
}

// removed closes the device after its directory vanished, then forgets
// it so that a device re-added under the same id is connected anew.
func (d *Bound) removed() {
	b := d.b
	d.mu.Lock()
	var err error
	switch d.state() {
	case stConnecting:
		d.setState(stClosed)
	case stConnected, stSuspended:
		err = ErrRemoved
		if cerr := d.closeLocked(); cerr != nil {
			err = fmt.Errorf("%w (closing: %w)", err, cerr)
		}
	}
	d.mu.Unlock()
	b.mu.Lock()
	if b.devs[d.name] == d {
		delete(b.devs, d.name)
	}
	b.mu.Unlock()
	b.report(d.name, err)
	if b.ctx.Err() == nil {
		if _, err := b.scan(d.class); err != nil {
			b.report(d.class, err)
		}
	}
}

// Suspend stops watching the backend and suspends the driver's side. On
// failure the device stays connected.
func (d *Bound) Suspend(ctx context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.state() != stConnected {
		return nil
	}
	d.unwatchLocked()
	if err := d.conn.Suspend(ctx); err != nil {
		d.watchLocked()
		return &DeviceError{Name: d.name, Err: fmt.Errorf("suspending: %w", err)}
	}
	d.setState(stSuspended)
	return nil
}

// Resume brings a suspended device back (see Bound for the steps). If
// it fails the device is closed and the error, also given to OnError, is
// returned. Resume of a device that is not suspended does nothing.
func (d *Bound) Resume(cancelled bool) error {
	d.mu.Lock()
	err := d.resumeLocked(cancelled)
	d.mu.Unlock()
	if err != nil {
		d.b.report(d.name, err)
		return &DeviceError{Name: d.name, Err: err}
	}
	return nil
}

func (d *Bound) resumeLocked(cancelled bool) error {
	if d.state() != stSuspended {
		return nil
	}
	fail := func(f *Frontend, err error) error {
		d.setState(stClosed)
		if f == nil {
			return errors.Join(err, d.conn.Close())
		}
		if cerr := d.teardown(f, d.conn); cerr != nil {
			return fmt.Errorf("%w (closing: %w)", err, cerr)
		}
		return err
	}
	if cancelled {
		if err := d.conn.Resume(true); err != nil {
			return fail(d.f.Load(), fmt.Errorf("resuming: %w", err))
		}
		d.setState(stConnected)
		d.watchLocked()
		return nil
	}
	d.b.rehome()
	if err := d.conn.Resume(false); err != nil {
		return fail(nil, fmt.Errorf("resuming: %w", err))
	}
	ctx, cancel := context.WithTimeout(context.Background(), d.b.timeout())
	defer cancel()
	f, err := Open(ctx, d.b.s, d.class, d.id)
	if err != nil {
		return fail(nil, fmt.Errorf("re-opening: %w", err))
	}
	d.f.Store(f)
	if err := f.SwitchState(ctx, Initialising); err != nil {
		return fail(f, err)
	}
	if err := d.conn.Reconnect(ctx, f); err != nil {
		return fail(f, fmt.Errorf("reconnecting: %w", err))
	}
	d.setState(stConnected)
	d.watchLocked()
	return nil
}

// Close runs the close handshake and then the driver's Close. Closing a
// closed device does nothing.
func (d *Bound) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	switch d.state() {
	case stConnecting:
		d.setState(stClosed)
		return nil
	case stClosed:
		return nil
	}
	if err := d.closeLocked(); err != nil {
		return &DeviceError{Name: d.name, Err: err}
	}
	return nil
}
