// Package device is the device model of split-driver frontends: the
// xenbus handshake of io/xenbus.h, and a Bus that finds devices, binds
// them to their drivers and carries them across suspend, resume and the
// backend going away.
//
// # Handshake
//
// A Frontend is our end of one device: Open reads device/<class>/<id> in
// the domain's home (through a Store, which *xenbus.Client satisfies) for
// the backend's path and domain. Its methods switch our XenbusState, wait
// for the backend's (WaitBackend), read the backend's feature-* keys,
// publish ring references and event channels in one transaction
// (Publish) and run the close handshake (Disconnect: Closing, then Closed
// once the backend follows).
//
// # The model
//
// A Driver serves one class ("vif", "vbd"). Its Connect gets an opened
// Frontend, sets up the rings and negotiates, and returns a Conn: the
// ring side of the device, with Suspend, Resume, Reconnect and Close
// hooks. A driver keeps the two apart in separate files (ring.go for the
// rings and requests, xs.go for the xenstore negotiation), as Unikraft's
// netfront.c and netfront_xs.c do.
//
// A Bus, made from a Store, takes the drivers (Register) and, at Start,
// enumerates device/<class>/<id> for each class, connects every device
// and keeps watching: a device that appears later is connected; one whose
// backend goes Closing or Closed, loses its state node or writes a
// malformed state, or whose directory is removed, is closed (our state
// Closing then Closed, as Linux's frontends do, then Conn.Close) and
// reported to OnError. One device failing never stops the others.
// Devices lists the connected devices as Device values, which the
// platform suspends and resumes in order: Suspend touches no xenstore
// node; Resume(true) (the suspend was cancelled) restarts I/O on the same
// rings; Resume(false) (a new domain) re-opens the frontend, whose backend
// may have moved, and runs the driver's handshake again (Conn.Reconnect).
//
// A driver and its use, errors elided:
//
//	type netDriver struct{}
//
//	func (netDriver) Class() string { return "vif" }
//
//	func (netDriver) Connect(ctx context.Context, f *device.Frontend) (device.Conn, error) {
//		n := newRings()                         // grant the rings, bind a port
//		f.WaitBackend(ctx, device.InitWait)
//		f.Publish(ctx, []device.KV{
//			device.Uint("tx-ring-ref", n.txRef),
//			device.Uint("rx-ring-ref", n.rxRef),
//			device.Uint("event-channel", n.port),
//		}, device.Initialised)
//		f.WaitBackend(ctx, device.Connected)
//		f.SwitchState(ctx, device.Connected)
//		return n, nil                           // n implements device.Conn
//	}
//
//	bus := device.NewBus(client)              // client is a *xenbus.Client
//	bus.OnError = func(err *device.DeviceError) { log.Print(err) }
//	bus.Register(netDriver{})
//	bus.Start(ctx)
//	for _, d := range bus.Devices() {
//		fmt.Println(d.Name())                   // "vif/0"
//	}
package device

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strconv"
	"strings"
	"time"

	"github.com/gozen-dev/gozen/domid"
	"github.com/gozen-dev/gozen/xenbus"
	"github.com/gozen-dev/gozen/xenbus/wire"
)

// State is a XenbusState: the connection state of one end of a device.
type State int

// The XenbusState values of io/xenbus.h.
const (
	// Unknown is also what a missing state node reads as.
	Unknown State = 0
	// Initialising means the end is setting itself up.
	Initialising State = 1
	// InitWait means the end waits for information from its peer (a
	// backend publishes its features first).
	InitWait State = 2
	// Initialised means the end published its details (ring refs, event
	// channels) and waits for the peer to connect.
	Initialised State = 3
	// Connected means the device is usable.
	Connected State = 4
	// Closing means the device is being torn down.
	Closing State = 5
	// Closed means the device is gone.
	Closed State = 6
	// Reconfiguring means the device is being reconfigured.
	Reconfiguring State = 7
	// Reconfigured means the reconfiguration completed.
	Reconfigured State = 8
)

var stateNames = [...]string{"Unknown", "Initialising", "InitWait", "Initialised", "Connected", "Closing", "Closed", "Reconfiguring", "Reconfigured"}

// String returns the name of s, e.g. "Connected".
func (s State) String() string {
	if s >= 0 && int(s) < len(stateNames) {
		return stateNames[s]
	}
	return "State(" + strconv.Itoa(int(s)) + ")"
}

