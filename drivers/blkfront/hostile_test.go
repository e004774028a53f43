package blkfront

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/gozen-dev/gozen/drivers/blkif"
	"github.com/gozen-dev/gozen/drivers/ring"
	"github.com/gozen-dev/gozen/evtchn"
	"github.com/gozen-dev/gozen/gnttab"
	"github.com/gozen-dev/gozen/xenbus/device"
)

// hostile is a backend played by the test: it runs an honest handshake,
// then answers requests as told.
type hostile struct {
	r    *rig
	b    *device.Backend
	m    *gnttab.Mapping
	back *ring.Back
	port evtchn.Port
}

func newHostile(r *rig) *hostile {
	r.t.Helper()
	h := &hostile{r: r}
	b, err := device.OpenBackend(r.ctx, r.dom0, "vbd", guestDom, devID)
	if err != nil {
		r.t.Fatal(err)
	}
	h.b = b
	go func() {
		ctx := r.ctx
		if err := b.Publish(ctx, []device.KV{{Key: "feature-flush-cache", Value: "1"}}, device.InitWait); err != nil {
			r.t.Error(err)
			return
		}
		if _, err := b.WaitFrontend(ctx, device.Initialised); err != nil {
			r.t.Error(err)
			return
		}
		ref, _ := b.ReadFrontendUint(ctx, "ring-ref", 32)
		port, _ := b.ReadFrontendUint(ctx, "event-channel", 32)
		if h.m, err = r.bMem.Map(guestDom, []gnttab.Ref{gnttab.Ref(ref)}, true); err != nil {
			r.t.Error(err)
			return
		}
		h.back, _ = ring.NewBack(h.m.Buf, blkif.Layout)
		if h.port, err = r.bEv.BindInterdomain(guestDom, evtchn.Port(port)); err != nil {
			r.t.Error(err)
			return
		}
		b.Publish(ctx, []device.KV{{Key: "sectors", Value: "16384"}, {Key: "sector-size", Value: "512"}}, device.Connected)
	}()
	return h
}

// take waits for the next request.
func (h *hostile) take() blkif.Request {
	h.r.t.Helper()
	b := make([]byte, blkif.RequestSize)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		ok, err := h.back.TakeRequest(b)
		if err != nil {
			h.r.t.Fatal(err)
		}
		if ok {
			req, err := blkif.DecodeRequest(b)
			if err != nil {
				h.r.t.Fatal(err)
			}
			return req
		}
		time.Sleep(time.Millisecond)
	}
	h.r.t.Fatal("no request")
	return blkif.Request{}
}

func (h *hostile) answer(rs ...blkif.Response) {
	h.r.t.Helper()
	b := make([]byte, blkif.ResponseSize)
	for _, r := range rs {
		r.Encode(b)
		if err := h.back.PutResponse(b); err != nil {
			h.r.t.Fatal(err)
		}
	}
	h.back.PushResponses()
	h.r.bEv.Notify(h.port)
}

// close unmaps and closes, then runs both close handshakes.
func (h *hostile) close(d *Disk, f *device.Frontend) {
	r := h.r
	r.t.Helper()
	r.bMem.Unmap(h.m)
	r.bEv.Close(h.port)
	errc := make(chan error, 1)
	go func() { errc <- h.b.Disconnect(r.ctx, 5*time.Second) }()
	if err := f.Disconnect(r.ctx, 5*time.Second); err != nil {
		r.t.Error(err)
	}
	<-errc
	if err := d.Close(); err != nil {
		r.t.Errorf("close: %v", err)
	}
	if s := r.ev.Stats(); s.Ports != 0 {
		r.t.Errorf("leftover: %d ports", s.Ports)
	}
	if s := r.gn.Stats().String(); s != "" {
		r.t.Errorf("leftover: %s", s)
	}
}

func TestHostileBackend(t *testing.T) {
	for _, tc := range []struct {
		name  string
		reqs  int // reads in flight
		play  func(h *hostile, reqs []blkif.Request)
		want  error // what the reads fail with
		fatal bool  // the device is dead afterwards
	}{
		{"unknown id", 1, func(h *hostile, q []blkif.Request) {
			h.answer(blkif.Response{ID: q[0].ID + 12345, Op: blkif.OpRead})
		}, ErrProtocol, true},
		{"stale generation", 1, func(h *hostile, q []blkif.Request) {
			h.answer(blkif.Response{ID: q[0].ID + 1<<32, Op: blkif.OpRead})
		}, ErrProtocol, true},
		{"duplicate", 2, func(h *hostile, q []blkif.Request) {
			h.answer(blkif.Response{ID: q[0].ID, Op: blkif.OpRead}, blkif.Response{ID: q[0].ID, Op: blkif.OpRead})
		}, ErrProtocol, true},
		{"wrong op", 1, func(h *hostile, q []blkif.Request) {
			h.answer(blkif.Response{ID: q[0].ID, Op: blkif.OpWrite})
		}, ErrProtocol, true},
		{"bad status", 1, func(h *hostile, q []blkif.Request) {
			h.answer(blkif.Response{ID: q[0].ID, Op: blkif.OpRead, Status: 7})
		}, ErrProtocol, true},
		{"status error", 1, func(h *hostile, q []blkif.Request) {
			h.answer(blkif.Response{ID: q[0].ID, Op: blkif.OpRead, Status: blkif.StatusError})
		}, ErrIO, false},
		{"eopnotsupp", 1, func(h *hostile, q []blkif.Request) {
			h.answer(blkif.Response{ID: q[0].ID, Op: blkif.OpRead, Status: blkif.StatusNotSupported})
		}, ErrNotSupported, false},
		{"producer overflow", 1, func(h *hostile, q []blkif.Request) {
			atomic.StoreUint32((*uint32)(unsafe.Pointer(&h.m.Buf[ring.OffRspProd])), 100)
			h.r.bEv.Notify(h.port)
		}, ring.ErrCorrupt, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newDomains(t)
			h := newHostile(r)
			d, f := r.connect(Config{})
			done := make(chan error, tc.reqs)
			for range tc.reqs {
				go func() {
					ctx, cancel := context.WithTimeout(r.ctx, 10*time.Second)
					defer cancel()
					_, err := d.ReadAtContext(ctx, make([]byte, 4096), 0)
					done <- err
				}()
			}
			reqs := make([]blkif.Request, tc.reqs)
			for i := range reqs {
				reqs[i] = h.take()
			}
			tc.play(h, reqs)
			// Each read fails with the error, but a read answered properly
			// before the bad response (the duplicate's first).
			failed := 0
			for range tc.reqs {
				switch err := <-done; {
				case errors.Is(err, tc.want):
					failed++
				case err != nil:
					t.Errorf("read: %v, want %v", err, tc.want)
				}
			}
			if failed == 0 {
				t.Errorf("no read failed with %v", tc.want)
			}
			if err := d.Err(); tc.fatal != (err != nil) || (tc.fatal && !errors.Is(err, ErrProtocol)) {
				t.Errorf("device error %v", err)
			}
			if tc.fatal {
				if _, err := d.ReadAt(make([]byte, 512), 0); !errors.Is(err, ErrProtocol) {
					t.Errorf("later read: %v", err)
				}
			}
			h.close(d, f)
		})
	}
}
