package ring

import (
	"encoding/binary"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"
	"unsafe"
)

// Layouts of real protocols (sizes as the C compiler lays them out on
// x86-64) and a few odd ones.
var (
	netifTx = Layout{ReqSize: 12, RspSize: 4, Align: 4}   // netif_tx_request / _response
	netifRx = Layout{ReqSize: 8, RspSize: 8, Align: 4}    // netif_rx_request / _response
	blkif   = Layout{ReqSize: 112, RspSize: 16, Align: 8} // blkif_request / _response
	huge    = Layout{ReqSize: 1500, RspSize: 20, Align: 4}
)

func TestLayout(t *testing.T) {
	tests := []struct {
		name    string
		l       Layout
		order   int
		entry   int // -1: not checked
		entries int
	}{
		{"netif tx", netifTx, 0, 12, 256},
		{"netif tx order 1", netifTx, 1, 12, 512},
		{"netif rx", netifRx, 0, 8, 256},
		{"blkif", blkif, 0, 112, 32},
		{"blkif order 4", blkif, 4, 112, 512},
		{"union rounded up", Layout{ReqSize: 12, RspSize: 8, Align: 8}, 0, 16, 128},
		{"align 0 is 1", Layout{ReqSize: 3, RspSize: 1}, 0, 3, 1024},
		{"two entries", huge, 0, 1500, 2},
		{"one entry", Layout{ReqSize: 4032, RspSize: 4}, 0, 4032, 1},
		{"max order", netifRx, MaxOrder, 8, 1 << 16},
		{"order too big", netifRx, MaxOrder + 1, 8, 0},
		{"negative order", netifRx, -1, 8, 0},
		{"entry too big", Layout{ReqSize: 4033, RspSize: 4}, 0, 4033, 0},
		{"zero request", Layout{ReqSize: 0, RspSize: 4}, 0, 4, 0},
		{"bad align", Layout{ReqSize: 4, RspSize: 4, Align: 3}, 0, -1, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := tc.l.EntrySize(); tc.entry >= 0 && got != tc.entry {
				t.Errorf("EntrySize = %d, want %d", got, tc.entry)
			}
			if got := tc.l.Entries(tc.order); got != tc.entries {
				t.Errorf("Entries(%d) = %d, want %d", tc.order, got, tc.entries)
			}
		})
	}
}

func TestNewValidation(t *testing.T) {
	page := make([]byte, 2*PageSize)
	tests := []struct {
		name string
		mem  []byte
		l    Layout
		ok   bool
	}{
		{"page", page[:PageSize], netifTx, true},
		{"two pages", page, netifTx, true},
		{"short", page[:100], netifTx, false},
		{"not a power of two of pages", make([]byte, 3*PageSize), netifTx, false},
		{"misaligned", page[1 : PageSize+1], netifTx, false},
		{"nil", nil, netifTx, false},
		{"bad layout", page[:PageSize], Layout{}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, ferr := NewFront(tc.mem, tc.l)
			_, berr := NewBack(tc.mem, tc.l)
			if (ferr == nil) != tc.ok || (berr == nil) != tc.ok {
				t.Fatalf("front %v, back %v, want ok=%v", ferr, berr, tc.ok)
			}
		})
	}
	var f Front
	if err := f.PutRequest(nil); err == nil {
		t.Fatal("zero Front accepted a request")
	}
}

func TestFrontInitHeader(t *testing.T) {
	mem := make([]byte, PageSize)
	for i := range HeaderSize {
		mem[i] = 0xff
	}
	if _, err := NewFront(mem, netifTx); err != nil {
		t.Fatal(err)
	}
	want := make([]byte, HeaderSize)
	want[OffReqEvent], want[OffRspEvent] = 1, 1
	if string(mem[:HeaderSize]) != string(want) {
		t.Fatalf("header % x", mem[:HeaderSize])
	}
}