// ParseState parses a state node's value (a decimal number; surrounding
// spaces are tolerated). Values outside 0..8 are errors wrapping
// wire.ErrMalformed.
func ParseState(v string) (State, error) {
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil || n < 0 || n > int(Reconfigured) {
		return Unknown, fmt.Errorf("%w: xenbus state %q", wire.ErrMalformed, clip(v))
	}
	return State(n), nil
}

func clip(s string) string {
	if len(s) > 32 {
		return s[:32] + "..."
	}
	return s
}

// ErrBackendClosed is returned by WaitBackend when the backend went to
// Closed (or vanished) while another state was awaited, and reported by a
// Bus for a connected device whose backend went Closing, Closed or
// vanished.
var ErrBackendClosed = errors.New("xenbus device: backend closed")

// Enumerate lists the ids of the devices of a class (such as "vif" or
// "vbd") under device/<class> in the home of ops' client. No such
// directory means no devices.
func Enumerate(ctx context.Context, ops xenbus.Ops, class string) ([]string, error) {
	ids, err := ops.Directory(ctx, "device/"+class)
	if errors.Is(err, wire.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("xenbus device: enumerating %s: %w", class, err)
	}
	return ids, nil
}

// Frontend is our end of one device.
type Frontend struct {
	s Store
	// Class is the device class, e.g. "vif".
	Class string
	// ID is the device id within the class, e.g. "0".
	ID string
	// Path is our absolute device directory,
	// /local/domain/<us>/device/<class>/<id>.
	Path string
	// Backend is the absolute backend directory read from our "backend"
	// key.
	Backend string
	// BackendID is the backend's domain, from our "backend-id" key.
	BackendID domid.ID
}

// Open reads the backend path and backend domain of device <class>/<id>
// in the home of s. Open it again after the domain was resumed in a new
// place: the backend (and our home) may have moved.
func Open(ctx context.Context, s Store, class, id string) (*Frontend, error) {
	f := &Frontend{s: s, Class: class, ID: id, Path: s.Home() + "/device/" + class + "/" + id}
	if class == "" || id == "" || strings.Contains(class, "/") || strings.Contains(id, "/") {
		return nil, fmt.Errorf("xenbus device %q/%q: %w: class and id must be single path elements", clip(class), clip(id), wire.ErrInvalid)
	}
	if err := wire.CheckPath(f.Path, false); err != nil {
		return nil, fmt.Errorf("xenbus device %s/%s: %w", class, id, err)
	}
	be, err := s.ReadString(ctx, f.Path+"/backend")
	if err != nil {
		return nil, fmt.Errorf("xenbus device %s/%s: reading backend: %w", class, id, err)
	}
	if err := wire.CheckPath(be, false); err != nil || be == "/" {
		return nil, fmt.Errorf("xenbus device %s/%s: backend path %q: %w", class, id, clip(be), wire.ErrMalformed)
	}
	f.Backend = be
	bid, err := s.ReadString(ctx, f.Path+"/backend-id")
	if err != nil {
		return nil, fmt.Errorf("xenbus device %s/%s: reading backend-id: %w", class, id, err)
	}
	d, err := strconv.ParseUint(strings.TrimSpace(bid), 10, 16)
	if err != nil {
		return nil, fmt.Errorf("xenbus device %s/%s: backend-id %q: %w", class, id, clip(bid), wire.ErrMalformed)
	}
	f.BackendID = domid.ID(d)
	return f, nil
}

// Store returns the store the frontend talks through.
func (f *Frontend) Store() Store { return f.s }

// Name returns "<class>/<id>", e.g. "vif/0".
func (f *Frontend) Name() string { return f.Class + "/" + f.ID }

// Read reads a key of our own device directory (e.g. "mac").
func (f *Frontend) Read(ctx context.Context, key string) (string, error) {
	v, err := f.s.ReadString(ctx, f.Path+"/"+key)
	if err != nil {
		return "", fmt.Errorf("xenbus device %s/%s: %w", f.Class, f.ID, err)
	}
	return v, nil
}

