package blkfront

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/gozen-dev/gozen/domid"
	"github.com/gozen-dev/gozen/drivers/blkback"
	"github.com/gozen-dev/gozen/evtchn/evheap"
	"github.com/gozen-dev/gozen/gnttab/gntheap"
	"github.com/gozen-dev/gozen/xenbus"
	"github.com/gozen-dev/gozen/xenbus/device"
	"github.com/gozen-dev/gozen/xenbus/memstore"
)

const (
	backDom  domid.ID = 0
	guestDom domid.ID = 5
	devID             = "51712"
)

// rig is a guest and a dom0 in one process: in-heap event channels and
// grants, an in-memory xenstore, a blkback serving a temporary file.
type rig struct {
	t      testing.TB
	ctx    context.Context
	ev     *evheap.Hub
	gn     *gntheap.Hub
	s      *memstore.Store
	dom0   *xenbus.Client
	guest  *xenbus.Client
	gEv    *evheap.Domain
	gMem   *gntheap.Domain
	bEv    *evheap.Domain
	bMem   *gntheap.Domain
	file   *os.File
	srv    *blkback.Server
	stop   context.CancelFunc
	served chan error
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// newRig creates the domains and the device, and starts the backend with
// bc (Events, Memory and Disk are filled in; Size defaults to 8 MiB).
func newRig(t testing.TB, bc blkback.Config) *rig {
	t.Helper()
	r := newDomains(t)
	var err error
	if bc.Size == 0 {
		bc.Size = 8 << 20
	}
	r.file, err = os.Create(filepath.Join(t.TempDir(), "disk"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.file.Close() })
	if err := r.file.Truncate(bc.Size); err != nil {
		t.Fatal(err)
	}
	if bc.Disk == nil {
		bc.Disk = r.file
	}
	bc.Events, bc.Memory = r.bEv, r.bMem
	if r.srv, err = blkback.NewServer(bc); err != nil {
		t.Fatal(err)
	}
	r.startBackend()
	return r
}

// newDomains creates the domains, the store and the device.
func newDomains(t testing.TB) *rig {
	t.Helper()
	r := &rig{t: t, ctx: ctxT(t), ev: evheap.NewHub(), gn: gntheap.NewHub(), s: memstore.New()}
	t.Cleanup(func() { r.s.Close() })
	var err error
	must := func(e error) {
		t.Helper()
		if e != nil {
			t.Fatal(e)
		}
	}
	r.gEv, err = r.ev.Domain(guestDom)
	must(err)
	r.bEv, err = r.ev.Domain(backDom)
	must(err)
	r.gMem, err = r.gn.Domain(guestDom)
	must(err)
	r.bMem, err = r.gn.Domain(backDom)
	must(err)
	_, _, err = r.s.AddDevice(memstore.Device{Frontend: guestDom, Backend: backDom, Class: "vbd", ID: devID})
	must(err)
	r.dom0, err = r.s.Connect(backDom)
	must(err)
	r.guest, err = r.s.Connect(guestDom)
	must(err)
	t.Cleanup(func() { r.guest.Close(); r.dom0.Close() })
	return r
}

func (r *rig) startBackend() {
	r.t.Helper()
	b, err := device.OpenBackend(r.ctx, r.dom0, "vbd", guestDom, devID)
	if err != nil {
		r.t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(r.ctx)
	r.stop = cancel
	r.served = make(chan error, 1)
	go func() { r.served <- r.srv.Serve(ctx, b) }()
}

func (r *rig) stopBackend() {
	r.t.Helper()
	r.stop()
	if err := <-r.served; !errors.Is(err, context.Canceled) {
		r.t.Errorf("backend: %v", err)
	}
}

func (r *rig) cfg(fc Config) Config {
	fc.Events, fc.Memory = r.gEv, r.gMem
	return fc
}

// connect opens the device and connects a disk with fc.
func (r *rig) connect(fc Config) (*Disk, *device.Frontend) {
	r.t.Helper()
	f, err := device.Open(r.ctx, r.guest, "vbd", devID)
	if err != nil {
		r.t.Fatal(err)
	}
	d, err := Connect(r.ctx, r.cfg(fc), f)
	if err != nil {
		r.t.Fatal(err)
	}
	return d, f
}

// close runs the close handshake and closes the disk.
func (r *rig) close(d *Disk, f *device.Frontend) {
	r.t.Helper()
	if err := f.Disconnect(r.ctx, 5*time.Second); err != nil {
		r.t.Errorf("disconnect: %v", err)
	}
	if err := d.Close(); err != nil {
		r.t.Errorf("close: %v", err)
	}
}

// leftovers stops the backend and fails the test if a port, grant or
// mapping is still held.
func (r *rig) leftovers() {
	r.t.Helper()
	r.stopBackend()
	if s := r.ev.Stats(); s.Ports != 0 {
		r.t.Errorf("leftover: %d event-channel ports", s.Ports)
	}
	if s := r.gn.Stats().String(); s != "" {
		r.t.Errorf("leftover: %s", s)
	}
}

// gate is a Storage that can hold every access until released, to keep
// requests in flight.
type gate struct {
	blkback.Storage
	mu      sync.Mutex
	held    chan struct{} // nil: pass
	entered chan struct{}
}

func (g *gate) wait() {
	g.mu.Lock()
	h := g.held
	g.mu.Unlock()
	if h != nil {
		select {
		case g.entered <- struct{}{}:
		default:
		}
		<-h
	}
}

func (g *gate) hold() {
	g.mu.Lock()
	g.held = make(chan struct{})
	g.entered = make(chan struct{}, 1)
	g.mu.Unlock()
}

func (g *gate) release() {
	g.mu.Lock()
	if g.held != nil {
		close(g.held)
		g.held = nil
	}
	g.mu.Unlock()
}

func (g *gate) ReadAt(p []byte, off int64) (int, error)  { g.wait(); return g.Storage.ReadAt(p, off) }
func (g *gate) WriteAt(p []byte, off int64) (int, error) { g.wait(); return g.Storage.WriteAt(p, off) }