// pair returns a front and a back on one ring of 2^order pages whose
// indices all start at start.
func pair(t testing.TB, l Layout, order int, start uint32) ([]byte, *Front, *Back) {
	t.Helper()
	mem := make([]byte, MemSize(order))
	if _, err := NewFront(mem, l); err != nil {
		t.Fatal(err)
	}
	store32(mem, OffReqProd, start)
	store32(mem, OffRspProd, start)
	store32(mem, OffReqEvent, start+1)
	store32(mem, OffRspEvent, start+1)
	f, err := AttachFront(mem, l, start)
	if err != nil {
		t.Fatal(err)
	}
	b, err := AttachBack(mem, l, start)
	if err != nil {
		t.Fatal(err)
	}
	return mem, f, b
}

func TestRoundTrip(t *testing.T) {
	for _, start := range []uint32{0, 0xfffffffe} {
		_, f, b := pair(t, blkif, 0, start)
		// A stale byte in the slot must not survive a short request.
		f.s.slot(f.reqProdPvt)[50] = 0xee
		if err := f.PutRequest([]byte("read sector 7")); err != nil {
			t.Fatal(err)
		}
		if err := f.PutRequest([]byte("write sector 9")); err != nil {
			t.Fatal(err)
		}
		if n, _ := b.UnconsumedRequests(); n != 0 {
			t.Fatalf("back sees %d requests before the push", n)
		}
		f.PushRequests()
		if n, err := b.UnconsumedRequests(); n != 2 || err != nil {
			t.Fatalf("back sees %d requests, %v", n, err)
		}
		req := make([]byte, blkif.ReqSize)
		for i, want := range []string{"read sector 7", "write sector 9"} {
			ok, err := b.TakeRequest(req)
			if !ok || err != nil || string(req[:len(want)]) != want || req[50] != 0 {
				t.Fatalf("request %d: %v %v %q", i, ok, err, req[:20])
			}
			if err := b.PutResponse([]byte{byte(i), 'k'}); err != nil {
				t.Fatal(err)
			}
		}
		if ok, err := b.TakeRequest(req); ok || err != nil {
			t.Fatalf("third request: %v %v", ok, err)
		}
		if err := b.PutResponse([]byte("extra")); !errors.Is(err, ErrFull) {
			t.Fatalf("response without request: %v", err)
		}
		b.PushResponses()
		rsp := make([]byte, blkif.RspSize)
		for i := range 2 {
			ok, err := f.TakeResponse(rsp)
			if !ok || err != nil || rsp[0] != byte(i) || rsp[1] != 'k' {
				t.Fatalf("response %d: %v %v % x", i, ok, err, rsp)
			}
		}
		if ok, err := f.TakeResponse(rsp); ok || err != nil {
			t.Fatalf("third response: %v %v", ok, err)
		}
		if f.FreeRequests() != f.Size() {
			t.Fatalf("free %d of %d", f.FreeRequests(), f.Size())
		}
	}
}

func TestFreeRequestsAndFull(t *testing.T) {
	_, f, b := pair(t, huge, 0, 0xffffffff) // two entries
	tests := []struct {
		do   func() error
		free int
	}{
		{func() error { return nil }, 2},
		{func() error { return f.PutRequest([]byte("a")) }, 1},
		{func() error { return f.PutRequest([]byte("b")) }, 0},
		{func() error { f.PushRequests(); return nil }, 0},
		{func() error { _, err := b.TakeRequest(make([]byte, huge.ReqSize)); return err }, 0},
		{func() error { b.PutResponse(nil); b.PushResponses(); return nil }, 0},
		{func() error { _, err := f.TakeResponse(make([]byte, huge.RspSize)); return err }, 1},
	}
	for i, tc := range tests {
		if err := tc.do(); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		if f.FreeRequests() != tc.free || f.Full() != (tc.free == 0) {
			t.Fatalf("step %d: free %d, full %v, want %d", i, f.FreeRequests(), f.Full(), tc.free)
		}
	}
	f.PutRequest(nil)
	if err := f.PutRequest(nil); !errors.Is(err, ErrFull) {
		t.Fatalf("put on a full ring: %v", err)
	}
	if err := f.PutRequest(make([]byte, huge.ReqSize+1)); err == nil || errors.Is(err, ErrFull) {
		t.Fatalf("oversized request: %v", err)
	}
	if _, err := f.TakeResponse(make([]byte, huge.RspSize-1)); err == nil {
		t.Fatal("short response buffer accepted")
	}
}