// gone reports whether err from reading a node of the other side means that
// the node is not there: ENOENT, or EACCES, which xenstored answers when
// the node and its directory were removed and the nearest remaining
// ancestor is not readable by us (Linux's xenbus_read_driver_state reads
// any error as XenbusStateUnknown).
func gone(err error) bool {
	return errors.Is(err, wire.ErrNotExist) || errors.Is(err, fs.ErrPermission)
}

// readState reads the state node p of either side; a missing node is
// Unknown.
func readState(ctx context.Context, s Store, p string) (State, error) {
	v, err := s.ReadString(ctx, p)
	if gone(err) {
		return Unknown, nil
	}
	if err != nil {
		return Unknown, err
	}
	return ParseState(v)
}

// waitState waits, through a watch on the state node of the other side
// (other: "frontend" or "backend"), until it is in one of the wanted
// states, and returns it. If it reaches Closed, or the node vanishes after
// having existed, while neither is wanted, it fails with an error wrapping
// closed. On an error, the state returned is the last one read.
func waitState(ctx context.Context, s Store, node, other string, closed error, want []State) (State, error) {
	var got State
	existed := false
	err := s.WaitFor(ctx, node, func() (bool, error) {
		v, err := s.ReadString(ctx, node)
		missing := gone(err)
		switch {
		case missing:
			got = Unknown
		case err != nil:
			return false, err
		default:
			existed = true
			if got, err = ParseState(v); err != nil {
				return false, err
			}
		}
		for _, w := range want {
			if got == w {
				return true, nil
			}
		}
		if got == Closed || (missing && existed) {
			return false, fmt.Errorf("%s is %s: %w", other, got, closed)
		}
		return false, nil
	})
	return got, err
}

// commit writes kvs into the device directory dir and, if next is not
// Unknown, our state, in one transaction retried on conflicts that first
// checks that our state node exists (else the error wraps
// wire.ErrNotExist and nothing is written).
func commit(ctx context.Context, s Store, dir string, kvs []KV, next State) error {
	return s.Transaction(ctx, func(tx *xenbus.Tx) error {
		if _, err := tx.Read(ctx, dir+"/state"); err != nil {
			return err
		}
		for _, kv := range kvs {
			if err := tx.WriteString(ctx, dir+"/"+kv.Key, kv.Value); err != nil {
				return err
			}
		}
		if next != Unknown {
			return tx.WriteString(ctx, dir+"/state", strconv.Itoa(int(next)))
		}
		return nil
	})
}

// State returns our own state.
func (f *Frontend) State(ctx context.Context) (State, error) {
	s, err := readState(ctx, f.s, f.Path+"/state")
	if err != nil {
		return s, fmt.Errorf("xenbus device %s/%s: %w", f.Class, f.ID, err)
	}
	return s, nil
}

// SwitchState writes our state, in a transaction that first checks that
// our state node exists (as Linux's xenbus_switch_state does): a device
// directory the toolstack removed is not re-created, and the error wraps
// wire.ErrNotExist.
func (f *Frontend) SwitchState(ctx context.Context, s State) error {
	err := f.s.Transaction(ctx, func(tx *xenbus.Tx) error {
		if _, err := tx.Read(ctx, f.Path+"/state"); err != nil {
			return err
		}
		return tx.WriteString(ctx, f.Path+"/state", strconv.Itoa(int(s)))
	})
	if err != nil {
		return fmt.Errorf("xenbus device %s/%s: switching to %s: %w", f.Class, f.ID, s, err)
	}
	return nil
}

// BackendState returns the backend's state; a missing node is Unknown.
func (f *Frontend) BackendState(ctx context.Context) (State, error) {
	s, err := readState(ctx, f.s, f.Backend+"/state")
	if err != nil {
		return s, fmt.Errorf("xenbus device %s/%s: backend state: %w", f.Class, f.ID, err)
	}
	return s, nil
}

// WaitBackend waits, through a watch on the backend's state, until the
// backend is in one of the wanted states, and returns it. Use a ctx
// deadline as the timeout. If the backend reaches Closed, or its state
// node vanishes after having existed, while neither is wanted, it returns
// an error wrapping ErrBackendClosed.
func (f *Frontend) WaitBackend(ctx context.Context, want ...State) (State, error) {
	got, err := waitState(ctx, f.s, f.Backend+"/state", "backend", ErrBackendClosed, want)
	if err != nil {
		return got, fmt.Errorf("xenbus device %s/%s: waiting for backend %v (last %s): %w", f.Class, f.ID, want, got, err)
	}
	return got, nil
}

