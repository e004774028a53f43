//go:build !tamago

// Package devpair sets up the two Linux processes of a split device with
// no Xen, for the commands netpair and blkpair: a backend process that
// plays dom0 (it also runs the xenstore and acts as the toolstack) and a
// frontend process that plays the guest, domain 1.
//
// Both share a rendezvous directory holding:
//
//	evtchn.<id>.sock    each domain's event channels (evtchn/evunix)
//	gnttab.<id>.mem     each domain's grant file (gnttab/gntunix)
//	xenstore.1.sock     the store, served to domain 1 by the backend
//	                    (xenbus/memstore over the xenstore wire protocol)
//
// The backend ([OpenBack]) creates the store and the device directories
// (as the toolstack does), then Accepts the guest's store connection: the
// guest ([OpenFront]) dials xenstore.1.sock with xenbus.DialUnix and runs
// the real frontend code on it. Each side learns that the other died
// through the store: the backend when the guest's store connection ends
// before its device was Closed ([Back.GuestGone]), the guest when its
// store connection breaks or the backend leaves Connected
// ([Front.WatchBackend]). Close releases a side's files, those a dead
// peer left behind, and the directory once empty: whichever side leaves
// last removes it.
package devpair

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	sys "golang.org/x/sys/unix"

	"github.com/gozen-dev/gozen/domid"
	"github.com/gozen-dev/gozen/evtchn/evunix"
	"github.com/gozen-dev/gozen/gnttab"
	"github.com/gozen-dev/gozen/gnttab/gntunix"
	"github.com/gozen-dev/gozen/xenbus"
	"github.com/gozen-dev/gozen/xenbus/device"
	"github.com/gozen-dev/gozen/xenbus/memstore"
)

// The two domains.
const (
	// BackDom is the backend's domain (dom0).
	BackDom domid.ID = 0
	// FrontDom is the guest's domain.
	FrontDom domid.ID = 1
)

// StorePath returns the socket on which the backend serves the guest's
// xenstore connection.
func StorePath(dir string) string { return filepath.Join(dir, "xenstore.1.sock") }

// grantPages is each domain's grant-table size: enough for the pools of
// a netfront of four queues (two 256-slot rings each) or a blkfront's
// default 1024 pages in flight with rings of 16 pages.
const grantPages = 4096

// domain is what both sides hold: the rendezvous directory and the
// domain's event channels and grants.
type domain struct {
	dir      string
	self     domid.ID
	peer     domid.ID
	events   *evunix.Domain
	grants   *gntunix.Domain
	peerGone atomic.Bool // the peer went away without closing
}

func openDomain(dir string, self, peer domid.ID) (*domain, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("devpair: %w", err)
	}
	if err := os.MkdirAll(abs, 0o700); err != nil {
		return nil, fmt.Errorf("devpair: %w", err)
	}
	d := &domain{dir: abs, self: self, peer: peer}
	if d.events, err = evunix.Open(abs, self); err != nil {
		return nil, fmt.Errorf("devpair: %w", err)
	}
	if d.grants, err = gntunix.Open(abs, self, grantPages); err != nil {
		d.events.Shutdown()
		return nil, fmt.Errorf("devpair: %w", err)
	}
	return d, nil
}

// Leftovers describes the grants, mappings and ports still held, or
// returns "none".
func (d *domain) leftovers() string {
	var s []string
	if g := d.grants.Stats().String(); g != "" {
		s = append(s, g)
	}
	if n := d.events.Stats().Ports; n != 0 {
		s = append(s, fmt.Sprintf("%d event-channel ports", n))
	}
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}

// sweepWait bounds how long shutdown waits for a peer that went away to
// finish dying: a killed process's files are released one by one as the
// kernel tears it down, and the store connection may close first.
const sweepWait = 2 * time.Second

