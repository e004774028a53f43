package device

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/gozen-dev/gozen/domid"
	"github.com/gozen-dev/gozen/xenbus/wire"
)

// ErrFrontendClosed is returned by WaitFrontend when the frontend went to
// Closed (or its state node vanished after having existed) while another
// state was awaited.
var ErrFrontendClosed = errors.New("xenbus device: frontend closed")

// Backend is the backend's end of one device, the mirror of Frontend for
// a driver domain serving a guest (netback, blkback): the directory
// backend/<class>/<frontid>/<id> in the backend domain's home, which the
// toolstack created with the keys "frontend" and "frontend-id".
//
// The backend's side of the handshake of io/xenbus.h, as Linux's
// backends run it: publish the features (Publish) and go InitWait, wait
// for the frontend to be Initialised or Connected (WaitFrontend), read its
// ring references and event channels (ReadFrontend, ReadFrontendUint),
// map and bind them, go Connected. When the frontend goes Closing, unmap
// and go Closing then Closed (Disconnect); a frontend going back to
// Initialising after Closed wants to reconnect: go InitWait again.
type Backend struct {
	s Store
	// Class is the device class, e.g. "vif".
	Class string
	// FrontID is the frontend's domain, the <frontid> element of Path.
	FrontID domid.ID
	// ID is the device id within the class, e.g. "0".
	ID string
	// Path is our absolute backend directory,
	// /local/domain/<us>/backend/<class>/<frontid>/<id>.
	Path string
	// Frontend is the absolute frontend directory read from our
	// "frontend" key.
	Frontend string
	// FrontendID is the frontend's domain read from our "frontend-id"
	// key; OpenBackend checks that it equals FrontID.
	FrontendID domid.ID
}

// BackendDevice names one device in a backend domain's
// backend/<class> directory, as listed by EnumerateBackend.
type BackendDevice struct {
	// FrontID is the frontend's domain.
	FrontID domid.ID
	// ID is the device id.
	ID string
}

// EnumerateBackend lists the devices of a class under backend/<class> in
// the home of s: every <frontid>/<id> pair. No such directory means no
// devices; entries whose <frontid> is not a domain id are skipped.
func EnumerateBackend(ctx context.Context, s Store, class string) ([]BackendDevice, error) {
	dir := s.Home() + "/backend/" + class
	fronts, err := s.Directory(ctx, dir)
	if gone(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("xenbus device: enumerating backend %s: %w", class, err)
	}
	var out []BackendDevice
	for _, fs := range fronts {
		d, err := strconv.ParseUint(fs, 10, 16)
		if err != nil || domid.ID(d) == domid.Self {
			continue
		}
		ids, err := s.Directory(ctx, dir+"/"+fs)
		if gone(err) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("xenbus device: enumerating backend %s/%s: %w", class, fs, err)
		}
		for _, id := range ids {
			out = append(out, BackendDevice{FrontID: domid.ID(d), ID: id})
		}
	}
	return out, nil
}

// OpenBackend opens the backend directory backend/<class>/<front>/<id> in
// the home of s and reads the frontend's path and domain from it. The
// "frontend" key must be a valid absolute path and "frontend-id" must
// equal front; otherwise the error wraps wire.ErrMalformed.
func OpenBackend(ctx context.Context, s Store, class string, front domid.ID, id string) (*Backend, error) {
	b := &Backend{s: s, Class: class, FrontID: front, ID: id}
	if class == "" || id == "" || strings.Contains(class, "/") || strings.Contains(id, "/") || front == domid.Self {
		return nil, fmt.Errorf("xenbus device backend %q/%d/%q: %w: class and id must be single path elements", clip(class), front, clip(id), wire.ErrInvalid)
	}
	b.Path = s.Home() + "/backend/" + class + "/" + strconv.FormatUint(uint64(front), 10) + "/" + id
	if err := wire.CheckPath(b.Path, false); err != nil {
		return nil, fmt.Errorf("%s: %w", b.prefix(), err)
	}
	fe, err := s.ReadString(ctx, b.Path+"/frontend")
	if err != nil {
		return nil, fmt.Errorf("%s: reading frontend: %w", b.prefix(), err)
	}
	if err := wire.CheckPath(fe, false); err != nil || fe == "/" {
		return nil, fmt.Errorf("%s: frontend path %q: %w", b.prefix(), clip(fe), wire.ErrMalformed)
	}
	b.Frontend = fe
	fid, err := s.ReadString(ctx, b.Path+"/frontend-id")
	if err != nil {
		return nil, fmt.Errorf("%s: reading frontend-id: %w", b.prefix(), err)
	}
	d, err := strconv.ParseUint(strings.TrimSpace(fid), 10, 16)
	if err != nil || domid.ID(d) != front {
		return nil, fmt.Errorf("%s: frontend-id %q (directory says %d): %w", b.prefix(), clip(fid), front, wire.ErrMalformed)
	}
	b.FrontendID = domid.ID(d)
	return b, nil
}

func (b *Backend) prefix() string {
	return "xenbus device backend " + b.Name()
}

// Store returns the store the backend talks through.
func (b *Backend) Store() Store { return b.s }

// Name returns "<class>/<frontid>/<id>", e.g. "vif/5/0".
func (b *Backend) Name() string {
	return b.Class + "/" + strconv.FormatUint(uint64(b.FrontID), 10) + "/" + b.ID
}