// TestNotify checks req_event/rsp_event suppression: the producer
// notifies only when its push crosses the event index the consumer set.
func TestNotify(t *testing.T) {
	tests := []struct {
		name  string
		event uint32 // relative to the start index
		pre   int    // entries pushed before
		push  int    // entries in the push under test
		want  bool
	}{
		{"first entry after init", 1, 0, 1, true},
		{"second entry, event not rearmed", 1, 1, 1, false},
		{"batch crossing the event", 1, 0, 3, true},
		{"batch ending on the event", 3, 0, 3, true},
		{"batch before the event", 4, 0, 3, false},
		{"event far ahead", 100, 0, 5, false},
		{"event already passed", 1, 2, 2, false},
		{"empty push", 1, 0, 0, false},
		{"rearmed after pre", 3, 2, 1, true},
	}
	for _, start := range []uint32{0, 0xfffffffe} {
		for _, tc := range tests {
			t.Run(fmt.Sprintf("%s/start %#x", tc.name, start), func(t *testing.T) {
				// Requests: the back sets req_event.
				mem, f, b := pair(t, netifTx, 0, start)
				for range tc.pre {
					f.PutRequest(nil)
				}
				f.PushRequests()
				f.s.store(OffReqEvent, start+tc.event)
				for range tc.push {
					f.PutRequest(nil)
				}
				if got := f.PushRequestsAndCheckNotify(); got != tc.want {
					t.Errorf("requests: notify %v, want %v", got, tc.want)
				}
				// Responses: the front sets rsp_event.
				req := make([]byte, netifTx.ReqSize)
				for range tc.pre + tc.push {
					b.TakeRequest(req)
				}
				for range tc.pre {
					b.PutResponse(nil)
				}
				b.PushResponses()
				store32(mem, OffRspEvent, start+tc.event)
				for range tc.push {
					b.PutResponse(nil)
				}
				if got := b.PushResponsesAndCheckNotify(); got != tc.want {
					t.Errorf("responses: notify %v, want %v", got, tc.want)
				}
			})
		}
	}
}

// store32 stores v into the index at offset off of the ring in mem, as
// the peer would.
func store32(mem []byte, off int, v uint32) {
	atomic.StoreUint32((*uint32)(unsafe.Pointer(&mem[off])), v)
}

// TestFinalCheck: with nothing to do, the final check arms the event index
// so that the very next push notifies, and finds an entry that came in
// between.
func TestFinalCheckN(t *testing.T) {
	_, f, b := pair(t, netifRx, 0, 10)
	f.PutRequest(nil)
	if !f.PushRequestsAndCheckNotify() {
		t.Fatal("first push did not notify")
	}
	// One request waits, three are needed: the back must be told of the
	// next push, even though requests already wait.
	if ok, err := b.FinalCheckForRequestsN(3); ok || err != nil {
		t.Fatalf("1 of 3 requests: %v %v", ok, err)
	}
	f.PutRequest(nil)
	if !f.PushRequestsAndCheckNotify() {
		t.Fatal("push after the back asked for more did not notify")
	}
	f.PutRequest(nil)
	if f.PushRequestsAndCheckNotify() {
		t.Fatal("second push notified though the back did not rearm")
	}
	if ok, err := b.FinalCheckForRequestsN(3); !ok || err != nil {
		t.Fatalf("3 of 3 requests: %v %v", ok, err)
	}
}

func TestFinalCheck(t *testing.T) {
	_, f, b := pair(t, netifRx, 0, 10)
	if work, err := b.FinalCheckForRequests(); work || err != nil {
		t.Fatalf("idle back: %v %v", work, err)
	}
	f.PutRequest(nil)
	f.PutRequest(nil)
	if !f.PushRequestsAndCheckNotify() {
		t.Fatal("push after the back's final check did not notify")
	}
	if work, err := b.FinalCheckForRequests(); !work || err != nil {
		t.Fatalf("back with work: %v %v", work, err)
	}
	req := make([]byte, 8)
	b.TakeRequest(req)
	f.PutRequest(nil)
	if f.PushRequestsAndCheckNotify() {
		t.Fatal("push while the back is busy notified")
	}
	if work, err := f.FinalCheckForResponses(); work || err != nil {
		t.Fatalf("idle front: %v %v", work, err)
	}
	b.PutResponse(nil)
	if !b.PushResponsesAndCheckNotify() {
		t.Fatal("response after the front's final check did not notify")
	}
	b.TakeRequest(req)
	b.PutResponse(nil)
	if b.PushResponsesAndCheckNotify() {
		t.Fatal("second response notified though the front did not rearm")
	}
	if work, err := f.FinalCheckForResponses(); !work || err != nil {
		t.Fatalf("front with work: %v %v", work, err)
	}
}

