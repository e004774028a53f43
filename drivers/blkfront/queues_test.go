package blkfront

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/gozen-dev/gozen/drivers/blkback"
	"github.com/gozen-dev/gozen/xenbus/device"
	"github.com/gozen-dev/gozen/xenbus/wire"
)

// hammer runs workers that write, read back and compare in their own
// regions of the disk, so that requests are in flight on every queue.
func hammer(t *testing.T, d *Disk, workers, rounds int, seed uint64) {
	t.Helper()
	region := d.Size() / int64(workers)
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), seed))
			base := int64(w) * region
			for i := range rounds {
				n := 512 * (1 + rng.IntN(300))
				off := base + 512*rng.Int64N((region-int64(n))/512)
				want := pattern(n, seed<<16|uint64(w*100+i))
				if _, err := d.WriteAt(want, off); err != nil {
					errs <- err
					return
				}
				got := make([]byte, n)
				if _, err := d.ReadAt(got, off); err != nil {
					errs <- err
					return
				}
				if !bytes.Equal(got, want) {
					errs <- fmt.Errorf("worker %d: %d bytes at %d differ", w, n, off)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// frontKeys reads the frontend directory's ring keys as the backend sees
// them: "" for a missing key.
func (r *rig) frontKeys(f *device.Frontend, keys ...string) map[string]string {
	r.t.Helper()
	m := map[string]string{}
	for _, k := range keys {
		v, err := r.dom0.ReadString(r.ctx, f.Path+"/"+k)
		if err != nil && !errors.Is(err, wire.ErrNotExist) {
			r.t.Fatal(err)
		}
		m[k] = v
	}
	return m
}

// TestQueues connects with the backend offering some queues and the
// frontend wanting some: the smaller count is used, each queue with its
// own ring and port, requests spread over all of them, the data intact
// and nothing left over.
func TestQueues(t *testing.T) {
	for _, tc := range []struct {
		name          string
		offer, want   int
		queues        int
		persistent    bool
		order         int
		indirect      int
		wantNumQueues string // multi-queue-num-queues as written
	}{
		{"not offered", 0, 4, 1, false, 0, 0, ""},
		{"offered one", 1, 4, 1, true, 0, 0, ""},
		{"not wanted", 4, 0, 1, false, 1, 0, ""},
		{"two", 2, 2, 2, false, 0, 0, "2"},
		{"two persistent order1", 2, 2, 2, true, 1, 32, "2"},
		{"four", 4, 4, 4, true, 0, 0, "4"},
		{"four order2 indirect", 4, 4, 4, false, 2, 64, "4"},
		{"backend offers more", 8, 2, 2, true, 0, 0, "2"},
		{"backend offers fewer", 2, 4, 2, false, 1, 0, "2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, blkback.Config{Persistent: true, MaxIndirectSegments: 64, MaxRingOrder: 2, MaxQueues: tc.offer, Size: 16 << 20})
			d, f := r.connect(Config{Persistent: tc.persistent, MaxRingOrder: tc.order, MaxIndirectSegments: tc.indirect, MaxQueues: tc.want, MaxPages: 512})
			in := d.Info()
			if in.Queues != tc.queues || in.RingOrder != tc.order || in.Persistent != tc.persistent {
				t.Fatalf("negotiated %+v", in)
			}
			// The xenstore layout.
			ringRef := "ring-ref"
			if tc.order > 0 {
				ringRef = "ring-ref0"
			}
			keys := r.frontKeys(f, "multi-queue-num-queues", ringRef, "event-channel", "queue-0/"+ringRef, "queue-0/event-channel",
				"queue-"+strconv.Itoa(tc.queues-1)+"/event-channel", "queue-"+strconv.Itoa(tc.queues)+"/event-channel", "ring-page-order")
			if keys["multi-queue-num-queues"] != tc.wantNumQueues {
				t.Errorf("multi-queue-num-queues %q", keys["multi-queue-num-queues"])
			}
			flat := tc.queues == 1
			if (keys[ringRef] != "") != flat || (keys["event-channel"] != "") != flat ||
				(keys["queue-0/"+ringRef] != "") == flat || (keys["queue-0/event-channel"] != "") == flat ||
				(keys["queue-"+strconv.Itoa(tc.queues-1)+"/event-channel"] != "") == flat ||
				keys["queue-"+strconv.Itoa(tc.queues)+"/event-channel"] != "" {
				t.Errorf("keys %q", keys)
			}
			if want := map[bool]string{true: strconv.Itoa(tc.order), false: ""}[tc.order > 0]; keys["ring-page-order"] != want {
				t.Errorf("ring-page-order %q", keys["ring-page-order"])
			}
			if s := r.ev.Stats(); s.Ports != 2*tc.queues {
				t.Errorf("%d ports bound, want %d", s.Ports, 2*tc.queues)
			}

			hammer(t, d, 16, 12, uint64(tc.queues))
			if err := d.Flush(r.ctx); !errors.Is(err, ErrNotSupported) {
				t.Errorf("flush: %v", err)
			}
			fs, bs := d.Stats(), r.srv.Stats()
			if len(fs.Queues) != tc.queues || len(bs.QueueRequests) != tc.queues || bs.Queues != tc.queues {
				t.Fatalf("frontend %+v, backend %+v", fs, bs)
			}
			total := uint64(0)
			for i, q := range fs.Queues {
				if q.Requests == 0 || q.InFlight != 0 || uint64(bs.QueueRequests[i]) != q.Requests {
					t.Errorf("queue %d: frontend %+v, backend answered %d", i, q, bs.QueueRequests[i])
				}
				total += q.Requests
			}
			if total != uint64(bs.Requests) || bs.Errors != 0 {
				t.Errorf("%d requests issued, backend %+v", total, bs)
			}
			r.close(d, f)
			r.leftovers()
		})
	}
}

// TestQueuesResume suspends a two-queue disk with requests in flight on
// both queues, drops its ports as a resume into a new domain does, and
// reconnects, to a backend offering one queue, then four, then two.
func TestQueuesResume(t *testing.T) {
	for _, persistent := range []bool{false, true} {
		t.Run(map[bool]string{false: "copy", true: "persistent"}[persistent], func(t *testing.T) {
			g := &gate{}
			r := newRig(t, blkback.Config{Disk: g, Persistent: true, MaxIndirectSegments: 32, MaxQueues: 2, Size: 16 << 20})
			g.Storage = r.file
			d, f := r.connect(Config{Persistent: persistent, MaxIndirectSegments: 32, MaxQueues: 4})
			if q := d.Info().Queues; q != 2 {
				t.Fatalf("%d queues", q)
			}
			model := make([]byte, d.Size())
			// Each round reconnects to a backend offering the next count.
			for round, next := range []int{1, 4, 2} {
				g.hold()
				// Several writes, so both queues have requests in flight.
				const writers = 6
				done := make(chan error, writers)
				for w := range writers {
					want := pattern(200<<10, uint64(round*10+w))
					off := int64(w) * (1 << 20)
					copy(model[off:], want)
					go func() { _, err := d.WriteAt(want, off); done <- err }()
				}
				<-g.entered
				deadline := time.Now().Add(10 * time.Second)
				nq := d.Info().Queues
				for busy := 0; busy < nq && time.Now().Before(deadline); {
					busy = 0
					for _, q := range d.Stats().Queues {
						if q.InFlight > 0 {
							busy++
						}
					}
					time.Sleep(time.Millisecond)
				}
				for i, q := range d.Stats().Queues {
					if i < nq && q.InFlight == 0 {
						t.Errorf("round %d: queue %d has nothing in flight", round, i)
					}
				}
				sctx, cancel := context.WithTimeout(r.ctx, 10*time.Millisecond)
				if err := d.Suspend(sctx); err != nil {
					t.Fatal(err)
				}
				cancel()
				// The new domain has none of the old ports.
				d.mu.Lock()
				for _, q := range d.qs {
					if err := r.gEv.Close(q.port); err != nil {
						t.Fatal(err)
					}
				}
				d.mu.Unlock()
				if err := d.Resume(false); err != nil {
					t.Fatal(err)
				}
				g.release()
				// The backend sees the frontend Initialising and reconnects;
				// with a new offer it is restarted.
				f2, err := device.Open(r.ctx, r.guest, "vbd", devID)
				if err != nil {
					t.Fatal(err)
				}
				if err := f2.SwitchState(r.ctx, device.Initialising); err != nil {
					t.Fatal(err)
				}
				r.stopBackend()
				// a new backend, as after a migration: its directory
				// starts Initialising, so the frontend waits for the new
				// offer instead of reading the stopped backend's InitWait
				// and queue count
				ob, err := device.OpenBackend(r.ctx, r.dom0, "vbd", guestDom, devID)
				if err != nil {
					t.Fatal(err)
				}
				if err := ob.SwitchState(r.ctx, device.Initialising); err != nil {
					t.Fatal(err)
				}
				r.srv, err = blkback.NewServer(blkback.Config{Events: r.bEv, Memory: r.bMem, Disk: g, Size: 16 << 20, Persistent: true, MaxIndirectSegments: 32, MaxQueues: next})
				if err != nil {
					t.Fatal(err)
				}
				r.startBackend()
				if err := d.Reconnect(r.ctx, f2); err != nil {
					t.Fatal(err)
				}
				f = f2
				if q := d.Info().Queues; q != min(next, 4) {
					t.Fatalf("round %d: %d queues after offering %d", round, q, next)
				}
				for range writers {
					if err := <-done; err != nil {
						t.Fatalf("round %d: write re-issued: %v", round, err)
					}
				}
				got := make([]byte, len(model))
				if _, err := d.ReadAt(got, 0); err != nil || !bytes.Equal(got, model) {
					t.Fatalf("round %d: read back: %v", round, err)
				}
				if bs := r.srv.Stats(); bs.Queues != d.Info().Queues {
					t.Errorf("round %d: backend %+v", round, bs)
				}
			}
			r.close(d, f)
			r.leftovers()
		})
	}
}
