package boot

import "github.com/gozen-dev/gozen/internal/bytering"

// consoleLineBudget bounds, in nanoseconds, how long one line of console
// output may wait in total for xenconsoled to make room in the ring. At
// 1 s, a burst of output (apps/cpupolicy's policy) lost lines in a tier-B
// run on a loaded 2-core host, where dom0's xenconsoled fell seconds
// behind; a backend that stopped for good still costs one budget only.
const consoleLineBudget = int64(5e9)

// consoleOut is the output side of the PV console ring (io/console.h's
// out[], out_cons, out_prod) with its policy for a backend that does not
// keep up. It runs in the runtime's print path: it allocates nothing and
// only calls the functions it was given, which must not allocate either.
//
//   - A byte that does not fit waits for room: the backend is notified
//     once, then the CPU is yielded until room appears, as long as the
//     line's budget (consoleLineBudget in total per line) lasts.
//   - When the budget runs out the ring is stalled: output is dropped,
//     without waiting, until the backend has freed half the ring; so a
//     backend that stopped costs one budget, then almost nothing per
//     byte, and a slow one at most one budget per line.
//   - Indices that claim more than the ring holds (out_cons moved past
//     out_prod, or lagging by more than the size) are corruption, as in
//     Linux's hvc_xen: put reports false and the ring is never written
//     again (bytering keeps it dead); the caller moves to another output.
type consoleOut struct {
	w     bytering.Writer
	now   func() int64 // a monotonic clock in ns
	kick  func()       // notify the backend
	yield func()       // give the CPU away for a moment

	budget  int64 // ns a line may wait; consoleLineBudget
	waited  int64 // ns the current line has waited
	stalled bool  // dropping until half the ring is free

	dropped, stalls uint64
}

// init sets o up over the ring's data area and indices.
func (o *consoleOut) init(data []byte, cons, prod *uint32, now func() int64, kick, yield func()) error {
	if err := o.w.Init(data, cons, prod); err != nil {
		return err
	}
	o.now, o.kick, o.yield = now, kick, yield
	o.budget, o.waited, o.stalled = consoleLineBudget, 0, false
	return nil
}

// put writes c, waiting for room as the policy allows; it reports false
// when the ring is dead (c was not written and nothing will be).
func (o *consoleOut) put(c byte) bool {
	ok := o.put1(c)
	if c == '\n' {
		o.waited = 0
	}
	return ok
}

func (o *consoleOut) put1(c byte) bool {
	if o.stalled {
		free, err := o.w.Free()
		if err != nil {
			return false
		}
		if free < o.w.Size()/2 {
			o.dropped++
			return true
		}
		o.stalled = false
	}
	b := [1]byte{c}
	var start int64
	waiting := false
	for {
		n, err := o.w.Put(b[:])
		if err != nil {
			return false
		}
		if n == 1 {
			if waiting {
				o.waited += o.now() - start
			}
			return true
		}
		t := o.now()
		if !waiting {
			waiting, start = true, t
			o.kick()
		}
		if o.waited+t-start >= o.budget {
			o.waited += t - start
			o.stalled = true
			o.stalls++
			o.dropped++
			return true
		}
		o.yield()
	}
}

// drain waits, for at most limit ns, until the backend has consumed
// everything written; it reports whether it did. A stalled or dead ring
// is not waited for.
func (o *consoleOut) drain(limit int64) bool {
	o.kick()
	start := o.now()
	for {
		n, err := o.w.Pending()
		switch {
		case err != nil:
			return false
		case n == 0:
			return true
		case o.stalled || o.now()-start >= limit:
			return false
		}
		o.yield()
	}
}

// corrupt returns what killed the ring, or nil while it lives.
func (o *consoleOut) corrupt() *bytering.CorruptError {
	ce, _ := o.w.Err().(*bytering.CorruptError)
	return ce
}
