package boot

import (
	"strings"
	"testing"
)

// fakeConsole is the ring page and xenconsoled as a test plays them, on a
// fake clock that advances by step at every yield.
type fakeConsole struct {
	data       []byte
	cons, prod uint32
	clock      int64
	step       int64
	kicks      int
	yields     int
	consumer   func(f *fakeConsole) // runs at every yield
	got        []byte               // what the consumer took
}

func (f *fakeConsole) take(max int) {
	for ; max > 0 && f.cons != f.prod; max-- {
		f.got = append(f.got, f.data[f.cons%uint32(len(f.data))])
		f.cons++
	}
}

func newFakeConsole(t *testing.T, size int, consumer func(*fakeConsole)) (*fakeConsole, *consoleOut) {
	t.Helper()
	f := &fakeConsole{data: make([]byte, size), step: 50_000, consumer: consumer}
	o := new(consoleOut)
	err := o.init(f.data, &f.cons, &f.prod,
		func() int64 { return f.clock },
		func() { f.kicks++ },
		func() {
			f.yields++
			f.clock += f.step
			if f.consumer != nil {
				f.consumer(f)
			}
		})
	if err != nil {
		t.Fatal(err)
	}
	return f, o
}

// TestConsoleOutPolicy checks what a backend that stops, slows down,
// comes back or corrupts the indices costs the guest. The old printk
// waited up to 10,001 EVTCHNOP_send + SCHEDOP_yield for every byte and
// never marked the ring dead: it fails the stalled and slow cases by four
// orders of magnitude, and the corrupt ones (it kept writing).
func TestConsoleOutPolicy(t *testing.T) {
	const size, lines, lineLen = 2048, 100, 80
	line := strings.Repeat("x", lineLen-1) + "\n"
	budgetYields := int(consoleLineBudget / 50_000)
	tests := []struct {
		name     string
		prod     uint32               // out_prod as we left it
		lag      int64                // out_prod - out_cons as the backend left it
		consumer func(f *fakeConsole) // xenconsoled
		dead     bool                 // the ring must be found corrupt
		check    func(*testing.T, *fakeConsole, *consoleOut)
	}{
		{
			name: "healthy backend", prod: size, lag: size,
			consumer: func(f *fakeConsole) { f.take(size) },
			check: func(t *testing.T, f *fakeConsole, o *consoleOut) {
				f.take(size)
				if o.dropped != 0 || len(f.got) != size+lines*lineLen {
					t.Errorf("dropped %d, delivered %d", o.dropped, len(f.got))
				}
			},
		},
		{
			name: "stalled backend", prod: 7, lag: size,
			check: func(t *testing.T, f *fakeConsole, o *consoleOut) {
				// One line's budget in all, then nothing per byte.
				if f.yields > budgetYields+1 || f.kicks > 1 || f.clock > consoleLineBudget+f.step {
					t.Errorf("%d yields, %d kicks, %d ns for %d lines", f.yields, f.kicks, f.clock, lines)
				}
				if o.dropped != lines*lineLen || o.stalls != 1 {
					t.Errorf("dropped %d, stalls %d", o.dropped, o.stalls)
				}
			},
		},
		{
			name: "slow backend", prod: 0xfffffff0, lag: size,
			consumer: func(f *fakeConsole) {
				// a line takes the backend two budgets
				pace := consoleLineBudget / (lineLen / 2) / f.step * f.step
				if f.clock%pace == 0 {
					f.take(1)
				}
			},
			check: func(t *testing.T, f *fakeConsole, o *consoleOut) {
				// At most one budget per line, whatever the pace.
				if f.clock > lines*(consoleLineBudget+f.step) {
					t.Errorf("%d ns for %d lines", f.clock, lines)
				}
				if o.stalls == 0 {
					t.Error("never stalled")
				}
			},
		},
		{
			name: "out_cons past out_prod", prod: 10, lag: -5, dead: true,
		},
		{
			name: "out_cons far behind", prod: 10, lag: size + 1, dead: true,
		},
		{
			name: "out_cons wildly off", prod: 0, lag: 0x80000000, dead: true,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f, o := newFakeConsole(t, size, tc.consumer)
			f.prod, f.cons = tc.prod, tc.prod-uint32(tc.lag)
			data := string(f.data)
			alive := true
			for range lines {
				for i := range len(line) {
					if alive = o.put(line[i]); !alive {
						break
					}
				}
				if !alive {
					break
				}
			}
			if tc.dead {
				if alive || o.put('x') {
					t.Fatal("corrupt ring not reported dead")
				}
				if f.yields != 0 || f.kicks != 0 || string(f.data) != data || f.prod != tc.prod {
					t.Fatalf("dead ring: %d yields, %d kicks, prod %d, data changed %v", f.yields, f.kicks, f.prod, string(f.data) != data)
				}
				return
			}
			if !alive {
				t.Fatal("ring reported dead")
			}
			tc.check(t, f, o)
		})
	}
}