// shutdown releases the domain's files, then those a dead peer left
// (extra are more of its sockets), then the directory if nothing else is
// in it.
func (d *domain) shutdown(extra ...string) error {
	err := errors.Join(d.events.Shutdown(), d.grants.Shutdown())
	sockets := append([]string{evunix.SocketPath(d.dir, d.peer)}, extra...)
	grants := gntunix.GrantPath(d.dir, d.peer)
	deadline := time.Now().Add(sweepWait)
	for {
		left := 0
		for _, p := range sockets {
			if !removeStaleSocket(p) {
				left++
			}
		}
		if !removeStaleGrants(grants) {
			left++
		}
		if left == 0 || !d.peerGone.Load() || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	os.Remove(d.dir) // fails, harmlessly, while the peer's files remain
	return err
}

// removeStaleSocket removes the socket at path if no process listens on
// it any more; it reports whether path is gone.
func removeStaleSocket(path string) bool {
	c, err := net.Dial("unix", path)
	switch {
	case err == nil:
		c.Close()
		return false
	case errors.Is(err, sys.ECONNREFUSED):
		return os.Remove(path) == nil
	}
	return errors.Is(err, sys.ENOENT)
}

// removeStaleGrants removes the grant file at path if its owner's lock
// is gone (its process died without removing it); it reports whether
// path is gone.
func removeStaleGrants(path string) bool {
	f, err := os.Open(path)
	if err != nil {
		return errors.Is(err, os.ErrNotExist)
	}
	defer f.Close()
	if sys.Flock(int(f.Fd()), sys.LOCK_EX|sys.LOCK_NB) != nil {
		return false
	}
	return os.Remove(path) == nil
}

// Back is the backend process: dom0, the store and the toolstack.
type Back struct {
	*domain
	// Store is the xenstore, served to the guest on StorePath.
	Store *memstore.Store
	// Client is dom0's own connection to Store.
	Client *xenbus.Client
	ln     *memstore.Listener
}

// OpenBack creates the backend's side in dir (created if needed): dom0's
// event channels and grants, the store, dom0's client and the guest's
// store socket.
func OpenBack(dir string) (*Back, error) {
	d, err := openDomain(dir, BackDom, FrontDom)
	if err != nil {
		return nil, err
	}
	b := &Back{domain: d, Store: memstore.New()}
	if b.Client, err = b.Store.Connect(BackDom); err == nil {
		b.ln, err = b.Store.ListenUnix(StorePath(d.dir), FrontDom)
	}
	if err != nil {
		b.Store.Close()
		d.shutdown()
		return nil, fmt.Errorf("devpair: %w", err)
	}
	return b, nil
}

// Dir returns the rendezvous directory.
func (b *Back) Dir() string { return b.dir }

// Events returns dom0's event-channel service.
func (b *Back) Events() *evunix.Domain { return b.events }

// Grants returns dom0's grant service.
func (b *Back) Grants() *gntunix.Domain { return b.grants }

// AddDevice creates the device's frontend and backend directories, as
// the toolstack does, and opens the backend's end.
func (b *Back) AddDevice(ctx context.Context, class, id string, frontKeys map[string]string) (*device.Backend, error) {
	_, _, err := b.Store.AddDevice(memstore.Device{Frontend: FrontDom, Backend: BackDom, Class: class, ID: id, FrontendKeys: frontKeys})
	if err != nil {
		return nil, fmt.Errorf("devpair: %w", err)
	}
	be, err := device.OpenBackend(ctx, b.Client, class, FrontDom, id)
	if err != nil {
		return nil, fmt.Errorf("devpair: %w", err)
	}
	return be, nil
}

// AcceptGuest waits for the guest's store connection.
func (b *Back) AcceptGuest(ctx context.Context) (*memstore.Conn, error) {
	c, err := b.ln.Accept(ctx)
	if err != nil {
		return nil, fmt.Errorf("devpair: waiting for the guest: %w", err)
	}
	return c, nil
}

// ErrPeerGone means the other process went away without the close
// handshake this side started: it was killed or crashed, or (for a
// backend) closed the device first.
var ErrPeerGone = errors.New("devpair: peer gone")

// GuestGone waits until the guest's store connection c ends (or ctx
// ends), then tells how it left: nil if the device be was closed first
// (the close handshake ran), else an error wrapping ErrPeerGone. The
// guest's domain is then destroyed in the store, as the toolstack does.
func (b *Back) GuestGone(ctx context.Context, c *memstore.Conn, be *device.Backend) error {
	select {
	case <-c.Done():
	case <-ctx.Done():
		return fmt.Errorf("devpair: waiting for the guest to leave: %w", ctx.Err())
	}
	var err error
	switch st, serr := be.FrontendState(ctx); {
	case serr != nil:
		err = fmt.Errorf("devpair: guest left; reading its state: %w", serr)
	case st != device.Closed && st != device.Unknown:
		err = fmt.Errorf("%w: the guest's store connection ended with its device %s", ErrPeerGone, st)
		if cerr := c.Err(); cerr != nil {
			err = fmt.Errorf("%w (%w)", err, cerr)
		}
		b.peerGone.Store(true)
	}
	return err
}

// DestroyGuest removes the guest's domain from the store, as the
// toolstack does when a domain is destroyed.
func (b *Back) DestroyGuest() error { return b.Store.RemoveDomain(FrontDom) }

// Leftovers describes the grants, mappings and ports dom0 still holds,
// or returns "none".
func (b *Back) Leftovers() string { return b.leftovers() }

// Close stops the store and releases everything (see the package
// comment).
func (b *Back) Close() error {
	b.ln.Close()
	b.Client.Close()
	b.Store.Close()
	return b.shutdown()
}

// Front is the guest process.
type Front struct {
	*domain
	// Client is the guest's store connection.
	Client *xenbus.Client
}

// OpenFront creates the guest's side in dir and connects to the store
// the backend serves there.
func OpenFront(ctx context.Context, dir string) (*Front, error) {
	d, err := openDomain(dir, FrontDom, BackDom)
	if err != nil {
		return nil, err
	}
	c, err := xenbus.DialUnix(ctx, StorePath(d.dir))
	if err != nil {
		d.shutdown()
		return nil, fmt.Errorf("devpair: connecting to the store: %w", err)
	}
	return &Front{domain: d, Client: c}, nil
}

// Dir returns the rendezvous directory.
func (f *Front) Dir() string { return f.dir }

// Events returns the guest's event-channel service.
func (f *Front) Events() *evunix.Domain { return f.events }

// Grants returns the guest's grant service.
func (f *Front) Grants() *gntunix.Domain { return f.grants }

// WatchBackend returns a channel that yields one error, wrapping
// ErrPeerGone, when the backend of fe leaves Connected (goes Closing,
// Closed or vanishes) or the store connection breaks (the backend
// process, which serves the store, died); nothing is sent if ctx ends
// first.
func (f *Front) WatchBackend(ctx context.Context, fe *device.Frontend) <-chan error {
	ch := make(chan error, 1)
	go func() {
		var st device.State
		err := f.Client.WaitFor(ctx, fe.Backend+"/state", func() (bool, error) {
			var err error
			st, err = fe.BackendState(ctx)
			if err != nil {
				return false, err
			}
			return st == device.Closing || st == device.Closed || st == device.Unknown, nil
		})
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			f.peerGone.Store(true)
			ch <- fmt.Errorf("%w: the store connection broke: %w", ErrPeerGone, err)
		} else {
			ch <- fmt.Errorf("%w: the backend went %s", ErrPeerGone, st)
		}
	}()
	return ch
}