// TestHostileIndices: a peer's producer index that claims entries that
// cannot exist kills the end with ErrCorrupt, and nothing is consumed.
func TestHostileIndices(t *testing.T) {
	const start = 0xfffffff0
	tests := []struct {
		name  string
		front bool
		sent  int    // requests pushed by the front (and taken by the back)
		prod  uint32 // the peer's producer index, relative to start
	}{
		{"responses beyond the ring", true, 4, 257},
		{"responses to unsent requests", true, 4, 5},
		{"responses with none sent", true, 0, 1},
		{"rsp_prod behind rsp_cons", true, 4, 0xffffffff},
		{"rsp_prod far away", true, 4, 0x80000000},
		{"requests beyond the ring", false, 0, 257},
		{"requests beyond the ring after some", false, 3, 3 + 257},
		{"req_prod behind req_cons", false, 3, 2},
		{"req_prod far away", false, 0, 0x80000000},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			mem, f, b := pair(t, netifTx, 0, start)
			for range tc.sent {
				f.PutRequest(nil)
			}
			f.PushRequests()
			req, rsp := make([]byte, 12), make([]byte, 4)
			for range tc.sent {
				b.TakeRequest(req)
			}
			var err error
			var took bool
			if tc.front {
				store32(mem, OffRspProd, start+tc.prod)
				took, err = f.TakeResponse(rsp)
			} else {
				store32(mem, OffReqProd, start+tc.prod)
				took, err = b.TakeRequest(req)
			}
			if took || !errors.Is(err, ErrCorrupt) {
				t.Fatalf("took %v, err %v; want ErrCorrupt", took, err)
			}
			end := error(nil)
			if tc.front {
				end = f.Err()
				_, err = f.UnconsumedResponses()
				if f.RspCons() != start || f.PutRequest(nil) == nil {
					t.Fatal("dead front moved or accepted a request")
				}
			} else {
				end = b.Err()
				_, err = b.UnconsumedRequests()
				if b.ReqCons() != start+uint32(tc.sent) || b.PutResponse(nil) == nil {
					t.Fatal("dead back moved or accepted a response")
				}
			}
			if !errors.Is(end, ErrCorrupt) || !errors.Is(err, ErrCorrupt) {
				t.Fatalf("not dead: Err %v, later call %v", end, err)
			}
		})
	}
}

// TestAcceptedIndices: the limits themselves are valid.
func TestAcceptedIndices(t *testing.T) {
	start := uint32(0xffffff00)
	mem, f, b := pair(t, netifTx, 0, start)
	store32(mem, OffReqProd, start+256) // a full ring of requests
	if n, err := b.UnconsumedRequests(); n != 256 || err != nil {
		t.Fatalf("full ring: %d %v", n, err)
	}
	for range 256 {
		f.PutRequest(nil)
	}
	f.PushRequests()
	store32(mem, OffRspProd, start+256) // every request answered
	if n, err := f.UnconsumedResponses(); n != 256 || err != nil {
		t.Fatalf("all answered: %d %v", n, err)
	}
}

// seqEntry fills e with a pattern derived from seq, seq in the first four
// bytes (or as much of it as fits).
func seqEntry(e []byte, seq uint32) {
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], seq)
	n := copy(e, b[:])
	for i := n; i < len(e); i++ {
		e[i] = byte(seq) + byte(i)
	}
}

func checkEntry(e []byte, seq uint32) bool {
	want := make([]byte, len(e))
	seqEntry(want, seq)
	return string(want) == string(e)
}

