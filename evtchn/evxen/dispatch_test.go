package evxen

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
	"unsafe"

	"github.com/gozen-dev/gozen/evtchn"
)

// fakeShared is a page-sized fake shared-info page (vCPU 0's vcpu_info at 0).
type fakeShared struct{ page [4096 / 8]uint64 }

func (f *fakeShared) twoLevel() *TwoLevel {
	p := unsafe.Pointer(&f.page)
	return NewTwoLevel(p, p)
}

// raise does what Xen does to send an event on port.
func (f *fakeShared) raise(port int) {
	f.page[offPending/8+port/64] |= 1 << (port % 64)
	f.page[offPendingSel/8] |= 1 << (port / 64)
	f.page[0] |= 1
}

func TestScan(t *testing.T) {
	tests := []struct {
		name   string
		raise  []int
		masked []int
		want   []int
	}{
		{"one", []int{3}, nil, []int{3}},
		{"several words", []int{1, 64, 130, 4095}, nil, []int{1, 64, 130, 4095}},
		{"masked stays pending", []int{5, 6}, []int{6}, []int{5}},
		{"none", nil, nil, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var f fakeShared
			tl := f.twoLevel()
			for _, p := range tt.masked {
				tl.SetMask(evtchn.Port(p), true)
			}
			for _, p := range tt.raise {
				f.raise(p)
			}
			var got []int
			n := tl.Scan(func(p evtchn.Port) { got = append(got, int(p)) })
			if n != len(tt.want) || len(got) != len(tt.want) {
				t.Fatalf("delivered %v, want %v", got, tt.want)
			}
			for i := range got {
				if got[i] != tt.want[i] {
					t.Fatalf("delivered %v, want %v", got, tt.want)
				}
			}
			if tl.UpcallPending() {
				t.Error("upcall flag not cleared")
			}
			for _, p := range tt.masked {
				if !tl.Pending(evtchn.Port(p)) {
					t.Errorf("masked port %d lost its pending bit", p)
				}
			}
		})
	}
}

// TestScanRegisteredVCPUInfo views the shared bitmaps through vcpu_info
// records outside the shared-info page (registered ones, as every vCPU's
// is in a Gozen guest, and the only ones vCPUs 32 and up have): each
// vCPU's scan follows its own selector only, and leaves its upcall mask
// byte alone.
func TestScanRegisteredVCPUInfo(t *testing.T) {
	var f fakeShared
	var areas [64][8]uint64 // 64 vcpu_info records of 64 bytes
	const first, second = 1, 33
	sh := unsafe.Pointer(&f.page)
	view := func(id int) *TwoLevel { return NewTwoLevel(sh, unsafe.Pointer(&areas[id])) }
	v0, v1, v33 := NewTwoLevel(sh, sh), view(first), view(second)
	areas[second][0] = 1 << 8 // the mask byte, as Xen zero-fills it
	raise := func(id, port int) {
		f.page[offPending/8+port/64] |= 1 << (port % 64)
		areas[id][offPendingSel/8] |= 1 << (port / 64)
		areas[id][0] |= 1
	}
	raise(second, 70)
	raise(first, 3)
	if v0.UpcallPending() || !v1.UpcallPending() || !v33.UpcallPending() {
		t.Fatalf("upcall flags: vCPU 0 %v, %d %v, %d %v; want false, true, true",
			v0.UpcallPending(), first, v1.UpcallPending(), second, v33.UpcallPending())
	}
	tests := []struct {
		name string
		tl   *TwoLevel
		want []int
	}{
		{"vCPU 0 has nothing flagged", v0, nil},
		{"vCPU 33 finds its port", v33, []int{70}},
		{"vCPU 1 finds its port", v1, []int{3}},
		{"vCPU 33 again: nothing", v33, nil},
	}
	for _, tt := range tests {
		var got []int
		tt.tl.Scan(func(p evtchn.Port) { got = append(got, int(p)) })
		if len(got) != len(tt.want) || (len(got) == 1 && got[0] != tt.want[0]) {
			t.Errorf("%s: delivered %v, want %v", tt.name, got, tt.want)
		}
	}
	if v33.UpcallPending() {
		t.Error("vCPU 33's upcall flag not cleared")
	}
	if areas[second][0]&(0xff<<8) != 1<<8 {
		t.Errorf("vCPU 33's upcall mask byte changed: %#x", areas[second][0])
	}
}

