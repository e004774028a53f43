// Package bytering implements the byte ring Xen's xenstore interface
// (io/xs_wire.h, struct xenstore_domain_interface) and console interface
// (io/console.h, struct xencons_interface) are made of: a data area of a
// power-of-two size with free-running uint32 producer and consumer
// indices, the position in the area being the index modulo the size.
//
// A [Writer] is the producing end of one such ring and a [Reader] the
// consuming end. Neither blocks: they move what fits and report how much;
// waiting for the peer (event channels, deadlines, yielding) is the
// caller's policy. The indices and the data live in memory shared with a
// peer that may be hostile, so every operation loads each index once,
// checks it and only then uses it: a producer-consumer distance beyond the
// ring's size (as Linux's hvc_xen and xenbus treat it) is corruption,
// reported as a [*CorruptError] wrapping [ErrCorrupt], and the end is then
// dead: every later call fails with the same error and touches nothing.
//
// Both ends allocate nothing after their Init, so they can be used where
// allocation is forbidden (a runtime's print path). A Writer or Reader is
// for one goroutine at a time; only Err may be called concurrently.
package bytering

import (
	"errors"
	"fmt"
	"sync/atomic"
)

// MaxSize is the largest data area an end accepts. With free-running
// uint32 indices the distance prod-cons must be able to tell a full ring
// from corruption, which needs the size to be at most half the index
// space.
const MaxSize = 1 << 30

// ErrCorrupt is wrapped by every error reporting inconsistent indices.
var ErrCorrupt = errors.New("bytering: corrupt ring indices")

// CorruptError reports the indices that broke a ring. It wraps ErrCorrupt.
type CorruptError struct {
	// Writer is true for the producing end, false for the consuming end.
	Writer bool
	// Prod and Cons are the indices as loaded from the shared memory.
	Prod, Cons uint32
	// Size is the size of the ring's data area.
	Size uint32
}

// Error describes the indices.
func (e *CorruptError) Error() string {
	end := "reader"
	if e.Writer {
		end = "writer"
	}
	return fmt.Sprintf("bytering: corrupt ring at the %s: prod %d, cons %d: %d outstanding in a ring of %d",
		end, e.Prod, e.Cons, e.Prod-e.Cons, e.Size)
}

// Unwrap returns ErrCorrupt.
func (e *CorruptError) Unwrap() error { return ErrCorrupt }

// end is what a Writer and a Reader share: the data area, the two
// indices, and the death certificate.
type end struct {
	data       []byte
	cons, prod *uint32
	mask       uint32

	cerr CorruptError                 // filled in once, before dead is set
	dead atomic.Pointer[CorruptError] // &cerr once corrupt
}

func (e *end) init(data []byte, cons, prod *uint32, writer bool) error {
	n := len(data)
	switch {
	case n == 0 || n&(n-1) != 0 || n > MaxSize:
		return fmt.Errorf("bytering: data area of %d bytes, want a power of two up to %d", n, MaxSize)
	case cons == nil || prod == nil:
		return fmt.Errorf("bytering: nil index")
	case cons == prod:
		return fmt.Errorf("bytering: prod and cons are the same word")
	}
	e.data, e.cons, e.prod, e.mask = data, cons, prod, uint32(n-1)
	e.cerr = CorruptError{Writer: writer, Size: uint32(n)}
	e.dead.Store(nil)
	return nil
}

// load loads both indices once and checks them: it returns prod, cons and
// the outstanding count prod-cons, or the error that killed the end.
func (e *end) load() (prod, cons, used uint32, err error) {
	if c := e.dead.Load(); c != nil {
		return 0, 0, 0, c
	}
	if e.data == nil {
		return 0, 0, 0, errUninit
	}
	// Our own index first, the peer's last, for the freshest view of the
	// one that moves; either order is safe, since only the distance is
	// used and it is checked. The load of prod (reading) or cons
	// (writing) comes before the data is touched, as ring.h's rmb/mb ask.
	if e.cerr.Writer {
		prod = atomic.LoadUint32(e.prod)
		cons = atomic.LoadUint32(e.cons)
	} else {
		cons = atomic.LoadUint32(e.cons)
		prod = atomic.LoadUint32(e.prod)
	}
	used = prod - cons
	if used > e.mask+1 {
		e.cerr.Prod, e.cerr.Cons = prod, cons
		e.dead.Store(&e.cerr)
		return 0, 0, 0, &e.cerr
	}
	return prod, cons, used, nil
}

