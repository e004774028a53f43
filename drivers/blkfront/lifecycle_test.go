package blkfront

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/gozen-dev/gozen/drivers/blkback"
	"github.com/gozen-dev/gozen/xenbus/device"
)

func TestBus(t *testing.T) {
	r := newRig(t, blkback.Config{Persistent: true, FlushCache: true})
	bus := device.NewBus(r.guest)
	var mu sync.Mutex
	var reported []error
	bus.OnError = func(e *device.DeviceError) { mu.Lock(); reported = append(reported, e); mu.Unlock() }
	if err := bus.Register(&Driver{Config: r.cfg(Config{Persistent: true})}); err != nil {
		t.Fatal(err)
	}
	if err := bus.Start(r.ctx); err != nil {
		t.Fatal(err)
	}
	devs := bus.Devices()
	if len(devs) != 1 || devs[0].Name() != "vbd/"+devID {
		t.Fatalf("devices %v", devs)
	}
	d, ok := devs[0].(*device.Bound).Conn().(*Disk)
	if !ok {
		t.Fatalf("conn %T", devs[0].(*device.Bound).Conn())
	}
	want := pattern(100<<10, 9)
	if _, err := d.WriteAt(want, 8192); err != nil {
		t.Fatal(err)
	}
	if err := d.Flush(r.ctx); err != nil {
		t.Fatal(err)
	}
	got := make([]byte, len(want))
	if _, err := d.ReadAt(got, 8192); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("read back: %v", err)
	}
	if err := devs[0].Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := d.ReadAt(got, 0); !errors.Is(err, ErrClosed) {
		t.Errorf("read after close: %v", err)
	}
	bus.Close()
	mu.Lock()
	if len(reported) != 0 {
		t.Errorf("reported %v", reported)
	}
	mu.Unlock()
	r.leftovers()
}

func TestSuspendCancelled(t *testing.T) {
	g := &gate{}
	r := newRig(t, blkback.Config{Disk: g})
	g.Storage = r.file
	d, f := r.connect(Config{})
	g.hold()
	want := pattern(64<<10, 4)
	done := make(chan error, 1)
	go func() { _, err := d.WriteAt(want, 0); done <- err }()
	<-g.entered
	sctx, cancel := context.WithTimeout(r.ctx, 20*time.Millisecond)
	if err := d.Suspend(sctx); err != nil {
		t.Fatal(err)
	}
	cancel()
	// Suspended: a new request waits.
	got := make([]byte, len(want))
	rdone := make(chan error, 1)
	go func() { _, err := d.ReadAt(got, 0); rdone <- err }()
	g.release()
	if err := <-done; err != nil {
		t.Fatalf("write in flight across the suspend: %v", err)
	}
	select {
	case err := <-rdone:
		t.Fatalf("read issued while suspended: %v", err)
	case <-time.After(20 * time.Millisecond):
	}
	if err := d.Resume(true); err != nil {
		t.Fatal(err)
	}
	if err := <-rdone; err != nil || !bytes.Equal(got, want) {
		t.Fatalf("read after resume: %v", err)
	}
	r.close(d, f)
	r.leftovers()
}

// TestResumeNewDomain suspends with requests in flight, drops the
// frontend's port as a resume into a new domain does, and reconnects:
// the requests are issued again on the new ring.
func TestResumeNewDomain(t *testing.T) {
	for _, persistent := range []bool{false, true} {
		t.Run(map[bool]string{false: "copy", true: "persistent"}[persistent], func(t *testing.T) {
			g := &gate{}
			r := newRig(t, blkback.Config{Disk: g, Persistent: true, MaxIndirectSegments: 32})
			g.Storage = r.file
			d, _ := r.connect(Config{Persistent: persistent, MaxIndirectSegments: 32})
			g.hold()
			want := pattern(300<<10, 5) // several requests
			done := make(chan error, 2)
			go func() { _, err := d.WriteAt(want, 4096); done <- err }()
			<-g.entered
			sctx, cancel := context.WithTimeout(r.ctx, 10*time.Millisecond)
			if err := d.Suspend(sctx); err != nil {
				t.Fatal(err)
			}
			cancel()
			// The new domain has none of the old ports.
			d.mu.Lock()
			port := d.qs[0].port
			d.mu.Unlock()
			if err := r.gEv.Close(port); err != nil {
				t.Fatal(err)
			}
			if err := d.Resume(false); err != nil {
				t.Fatal(err)
			}
			g.release()
			f2, err := device.Open(r.ctx, r.guest, "vbd", devID)
			if err != nil {
				t.Fatal(err)
			}
			if err := f2.SwitchState(r.ctx, device.Initialising); err != nil {
				t.Fatal(err)
			}
			if err := d.Reconnect(r.ctx, f2); err != nil {
				t.Fatal(err)
			}
			if err := <-done; err != nil {
				t.Fatalf("write re-issued: %v", err)
			}
			got := make([]byte, len(want))
			if _, err := d.ReadAt(got, 4096); err != nil || !bytes.Equal(got, want) {
				t.Fatalf("read back: %v", err)
			}
			if n := r.srv.Stats().Connections; n != 2 {
				t.Errorf("%d connections", n)
			}
			r.close(d, f2)
			r.leftovers()
		})
	}
}

func TestCloseFailsWaiting(t *testing.T) {
	g := &gate{}
	r := newRig(t, blkback.Config{Disk: g})
	g.Storage = r.file
	d, f := r.connect(Config{})
	g.hold()
	done := make(chan error, 1)
	go func() { _, err := d.ReadAt(make([]byte, 4096), 0); done <- err }()
	<-g.entered
	// Close without the handshake: the waiting read fails.
	errc := make(chan error, 1)
	go func() { errc <- d.Close() }()
	if err := <-done; !errors.Is(err, ErrClosed) {
		t.Errorf("read: %v", err)
	}
	<-errc // the backend still maps the ring: revoking may fail here
	g.release()
	if err := f.Disconnect(r.ctx, 5*time.Second); err != nil {
		t.Error(err)
	}
	if err := d.Close(); err != nil {
		t.Errorf("second close: %v", err)
	}
	r.leftovers()
}

func TestContextCancel(t *testing.T) {
	g := &gate{}
	r := newRig(t, blkback.Config{Disk: g})
	g.Storage = r.file
	d, f := r.connect(Config{})
	g.hold()
	ctx, cancel := context.WithCancel(r.ctx)
	done := make(chan error, 1)
	buf := make([]byte, 8192)
	go func() { _, err := d.ReadAtContext(ctx, buf, 0); done <- err }()
	<-g.entered
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Errorf("read: %v", err)
	}
	g.release()
	// The abandoned request completes without touching buf; the disk works.
	want := pattern(4096, 8)
	if _, err := d.WriteAt(want, 0); err != nil {
		t.Fatal(err)
	}
	r.close(d, f)
	r.leftovers()
}