// Read reads a key of our own backend directory.
func (b *Backend) Read(ctx context.Context, key string) (string, error) {
	v, err := b.s.ReadString(ctx, b.Path+"/"+key)
	if err != nil {
		return "", fmt.Errorf("%s: %w", b.prefix(), err)
	}
	return v, nil
}

// State returns our own state; a missing node is Unknown.
func (b *Backend) State(ctx context.Context) (State, error) {
	s, err := readState(ctx, b.s, b.Path+"/state")
	if err != nil {
		return s, fmt.Errorf("%s: %w", b.prefix(), err)
	}
	return s, nil
}

// SwitchState writes our state, in a transaction that first checks that
// our state node exists: a backend directory the toolstack removed is not
// re-created, and the error wraps wire.ErrNotExist.
func (b *Backend) SwitchState(ctx context.Context, s State) error {
	if err := commit(ctx, b.s, b.Path, nil, s); err != nil {
		return fmt.Errorf("%s: switching to %s: %w", b.prefix(), s, err)
	}
	return nil
}

// FrontendState returns the frontend's state; a missing node is Unknown.
func (b *Backend) FrontendState(ctx context.Context) (State, error) {
	s, err := readState(ctx, b.s, b.Frontend+"/state")
	if err != nil {
		return s, fmt.Errorf("%s: frontend state: %w", b.prefix(), err)
	}
	return s, nil
}

// WaitFrontend waits, through a watch on the frontend's state, until the
// frontend is in one of the wanted states, and returns it. Use a ctx
// deadline as the timeout. If the frontend reaches Closed, or its state
// node vanishes after having existed, while neither is wanted, it returns
// an error wrapping ErrFrontendClosed (want Closed, or Unknown for a
// vanished node, to wait for them instead).
func (b *Backend) WaitFrontend(ctx context.Context, want ...State) (State, error) {
	got, err := waitState(ctx, b.s, b.Frontend+"/state", "frontend", ErrFrontendClosed, want)
	if err != nil {
		return got, fmt.Errorf("%s: waiting for frontend %v (last %s): %w", b.prefix(), want, got, err)
	}
	return got, nil
}

// ReadFrontend reads a key of the frontend directory (e.g. "tx-ring-ref"
// or "queue-0/event-channel"). The value is the frontend's: untrusted.
func (b *Backend) ReadFrontend(ctx context.Context, key string) (string, error) {
	v, err := b.s.ReadString(ctx, b.Frontend+"/"+key)
	if err != nil {
		return "", fmt.Errorf("%s: frontend %s: %w", b.prefix(), key, err)
	}
	return v, nil
}

// ReadFrontendUint reads a key of the frontend directory as a decimal
// number of at most bits bits (32 for a grant reference or a port).
// A value that is not such a number fails with an error wrapping
// wire.ErrMalformed; a missing key with one wrapping wire.ErrNotExist.
func (b *Backend) ReadFrontendUint(ctx context.Context, key string, bits int) (uint64, error) {
	v, err := b.ReadFrontend(ctx, key)
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseUint(strings.TrimSpace(v), 10, bits)
	if err != nil {
		return 0, fmt.Errorf("%s: frontend %s = %q: %w", b.prefix(), key, clip(v), wire.ErrMalformed)
	}
	return n, nil
}

// FrontendFlag reports whether the frontend wrote key (e.g.
// "request-rx-copy" or "feature-sg") with a non-zero value. A missing key
// means false.
func (b *Backend) FrontendFlag(ctx context.Context, key string) (bool, error) {
	v, err := b.s.ReadString(ctx, b.Frontend+"/"+key)
	if errors.Is(err, wire.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("%s: frontend %s: %w", b.prefix(), key, err)
	}
	v = strings.TrimSpace(v)
	return v != "" && v != "0", nil
}

// Publish writes the keys (features such as "feature-sg", relative to our
// backend directory) in one transaction, retried on conflicts, and, if
// next is not Unknown, switches our state to next in the same transaction
// (typically InitWait after writing the features). A missing state node
// (the directory was removed) fails with an error wrapping
// wire.ErrNotExist and writes nothing.
func (b *Backend) Publish(ctx context.Context, kvs []KV, next State) error {
	if err := commit(ctx, b.s, b.Path, kvs, next); err != nil {
		return fmt.Errorf("%s: publishing: %w", b.prefix(), err)
	}
	return nil
}

// Disconnect runs the backend's side of the close handshake, as Linux's
// backends do when the frontend goes Closing or the device is removed:
// our state goes to Closing, then, once the frontend is Closing, Closed
// or gone, to Closed. The wait is bounded by wait (and ctx); a frontend
// that does not answer only makes Disconnect return an error after
// switching to Closed anyway. Unmap the frontend's rings before calling
// it: the frontend revokes its grants once we are Closed.
//
// If our directory was removed, the state switches are skipped without
// error.
func (b *Backend) Disconnect(ctx context.Context, wait time.Duration) error {
	var errs []error
	if err := b.SwitchState(ctx, Closing); err != nil && !errors.Is(err, wire.ErrNotExist) {
		errs = append(errs, err)
	}
	wctx, cancel := context.WithTimeout(ctx, wait)
	_, err := b.WaitFrontend(wctx, Closing, Closed, Unknown, Initialising)
	cancel()
	if err != nil {
		errs = append(errs, err)
	}
	if err := b.SwitchState(ctx, Closed); err != nil && !errors.Is(err, wire.ErrNotExist) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
