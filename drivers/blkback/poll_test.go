package blkback

import (
	"context"
	"errors"
	"runtime"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"

	"github.com/gozen-dev/gozen/drivers/blkif"
	"github.com/gozen-dev/gozen/drivers/ring"
	"github.com/gozen-dev/gozen/evtchn"
	"github.com/gozen-dev/gozen/evtchn/evheap"
	"github.com/gozen-dev/gozen/gnttab"
	"github.com/gozen-dev/gozen/gnttab/gntheap"
)

func TestNextWindow(t *testing.T) {
	const most = 1600 * time.Microsecond // floor 100 µs
	us := func(n int) time.Duration { return time.Duration(n) * time.Microsecond }
	for _, tc := range []struct {
		name              string
		window, gap, want time.Duration
	}{
		{"short gap after the window doubles it", us(200), us(300), us(400)},
		{"doubling stops at the cap", us(1000), us(1500), most},
		{"a gap at the cap still grows", us(800), most, most},
		{"a closed window reopens at the floor", 0, us(50), us(100)},
		{"a closed window reopens at the floor, long gap", 0, us(1000), us(100)},
		{"woken within the window: unchanged", us(400), us(300), us(400)},
		{"long wait halves", most, most + 1, us(800)},
		{"long wait halves down to the floor", us(200), time.Second, us(100)},
		{"long wait below the floor closes", us(100), time.Second, 0},
		{"closed stays closed when idle", 0, time.Second, 0},
	} {
		if got := nextWindow(tc.window, tc.gap, most); got != tc.want {
			t.Errorf("%s: nextWindow(%v, %v) = %v, want %v", tc.name, tc.window, tc.gap, got, tc.want)
		}
	}
	if got := nextWindow(us(100), us(10), 0); got != 0 {
		t.Errorf("polling off: window %v", got)
	}
	if got := nextWindow(us(100), us(10), -1); got != 0 {
		t.Errorf("polling off (negative): window %v", got)
	}
}

// fakeClock is a server's clock that only the test moves; it counts its
// readings.
type fakeClock struct{ ns, reads atomic.Int64 }

func (c *fakeClock) now() time.Time {
	c.reads.Add(1)
	return time.Unix(0, c.ns.Load())
}

func (c *fakeClock) add(d time.Duration) { c.ns.Add(int64(d)) }

// pollRig is one ring served by a conn whose clock the test moves, with
// its frontend driven by hand: requests are pushed with or without a
// notification as the ring's req_event asks.
type pollRig struct {
	t      *testing.T
	ctx    context.Context // hang guard
	s      *Server
	c      *conn
	clock  *fakeClock
	front  *ring.Front
	share  *gnttab.Share // page 0 the ring, page 1 the data
	ev     *evheap.Domain
	evBack *evheap.Domain
	gnBack *gntheap.Domain
	port   evtchn.Port // the frontend's
	seen   evtchn.Generation
	id     uint64 // next request's id
}

func newPollRig(t *testing.T, pollMax time.Duration) *pollRig {
	t.Helper()
	gh, eh := gntheap.NewHub(), evheap.NewHub()
	gb, _ := gh.Domain(0)
	gf, _ := gh.Domain(1)
	eb, _ := eh.Domain(0)
	ef, _ := eh.Domain(1)
	share, err := gf.Share(0, 2, true)
	if err != nil {
		t.Fatal(err)
	}
	front, err := ring.NewFront(share.Buf[:ring.PageSize], blkif.Layout)
	if err != nil {
		t.Fatal(err)
	}
	port, err := ef.AllocUnbound(0)
	if err != nil {
		t.Fatal(err)
	}
	s, err := NewServer(Config{Events: eb, Memory: gb, Disk: memDisk(make([]byte, 1<<20)), Size: 1 << 20, PollMax: pollMax})
	if err != nil {
		t.Fatal(err)
	}
	clock := &fakeClock{}
	clock.add(time.Hour)
	s.now = clock.now
	c, err := s.newConn(0, 1, share.Refs[:1], port, false)
	if err != nil {
		t.Fatal(err)
	}
	// A guard against hangs only: every wait below ends on the server's
	// progress, which the test's steps make certain.
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return &pollRig{t: t, ctx: ctx, s: s, c: c, clock: clock, front: front, share: share,
		ev: ef, evBack: eb, gnBack: gb, port: port}
}