func TestTableWaitDeliverClose(t *testing.T) {
	tb := NewTable()
	if err := tb.Add(7, nil); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []evtchn.Port{0, NrPorts, 7} {
		if err := tb.Add(bad, nil); !errors.Is(err, evtchn.ErrBadPort) {
			t.Errorf("Add(%d) = %v, want ErrBadPort", bad, err)
		}
	}
	// many waiters, one notification: all wake
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if g, err := tb.Wait(context.Background(), 7, 0); err != nil || g != 1 {
				t.Errorf("Wait = %d, %v", g, err)
			}
		}()
	}
	time.Sleep(10 * time.Millisecond)
	tb.Deliver(7)
	wg.Wait()
	// no lost wake-up: a notification before Wait is seen
	tb.Deliver(7)
	if g, err := tb.Wait(context.Background(), 7, 1); err != nil || g != 2 {
		t.Fatalf("Wait after Deliver = %d, %v", g, err)
	}
	// context cancellation
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if _, err := tb.Wait(ctx, 7, 2); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait with deadline = %v", err)
	}
	// close wakes waiters with ErrClosed
	done := make(chan error)
	go func() { _, err := tb.Wait(context.Background(), 7, 2); done <- err }()
	time.Sleep(10 * time.Millisecond)
	if err := tb.Remove(7); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, evtchn.ErrClosed) {
		t.Fatalf("waiter woke with %v, want ErrClosed", err)
	}
	if tb.Len() != 0 {
		t.Fatal("port left in table")
	}
	// unknown ports
	tb.Deliver(99)
	if tb.Dropped.Load() != 1 {
		t.Error("notification for unknown port not counted as dropped")
	}
	if _, err := tb.Wait(context.Background(), 99, 0); !errors.Is(err, evtchn.ErrBadPort) {
		t.Errorf("Wait(99) = %v", err)
	}
}

func TestTableHandler(t *testing.T) {
	tb := NewTable()
	calls := 0
	if err := tb.Add(3, func() { calls++ }); err != nil {
		t.Fatal(err)
	}
	tb.Deliver(3)
	tb.Deliver(3)
	if calls != 2 {
		t.Fatalf("handler called %d times", calls)
	}
}

// TestTableReset checks the resume contract of package evtchn: Reset wakes
// every waiter with an error wrapping ErrResumed and ErrClosed, forgets the
// ports, and a port number can then be bound afresh.
func TestTableReset(t *testing.T) {
	tab := NewTable()
	for _, p := range []evtchn.Port{3, 9} {
		if err := tab.Add(p, nil); err != nil {
			t.Fatal(err)
		}
	}
	errs := make(chan error, 2)
	for _, p := range []evtchn.Port{3, 9} {
		go func() {
			_, err := tab.Wait(context.Background(), p, 0)
			errs <- err
		}()
	}
	time.Sleep(10 * time.Millisecond) // let them block (Reset must wake them either way)
	if e := tab.Epoch(); e != 0 {
		t.Fatalf("epoch %d before any Reset, want 0", e)
	}
	if n := tab.Reset(); n != 2 {
		t.Fatalf("Reset forgot %d ports, want 2", n)
	}
	for i := 0; i < 2; i++ {
		select {
		case err := <-errs:
			if !errors.Is(err, evtchn.ErrResumed) || !errors.Is(err, evtchn.ErrClosed) {
				t.Fatalf("waiter woke with %v, want ErrResumed and ErrClosed", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("a waiter was not woken by Reset")
		}
	}
	if tab.Len() != 0 {
		t.Fatalf("%d ports left after Reset", tab.Len())
	}
	if e := tab.Epoch(); e != 1 {
		t.Fatalf("epoch %d after one Reset, want 1", e)
	}
	if err := tab.Check(3); !errors.Is(err, evtchn.ErrBadPort) {
		t.Fatalf("Check of a forgotten port: %v, want ErrBadPort", err)
	}
	if err := tab.Add(3, nil); err != nil {
		t.Fatalf("binding a forgotten port number again: %v", err)
	}
}
