package blkfront

import (
	"context"
	"errors"
	"strconv"
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
	r      *rig
	b      *device.Backend
	ready  chan struct{} // closed once the rings are mapped
	inWait chan struct{} // closed once the backend published InitWait
	m      []*gnttab.Mapping
	back   []*ring.Back
	port   []evtchn.Port
}

// newHostile starts the backend; extra are published with its features
// (e.g. multi-queue-max-queues).
func newHostile(r *rig, extra ...device.KV) *hostile {
	r.t.Helper()
	h := &hostile{r: r, ready: make(chan struct{}), inWait: make(chan struct{})}
	b, err := device.OpenBackend(r.ctx, r.dom0, "vbd", guestDom, devID)
	if err != nil {
		r.t.Fatal(err)
	}
	h.b = b
	go func() {
		ctx := r.ctx
		err := b.Publish(ctx, append([]device.KV{{Key: "feature-flush-cache", Value: "1"}}, extra...), device.InitWait)
		close(h.inWait)
		if err != nil {
			r.t.Error(err)
			return
		}
		if _, err := b.WaitFrontend(ctx, device.Initialised); err != nil {
			return // the frontend refused the offer
		}
		nq, err := b.ReadFrontendUint(ctx, "multi-queue-num-queues", 32)
		if err != nil {
			nq = 1
		}
		for q := range nq {
			dir := ""
			if nq > 1 {
				dir = "queue-" + strconv.Itoa(int(q)) + "/"
			}
			ref, _ := b.ReadFrontendUint(ctx, dir+"ring-ref", 32)
			port, _ := b.ReadFrontendUint(ctx, dir+"event-channel", 32)
			m, err := r.bMem.Map(guestDom, []gnttab.Ref{gnttab.Ref(ref)}, true)
			if err != nil {
				r.t.Error(err)
				return
			}
			back, _ := ring.NewBack(m.Buf, blkif.Layout)
			p, err := r.bEv.BindInterdomain(guestDom, evtchn.Port(port))
			if err != nil {
				r.t.Error(err)
				return
			}
			h.m, h.back, h.port = append(h.m, m), append(h.back, back), append(h.port, p)
		}
		close(h.ready)
		b.Publish(ctx, []device.KV{{Key: "sectors", Value: "16384"}, {Key: "sector-size", Value: "512"}}, device.Connected)
	}()
	return h
}

// take waits for the next request on queue 0.
func (h *hostile) take() blkif.Request { return h.takeOn(0) }

// takeOn waits for the next request on queue q.
func (h *hostile) takeOn(q int) blkif.Request {
	h.r.t.Helper()
	<-h.ready
	b := make([]byte, blkif.RequestSize)
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		ok, err := h.back[q].TakeRequest(b)
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

func (h *hostile) answer(rs ...blkif.Response) { h.answerOn(0, rs...) }

// answerOn puts responses on queue q's ring.
func (h *hostile) answerOn(q int, rs ...blkif.Response) {
	h.r.t.Helper()
	b := make([]byte, blkif.ResponseSize)
	for _, r := range rs {
		r.Encode(b)
		if err := h.back[q].PutResponse(b); err != nil {
			h.r.t.Fatal(err)
		}
	}
	h.back[q].PushResponses()
	h.r.bEv.Notify(h.port[q])
}

// close unmaps and closes, then runs both close handshakes.
func (h *hostile) close(d *Disk, f *device.Frontend) {
	r := h.r
	r.t.Helper()
	for i := range h.m {
		r.bMem.Unmap(h.m[i])
		r.bEv.Close(h.port[i])
	}
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
			atomic.StoreUint32((*uint32)(unsafe.Pointer(&h.m[0].Buf[ring.OffRspProd])), 100)
			h.r.bEv.Notify(h.port[0])
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

// TestHostileQueues offers multi-queue-max-queues values a hostile or
// broken backend could write, and answers on the wrong queue.
func TestHostileQueues(t *testing.T) {
	for _, tc := range []struct {
		name   string
		offer  string
		want   int
		queues int   // expected queues
		err    error // expected Connect error
	}{
		{"zero", "0", 4, 1, nil},
		{"huge", "4294967295", 4, 4, nil},
		{"blank", " 2 ", 4, 2, nil},
		{"too big for 32 bits", "99999999999", 4, 0, ErrProtocol},
		{"negative", "-1", 4, 0, ErrProtocol},
		{"not a number", "two", 4, 0, ErrProtocol},
		{"ignored when one is wanted", "4", 1, 1, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newDomains(t)
			h := newHostile(r, device.KV{Key: "multi-queue-max-queues", Value: tc.offer})
			f, err := device.Open(r.ctx, r.guest, "vbd", devID)
			if err != nil {
				t.Fatal(err)
			}
			d, err := Connect(r.ctx, r.cfg(Config{MaxQueues: tc.want}), f)
			if tc.err != nil {
				<-h.inWait // before the store goes away
				if !errors.Is(err, tc.err) || d != nil {
					t.Fatalf("connect: %v, %v; want %v", d, err, tc.err)
				}
				if s := r.ev.Stats(); s.Ports != 0 {
					t.Errorf("leftover: %d ports", s.Ports)
				}
				if s := r.gn.Stats().String(); s != "" {
					t.Errorf("leftover: %s", s)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if q := d.Info().Queues; q != tc.queues {
				t.Fatalf("%d queues", q)
			}
			// A read on the last queue answered right.
			done := make(chan error, 1)
			go func() { _, err := d.ReadAt(make([]byte, 4096), 0); done <- err }()
			req := h.takeOn(0)
			h.answerOn(0, blkif.Response{ID: req.ID, Op: blkif.OpRead})
			if err := <-done; err != nil {
				t.Fatal(err)
			}
			h.close(d, f)
		})
	}
	// A response on another queue than its request's is unknown there.
	t.Run("wrong queue", func(t *testing.T) {
		r := newDomains(t)
		h := newHostile(r, device.KV{Key: "multi-queue-max-queues", Value: "2"})
		d, f := r.connect(Config{MaxQueues: 2})
		// Three reads: two on queue 0, one on queue 1 (ids 0 and 1 there,
		// 0 here).
		done := make(chan error, 3)
		for range 3 {
			go func() { _, err := d.ReadAt(make([]byte, 4096), 0); done <- err }()
		}
		q0 := []blkif.Request{h.takeOn(0), h.takeOn(0)}
		q1 := h.takeOn(1)
		id := q0[0].ID
		if id == q1.ID {
			id = q0[1].ID
		}
		h.answerOn(1, blkif.Response{ID: id, Op: blkif.OpRead})
		for range 3 {
			if err := <-done; !errors.Is(err, ErrProtocol) {
				t.Errorf("read: %v", err)
			}
		}
		if err := d.Err(); !errors.Is(err, ErrProtocol) {
			t.Errorf("device error %v", err)
		}
		h.close(d, f)
	})
}