// BlameWait bounds how long Blame waits for the store to say that the
// peer went away.
const BlameWait = time.Second

// WithPeer returns a context cancelled, with the error lost yields as
// its cause, when the peer goes away (see WatchBackend), or when ctx
// ends.
func WithPeer(ctx context.Context, lost <-chan error) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancelCause(ctx)
	go func() {
		select {
		case err := <-lost:
			cancel(err)
		case <-ctx.Done():
		}
	}()
	return ctx, func() { cancel(nil) }
}

// Blame returns err, the failure of an operation under ctx (made by
// WithPeer), wrapped in the reason the peer went away if it did: an
// operation often fails (an event channel refused, a context cancelled)
// just before the store tells that the peer died, so Blame waits for
// that up to BlameWait.
func Blame(ctx context.Context, err error) error {
	if err == nil {
		return nil
	}
	if ctx.Err() == nil {
		t := time.NewTimer(BlameWait)
		select {
		case <-ctx.Done():
		case <-t.C:
		}
		t.Stop()
	}
	if c := context.Cause(ctx); c != nil && errors.Is(c, ErrPeerGone) {
		return fmt.Errorf("%w (%w)", c, err)
	}
	return err
}

// Release runs close, a driver's Close (netfront.NIC.Close,
// blkfront.Disk.Close), which fails with an error wrapping
// gnttab.ErrInUse while the backend maps some of its pages. If the
// backend went away, its process may still be dying, its mappings not
// yet released: close is then tried again until they are (up to a
// bound).
func (f *Front) Release(close func() error) error {
	deadline := time.Now().Add(sweepWait)
	for {
		err := close()
		if !errors.Is(err, gnttab.ErrInUse) || !f.peerGone.Load() || time.Now().After(deadline) {
			return err
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// Leftovers describes the grants, mappings and ports the guest still
// holds, or returns "none".
func (f *Front) Leftovers() string { return f.leftovers() }

// Close closes the store connection and releases everything (see the
// package comment).
func (f *Front) Close() error {
	f.Client.Close()
	return f.shutdown(StorePath(f.dir))
}