// TestConsoleOutResumes: after a stall, output resumes once the backend
// has drained half the ring, and whole lines come through again.
func TestConsoleOutResumes(t *testing.T) {
	f, o := newFakeConsole(t, 64, nil)
	f.prod = 64 // full, and nobody reads
	for _, c := range []byte("lost\n") {
		o.put(c)
	}
	if o.stalls != 1 || o.dropped != 5 {
		t.Fatalf("stalls %d, dropped %d", o.stalls, o.dropped)
	}
	f.take(10) // not enough: still dropping, without waiting
	yields := f.yields
	for _, c := range []byte("lost too\n") {
		o.put(c)
	}
	if f.yields != yields || o.dropped != 14 {
		t.Fatalf("waited while stalled (%d yields) or wrote (dropped %d)", f.yields-yields, o.dropped)
	}
	f.take(64)
	f.got = nil
	for _, c := range []byte("back\n") {
		o.put(c)
	}
	f.take(64)
	if string(f.got) != "back\n" || o.stalled {
		t.Fatalf("got %q, stalled %v", f.got, o.stalled)
	}
}

func TestConsoleOutDrain(t *testing.T) {
	tests := []struct {
		name     string
		consumer func(*fakeConsole)
		want     bool
	}{
		{"drained", func(f *fakeConsole) { f.take(3) }, true},
		{"stuck", nil, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f, o := newFakeConsole(t, 64, tc.consumer)
			for _, c := range []byte("bye\n") {
				o.put(c)
			}
			if got := o.drain(1e8); got != tc.want || f.clock > 1e8+f.step {
				t.Fatalf("drain = %v after %d ns", got, f.clock)
			}
		})
	}
	f, o := newFakeConsole(t, 64, nil)
	f.cons = 1 // past prod
	if o.drain(1e9) || f.yields != 0 {
		t.Fatal("drained a corrupt ring")
	}
}

func TestConsoleOutNoAllocation(t *testing.T) {
	f, o := newFakeConsole(t, 64, func(f *fakeConsole) { f.cons = f.prod })
	allocs := testing.AllocsPerRun(1000, func() { o.put('x') })
	if allocs != 0 {
		t.Fatalf("%v allocations per byte", allocs)
	}
	f.cons = f.prod + 1
	if allocs := testing.AllocsPerRun(100, func() { o.put('x') }); allocs != 0 {
		t.Fatalf("%v allocations on a dead ring", allocs)
	}
}

func TestConsoleOutCorruptReport(t *testing.T) {
	f, o := newFakeConsole(t, 64, nil)
	if o.corrupt() != nil {
		t.Fatal("live ring reported corrupt")
	}
	f.prod, f.cons = 3, 9
	if o.put('x') {
		t.Fatal("corrupt ring accepted a byte")
	}
	if ce := o.corrupt(); ce == nil || ce.Prod != 3 || ce.Cons != 9 {
		t.Fatalf("corrupt() = %+v", ce)
	}
}