// push puts a one-page read and pushes it, notifying the backend if the
// ring says so; it reports whether it notified.
func (r *pollRig) push() bool {
	r.t.Helper()
	req := blkif.Request{Op: blkif.OpRead, ID: r.id, Segments: []blkif.Segment{{Ref: r.share.Refs[1], Last: 7}}}
	r.id++
	b := make([]byte, blkif.RequestSize)
	if err := req.Encode(b); err != nil {
		r.t.Fatal(err)
	}
	if err := r.front.PutRequest(b); err != nil {
		r.t.Fatal(err)
	}
	if !r.front.PushRequestsAndCheckNotify() {
		return false
	}
	if err := r.ev.Notify(r.port); err != nil {
		r.t.Fatal(err)
	}
	return true
}

// await waits for the response to the last request pushed.
func (r *pollRig) await() {
	r.t.Helper()
	b := make([]byte, blkif.ResponseSize)
	for {
		ok, err := r.front.TakeResponse(b)
		if err != nil {
			r.t.Fatal(err)
		}
		if ok {
			rsp, err := blkif.DecodeResponse(b)
			if err != nil || rsp.ID != r.id-1 || rsp.Status != blkif.StatusOK {
				r.t.Fatalf("response %+v, %v; want request %d answered OK", rsp, err, r.id-1)
			}
			return
		}
		more, err := r.front.FinalCheckForResponses()
		if err != nil {
			r.t.Fatal(err)
		}
		if more {
			continue
		}
		if r.seen, err = r.ev.Wait(r.ctx, r.port, r.seen); err != nil {
			r.t.Fatalf("waiting for the response to request %d: %v (stats %+v)", r.id-1, err, r.s.Stats())
		}
	}
}

// polling waits until the server, having answered the last request, is
// polling: it reads the clock once when the ring goes empty (the start of
// the window) and then once a look, so two more readings from now on mean
// the window has opened, and moving the clock from here on moves it
// against the window.
func (r *pollRig) polling() {
	r.t.Helper()
	from := r.clock.reads.Load()
	r.waitFor("polling", func() bool { return r.clock.reads.Load() >= from+2 })
}

// reqEvent returns the ring's req_event.
func (r *pollRig) reqEvent() uint32 {
	return atomic.LoadUint32((*uint32)(unsafe.Pointer(&r.share.Buf[ring.OffReqEvent])))
}

// waitFor waits until cond holds, failing with what if it never does.
func (r *pollRig) waitFor(what string, cond func() bool) {
	r.t.Helper()
	for !cond() {
		if r.ctx.Err() != nil {
			r.t.Fatalf("%s never happened (stats %+v, req_event %d)", what, r.s.Stats(), r.reqEvent())
		}
		runtime.Gosched()
	}
}

// armed waits until the server, having answered every request pushed,
// asked for a notification on the next one (req_event, set by
// FinalCheckForRequests before it waits, one past the requests taken).
func (r *pollRig) armed() {
	r.t.Helper()
	r.waitFor("req_event armed", func() bool { return r.reqEvent() == uint32(r.id+1) })
}

// close stops the server and checks that it left nothing mapped or bound.
func (r *pollRig) close() {
	r.t.Helper()
	if err := r.c.close(); err != nil {
		r.t.Errorf("close: %v", err)
	}
	if st := r.gnBack.Stats(); st.Mappings != 0 {
		r.t.Errorf("leftover mappings: %+v", st)
	}
	if st := r.evBack.Stats(); st.Ports != 0 {
		r.t.Errorf("leftover ports: %+v", st)
	}
}

// TestPollAnswersWithoutNotification: once a request is answered, the
// server polls the ring without re-arming req_event, so the frontend's
// next requests need no notification and are answered all the same. The
// clock never moves, so the window never ends; close still stops the
// polling server.
func TestPollAnswersWithoutNotification(t *testing.T) {
	r := newPollRig(t, time.Hour)
	if !r.push() {
		t.Fatal("first request: the frontend was not asked to notify")
	}
	r.await()
	for i := range 3 {
		r.polling()
		if r.push() {
			t.Errorf("request %d: the frontend was asked to notify while the backend polls", i+1)
		}
		r.await()
	}
	st := r.s.Stats()
	if st.Requests != 4 || st.PollHits != 3 || st.PollMisses != 0 {
		t.Errorf("stats %+v, want 4 requests, 3 found by polling, no poll ran out", st)
	}
	r.close()
}