var errUninit = errors.New("bytering: ring not initialised")

func (e *end) err() error {
	if c := e.dead.Load(); c != nil {
		return c
	}
	return nil
}

// Writer is the producing end of a byte ring.
type Writer struct{ e end }

// NewWriter returns the producing end of the ring whose data area is data
// and whose indices are the words cons and prod (all in shared memory).
// len(data) must be a power of two up to MaxSize; the indices are used as
// found. See [Writer.Init] for use without allocation.
func NewWriter(data []byte, cons, prod *uint32) (*Writer, error) {
	w := new(Writer)
	if err := w.Init(data, cons, prod); err != nil {
		return nil, err
	}
	return w, nil
}

// Init makes w the producing end of the ring described as for NewWriter,
// reviving it if it was dead.
func (w *Writer) Init(data []byte, cons, prod *uint32) error {
	return w.e.init(data, cons, prod, true)
}

// Size returns the size of the data area.
func (w *Writer) Size() int { return len(w.e.data) }

// Err returns the error that killed the ring, or nil while it is usable.
func (w *Writer) Err() error { return w.e.err() }

// Free returns how many bytes can be written now.
func (w *Writer) Free() (int, error) {
	_, _, used, err := w.e.load()
	if err != nil {
		return 0, err
	}
	return int(w.e.mask + 1 - used), nil
}

// Pending returns how many written bytes the peer has not consumed yet.
func (w *Writer) Pending() (int, error) {
	_, _, used, err := w.e.load()
	return int(used), err
}

// Put copies as much of p as fits into the ring, publishes it by moving
// prod (after the data, with a release store) and returns how much it
// wrote; 0 with a nil error means the ring is full. It never blocks.
func (w *Writer) Put(p []byte) (int, error) {
	prod, _, used, err := w.e.load()
	if err != nil {
		return 0, err
	}
	n := min(uint32(len(p)), w.e.mask+1-used)
	for done := uint32(0); done < n; {
		off := (prod + done) & w.e.mask
		done += uint32(copy(w.e.data[off:], p[done:n]))
	}
	if n > 0 {
		atomic.StoreUint32(w.e.prod, prod+n)
	}
	return int(n), nil
}

// Reader is the consuming end of a byte ring.
type Reader struct{ e end }

// NewReader returns the consuming end of the ring whose data area is data
// and whose indices are the words cons and prod (all in shared memory).
// len(data) must be a power of two up to MaxSize; the indices are used as
// found. See [Reader.Init] for use without allocation.
func NewReader(data []byte, cons, prod *uint32) (*Reader, error) {
	r := new(Reader)
	if err := r.Init(data, cons, prod); err != nil {
		return nil, err
	}
	return r, nil
}

// Init makes r the consuming end of the ring described as for NewReader,
// reviving it if it was dead.
func (r *Reader) Init(data []byte, cons, prod *uint32) error {
	return r.e.init(data, cons, prod, false)
}

// Size returns the size of the data area.
func (r *Reader) Size() int { return len(r.e.data) }

// Err returns the error that killed the ring, or nil while it is usable.
func (r *Reader) Err() error { return r.e.err() }

// Avail returns how many bytes wait to be read.
func (r *Reader) Avail() (int, error) {
	_, _, used, err := r.e.load()
	return int(used), err
}

// Take copies up to len(p) waiting bytes out of the ring, then hands their
// room back to the peer by moving cons, and returns how many it copied; 0
// with a nil error means the ring is empty. It never blocks.
func (r *Reader) Take(p []byte) (int, error) {
	_, cons, used, err := r.e.load()
	if err != nil {
		return 0, err
	}
	n := min(uint32(len(p)), used)
	for done := uint32(0); done < n; {
		off := (cons + done) & r.e.mask
		done += uint32(copy(p[done:n], r.e.data[off:]))
	}
	if n > 0 {
		atomic.StoreUint32(r.e.cons, cons+n)
	}
	return int(n), nil
}