// ReadBackend reads a key of the backend directory.
func (f *Frontend) ReadBackend(ctx context.Context, key string) (string, error) {
	v, err := f.s.ReadString(ctx, f.Backend+"/"+key)
	if err != nil {
		return "", fmt.Errorf("xenbus device %s/%s: %w", f.Class, f.ID, err)
	}
	return v, nil
}

// Feature reports whether the backend advertises feature-<name> with a
// non-zero value ("1" usually). A missing key means false.
func (f *Frontend) Feature(ctx context.Context, name string) (bool, error) {
	v, err := f.s.ReadString(ctx, f.Backend+"/feature-"+name)
	if errors.Is(err, wire.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("xenbus device %s/%s: feature %s: %w", f.Class, f.ID, name, err)
	}
	v = strings.TrimSpace(v)
	return v != "" && v != "0", nil
}

// BackendFeatures returns every feature-* key of the backend directory,
// keyed by the name without the "feature-" prefix.
func (f *Frontend) BackendFeatures(ctx context.Context) (map[string]string, error) {
	keys, err := f.s.Directory(ctx, f.Backend)
	if err != nil {
		return nil, fmt.Errorf("xenbus device %s/%s: listing backend: %w", f.Class, f.ID, err)
	}
	out := map[string]string{}
	for _, k := range keys {
		name, ok := strings.CutPrefix(k, "feature-")
		if !ok {
			continue
		}
		v, err := f.s.ReadString(ctx, f.Backend+"/"+k)
		if errors.Is(err, wire.ErrNotExist) {
			continue // removed meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("xenbus device %s/%s: %w", f.Class, f.ID, err)
		}
		out[name] = v
	}
	return out, nil
}

// KV is one key (relative to the device directory, may contain '/') and
// value to publish.
type KV struct {
	// Key is relative to the device directory, e.g. "ring-ref" or
	// "queue-0/tx-ring-ref".
	Key string
	// Value is the value to write.
	Value string
}

// Uint returns a KV holding a decimal number, for ring refs and ports.
func Uint[T ~uint8 | ~uint16 | ~uint32 | ~uint64 | ~uint](key string, v T) KV {
	return KV{key, strconv.FormatUint(uint64(v), 10)}
}

// Publish writes the keys into our device directory in one transaction,
// retried on conflicts, and, if next is not Unknown, switches our state to
// next in the same transaction (typically Initialised after publishing
// ring-ref and event-channel). As with SwitchState, a missing state node
// (the directory was removed) fails with an error wrapping
// wire.ErrNotExist and writes nothing.
func (f *Frontend) Publish(ctx context.Context, kvs []KV, next State) error {
	if err := commit(ctx, f.s, f.Path, kvs, next); err != nil {
		return fmt.Errorf("xenbus device %s/%s: publishing: %w", f.Class, f.ID, err)
	}
	return nil
}

// Disconnect runs the frontend's side of the close handshake, as Linux's
// frontends do on removal: our state goes to Closing, then, once the
// backend is Closing or Closed (or gone), to Closed, and Disconnect waits
// for the backend to be Closed (or gone). Each of the two waits is bounded
// by wait (and by ctx); a backend that does not answer only makes
// Disconnect return an error after switching to Closed anyway. Release
// the rings' grants after Disconnect: the backend has unmapped them once
// it is Closed.
//
// If our directory was removed (hot-unplug), the state switches are
// skipped without error, and the backend is still waited for.
func (f *Frontend) Disconnect(ctx context.Context, wait time.Duration) error {
	var errs []error
	if err := f.SwitchState(ctx, Closing); err != nil && !errors.Is(err, wire.ErrNotExist) {
		errs = append(errs, err)
	}
	wctx, cancel := context.WithTimeout(ctx, wait)
	st, err := f.WaitBackend(wctx, Closing, Closed, Unknown)
	cancel()
	if err != nil {
		errs = append(errs, err)
	}
	if err := f.SwitchState(ctx, Closed); err != nil && !errors.Is(err, wire.ErrNotExist) {
		errs = append(errs, err)
	}
	if err == nil && st == Closing {
		wctx, cancel := context.WithTimeout(ctx, wait)
		_, err := f.WaitBackend(wctx, Closed, Unknown)
		cancel()
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