// transfer moves n requests from f to b and n responses back, in two
// goroutines that sleep when idle and wake each other only when the
// ring.h notification checks say so. Each response echoes its request.
func transfer(f *Front, b *Back, n int) error {
	kickBack, kickFront := make(chan struct{}, 1), make(chan struct{}, 1)
	kick := func(c chan struct{}) {
		select {
		case c <- struct{}{}:
		default:
		}
	}
	backErr := make(chan error, 1)
	go func() {
		l := b.Layout()
		req, rsp := make([]byte, l.ReqSize), make([]byte, l.RspSize)
		for seq := uint32(0); seq < uint32(n); {
			ok, err := b.TakeRequest(req)
			if err != nil {
				backErr <- err
				return
			}
			if !ok {
				if b.PushResponsesAndCheckNotify() {
					kick(kickFront)
				}
				if work, err := b.FinalCheckForRequests(); err != nil {
					backErr <- err
					return
				} else if !work {
					<-kickBack
				}
				continue
			}
			if !checkEntry(req, seq) {
				backErr <- fmt.Errorf("request %d is % x", seq, req)
				return
			}
			seqEntry(rsp, ^seq)
			if err := b.PutResponse(rsp); err != nil {
				backErr <- err
				return
			}
			seq++
		}
		if b.PushResponsesAndCheckNotify() {
			kick(kickFront)
		}
		backErr <- nil
	}()
	l := f.Layout()
	req, rsp := make([]byte, l.ReqSize), make([]byte, l.RspSize)
	sent, got := uint32(0), uint32(0)
	for got < uint32(n) {
		for sent < uint32(n) && !f.Full() {
			seqEntry(req, sent)
			if err := f.PutRequest(req); err != nil {
				return err
			}
			sent++
		}
		if f.PushRequestsAndCheckNotify() {
			kick(kickBack)
		}
		ok, err := f.TakeResponse(rsp)
		if err != nil {
			return err
		}
		if ok {
			if !checkEntry(rsp, ^got) {
				return fmt.Errorf("response %d is % x", got, rsp)
			}
			got++
			continue
		}
		if work, err := f.FinalCheckForResponses(); err != nil {
			return err
		} else if !work {
			select {
			case <-kickFront:
			case err := <-backErr:
				return fmt.Errorf("back stopped after %d responses: %v", got, err)
			}
		}
	}
	return <-backErr
}

// TestTwoGoroutines moves 1e5 requests and responses through rings of
// several orders and entry sizes, starting near the wrap of the indices.
func TestTwoGoroutines(t *testing.T) {
	n := 100_000
	if testing.Short() {
		n = 10_000
	}
	tests := []struct {
		name  string
		l     Layout
		order int
	}{
		{"netif tx", netifTx, 0},
		{"netif rx order 1", netifRx, 1},
		{"blkif", blkif, 0},
		{"blkif order 2", blkif, 2},
		{"two entries", huge, 0},
		{"one entry", Layout{ReqSize: 4032, RspSize: 4}, 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, f, b := pair(t, tc.l, tc.order, 0xffffffff-uint32(n/2))
			done := make(chan error, 1)
			go func() { done <- transfer(f, b, n) }()
			select {
			case err := <-done:
				if err != nil {
					t.Fatal(err)
				}
			case <-time.After(2 * time.Minute):
				t.Fatal("stuck: a notification was lost")
			}
			if f.RspCons() != b.RspProdPvt() || f.FreeRequests() != f.Size() {
				t.Fatalf("rsp_cons %d, rsp_prod_pvt %d, free %d", f.RspCons(), b.RspProdPvt(), f.FreeRequests())
			}
		})
	}
}

// BenchmarkRing measures requests per second through a front/back pair in
// two goroutines (request out, response back, notifications through
// channels as ring.h's checks ask).
func BenchmarkRing(b *testing.B) {
	for _, tc := range []struct {
		name  string
		l     Layout
		order int
	}{
		{"netif-tx", netifTx, 0},
		{"blkif", blkif, 0},
		{"blkif-order4", blkif, 4},
	} {
		b.Run(tc.name, func(b *testing.B) {
			_, f, bk := pair(b, tc.l, tc.order, 0)
			start := time.Now()
			if err := transfer(f, bk, b.N); err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "req/s")
		})
	}
}