// TestPollWindowEnds: when the window passes with no request, the server
// arms req_event and waits for the event; the next request is notified
// and answered; the wait was longer than the cap (a spurious wake-up on
// the way does not count), so the next window is half as long.
func TestPollWindowEnds(t *testing.T) {
	const most = time.Millisecond
	r := newPollRig(t, most)
	r.push()
	r.await()
	r.polling()
	r.clock.add(most) // the window, opened at the cap, ends
	r.waitFor("a poll that ran out", func() bool { return r.s.Stats().PollMisses == 1 })
	r.armed()
	// An event with no request (as one left over from a request the
	// final check found) wakes the server early: it must not take that
	// for the gap.
	if err := r.ev.Notify(r.port); err != nil {
		t.Fatal(err)
	}
	r.clock.add(most) // the wait lasts longer than the cap
	if !r.push() {
		t.Fatal("after the window: the frontend was not asked to notify")
	}
	r.await()
	r.polling()
	r.clock.add(most / 2) // the halved window ends
	r.waitFor("a second poll that ran out", func() bool { return r.s.Stats().PollMisses == 2 })
	r.armed()
	st := r.s.Stats()
	if st.Requests != 2 || st.PollHits != 0 || st.PollTime != most+most/2 {
		t.Errorf("stats %+v, want 2 requests, no poll hit, %v polling", st, most+most/2)
	}
	r.close()
}

// TestPollIdleCloses: each wait longer than the cap halves the window
// until it closes; then answering a request costs no polling at all: the
// server arms req_event at once, though its clock stands still.
func TestPollIdleCloses(t *testing.T) {
	const most = 1600 * time.Microsecond
	r := newPollRig(t, most)
	window := most
	misses := 0
	for window >= most/pollGrowFrom {
		r.push()
		r.await()
		r.polling()
		r.clock.add(window)
		misses++
		r.waitFor("the window's end", func() bool { return r.s.Stats().PollMisses == misses })
		r.armed()
		r.clock.add(10 * most) // idle
		window /= 2
	}
	if misses != 5 {
		t.Fatalf("%d windows before closing, want 5 (1600, 800, 400, 200, 100 µs)", misses)
	}
	if !r.push() {
		t.Fatal("the frontend was not asked to notify after an idle wait")
	}
	r.await()
	r.armed() // no polling: the clock stands still
	if !r.push() {
		t.Error("closed window: the frontend was not asked to notify")
	}
	r.await()
	st := r.s.Stats()
	if st.PollMisses != 5 || st.PollHits != 0 || st.Requests != 7 {
		t.Errorf("stats %+v, want 5 polls ran out, none found a request, 7 requests", st)
	}
	r.close()
}

// TestPollOff: with PollMax negative the server arms req_event after
// every answer, never polling.
func TestPollOff(t *testing.T) {
	r := newPollRig(t, -1)
	for i := range 3 {
		if !r.push() && i > 0 {
			t.Errorf("request %d: the frontend was not asked to notify", i)
		}
		r.await()
		r.armed()
	}
	// The wait before the third request's event ended counted a wake-up.
	if st := r.s.Stats(); st.PollHits != 0 || st.PollMisses != 0 || st.PollTime != 0 || st.Wakeups == 0 {
		t.Errorf("polling off: stats %+v, want no polling, a wake-up", st)
	}
	r.close()
}

// TestPollMaxDefault: zero is DefaultPollMax, negative is off.
func TestPollMaxDefault(t *testing.T) {
	ev, _ := evheap.NewHub().Domain(0)
	gn, _ := gntheap.NewHub().Domain(0)
	for _, tc := range []struct{ set, want time.Duration }{
		{0, DefaultPollMax},
		{-time.Hour, -1},
		{time.Millisecond, time.Millisecond},
	} {
		s, err := NewServer(Config{Events: ev, Memory: gn, Disk: memDisk(make([]byte, 4096)), Size: 4096, PollMax: tc.set})
		if err != nil {
			t.Fatal(err)
		}
		if s.cfg.PollMax != tc.want {
			t.Errorf("PollMax %v: %v, want %v", tc.set, s.cfg.PollMax, tc.want)
		}
	}
}

// TestPollCorruptRing: a req_prod the frontend moves past the ring while
// the server polls stops serving the ring with ring.ErrCorrupt.
func TestPollCorruptRing(t *testing.T) {
	r := newPollRig(t, time.Hour)
	r.push()
	r.await()
	r.polling()
	atomic.StoreUint32((*uint32)(unsafe.Pointer(&r.share.Buf[ring.OffReqProd])), uint32(r.id)+1000)
	select {
	case <-r.c.done:
	case <-r.ctx.Done():
		t.Fatalf("the server kept polling a corrupt ring (stats %+v)", r.s.Stats())
	}
	if !errors.Is(r.c.err, ring.ErrCorrupt) {
		t.Errorf("server stopped with %v, want ring.ErrCorrupt", r.c.err)
	}
	if st := r.s.Stats(); st.PollHits != 0 {
		t.Errorf("stats %+v: a corrupt index counted as a request found", st)
	}
	r.close()
}
