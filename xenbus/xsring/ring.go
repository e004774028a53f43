// Package xsring implements the xenstore shared ring of Xen's io/xs_wire.h
// (struct xenstore_domain_interface): two 1024-byte byte rings, one for
// requests and one for responses and watch events, with free-running
// uint32 producer and consumer indices, in a single 4096-byte page.
//
// A [Ring] is one side of the page: the client side produces requests and
// consumes responses, the server side the opposite. It moves whole
// [wire.Msg] values, waits for space or data through a [Notifier] and
// treats the page as hostile: inconsistent indices or oversized payloads
// yield errors wrapping [ErrCorrupt], never a panic or an endless loop.
package xsring

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"unsafe"

	"github.com/gozen-dev/gozen/evtchn"
	"github.com/gozen-dev/gozen/internal/bytering"
	"github.com/gozen-dev/gozen/xenbus/wire"
)

// Size is XENSTORE_RING_SIZE, the size of each of the two byte rings.
const Size = 1024

// PageSize is the size of the shared page holding the interface.
const PageSize = 4096

// Byte offsets of the fields of struct xenstore_domain_interface.
const (
	OffReq            = 0           // char req[1024]
	OffRsp            = Size        // char rsp[1024]
	OffReqCons        = 2 * Size    // XENSTORE_RING_IDX req_cons
	OffReqProd        = 2*Size + 4  // XENSTORE_RING_IDX req_prod
	OffRspCons        = 2*Size + 8  // XENSTORE_RING_IDX rsp_cons
	OffRspProd        = 2*Size + 12 // XENSTORE_RING_IDX rsp_prod
	OffServerFeatures = 2*Size + 16 // uint32_t server_features
	OffConnection     = 2*Size + 20 // uint32_t connection
	OffError          = 2*Size + 24 // uint32_t error
	OffEvtchnPort     = 2*Size + 28 // uint32_t evtchn_port
	interfaceSize     = OffEvtchnPort + 4
)

// Values of the server_features, connection and error fields.
const (
	// FeatureReconnection is XENSTORE_SERVER_FEATURE_RECONNECTION.
	FeatureReconnection = 1
	// FeatureError is XENSTORE_SERVER_FEATURE_ERROR: the error field is
	// maintained.
	FeatureError = 2
	// Connected is XENSTORE_CONNECTED, the steady state.
	Connected = 0
	// Reconnect is XENSTORE_RECONNECT: a reconnection is in progress.
	Reconnect = 1
	// ErrorNone is XENSTORE_ERROR_NONE.
	ErrorNone = 0
	// ErrorComm is XENSTORE_ERROR_COMM, a communication problem.
	ErrorComm = 1
	// ErrorRingIdx is XENSTORE_ERROR_RINGIDX, an invalid ring index.
	ErrorRingIdx = 2
	// ErrorProto is XENSTORE_ERROR_PROTO, a protocol violation.
	ErrorProto = 3
)

// Errors of this package; they are wrapped with context.
var (
	// ErrCorrupt means the peer broke the ring protocol (indices out of
	// range, payload too long). The ring cannot be used any more.
	ErrCorrupt = errors.New("xsring: corrupt")
	// ErrClosed means the ring was closed locally.
	ErrClosed = errors.New("xsring: closed")
	// ErrDetached means a WriteMsg returned (its context ended) with its
	// message partly written; the rest is written in the background.
	ErrDetached = errors.New("xsring: message left to finish in the background")
)

// Notifier is the notification channel between the two sides of a ring,
// in the guest an event channel (see [EventChannel]). Notify signals the
// peer; Wait blocks until the local generation exceeds seen, with the
// semantics of [evtchn.Events.Wait].
type Notifier interface {
	// Notify signals the other side.
	Notify() error
	// Wait blocks until a notification newer than seen arrived and
	// returns the new generation.
	Wait(ctx context.Context, seen evtchn.Generation) (evtchn.Generation, error)
}

type eventChannel struct {
	ev   evtchn.Events
	port evtchn.Port
}

// EventChannel adapts an event-channel port of ev into a Notifier. The
// guest's xenstore port (HVM_PARAM_STORE_EVTCHN) is already bound, so
// nothing else is needed.
func EventChannel(ev evtchn.Events, port evtchn.Port) Notifier {
	return eventChannel{ev, port}
}

// Notify signals the port's remote end.
func (e eventChannel) Notify() error { return e.ev.Notify(e.port) }

// Wait waits for a notification on the port newer than seen.
func (e eventChannel) Wait(ctx context.Context, seen evtchn.Generation) (evtchn.Generation, error) {
	return e.ev.Wait(ctx, e.port, seen)
}

// Side says which end of the page a Ring is.
type Side int

const (
	// Client produces requests and consumes responses (the guest).
	Client Side = iota
	// Server consumes requests and produces responses (xenstored).
	Server
)

// Ring is one side of a xenstore page. WriteMsg and ReadMsg may be called
// concurrently with each other; concurrent writers (or readers) are
// serialised so that messages never interleave, and a caller waiting for
// its turn gives up when its context ends.
type Ring struct {
	page []byte
	n    Notifier

	outCons, outProd int // the ring we produce into
	inCons, inProd   int // the ring we consume from
	out              bytering.Writer
	in               bytering.Reader

	gen atomic.Uint64 // newest notifier generation seen

	wlock, rlock chan struct{}         // one token each: the writer's and reader's turn
	hdr          [wire.HeaderSize]byte // reader scratch, under rlock

	life   context.Context
	cancel context.CancelFunc
	broken atomic.Pointer[error]
}

// New returns side's view of the xenstore interface in page, which must be
// at least the size of struct xenstore_domain_interface (a whole page in
// practice) and 4-byte aligned. The page is not reset: the indices found in
// it are the current state (as after boot, where xenstored set them up).
func New(page []byte, side Side, n Notifier) (*Ring, error) {
	if len(page) < interfaceSize {
		return nil, fmt.Errorf("xsring: page of %d bytes, need %d", len(page), interfaceSize)
	}
	if uintptr(unsafe.Pointer(&page[0]))%4 != 0 {
		return nil, fmt.Errorf("xsring: page is not 4-byte aligned")
	}
	if n == nil {
		return nil, fmt.Errorf("xsring: nil notifier")
	}
	r := &Ring{page: page, n: n, wlock: make(chan struct{}, 1), rlock: make(chan struct{}, 1)}
	outData, inData := OffReq, OffRsp
	r.outCons, r.outProd, r.inCons, r.inProd = OffReqCons, OffReqProd, OffRspCons, OffRspProd
	if side == Server {
		outData, inData = OffRsp, OffReq
		r.outCons, r.outProd, r.inCons, r.inProd = OffRspCons, OffRspProd, OffReqCons, OffReqProd
	}
	if err := r.out.Init(page[outData:outData+Size], r.word(r.outCons), r.word(r.outProd)); err != nil {
		return nil, fmt.Errorf("xsring: %w", err)
	}
	if err := r.in.Init(page[inData:inData+Size], r.word(r.inCons), r.word(r.inProd)); err != nil {
		return nil, fmt.Errorf("xsring: %w", err)
	}
	r.life, r.cancel = context.WithCancel(context.Background())
	return r, nil
}

func (r *Ring) word(off int) *uint32 {
	return (*uint32)(unsafe.Pointer(&r.page[off]))
}

// Load atomically reads the uint32 field at byte offset off (one of the
// Off* constants).
func (r *Ring) Load(off int) uint32 { return atomic.LoadUint32(r.word(off)) }

// Store atomically writes the uint32 field at byte offset off (one of the
// Off* constants).
func (r *Ring) Store(off int, v uint32) { atomic.StoreUint32(r.word(off), v) }

// Close makes pending and future WriteMsg and ReadMsg calls fail with an
// error wrapping ErrClosed; a message being finished in the background
// (see WriteMsg) is abandoned. It does not touch the notifier or the page.
func (r *Ring) Close() error {
	r.setBroken(fmt.Errorf("%w", ErrClosed))
	r.cancel()
	return nil
}

func (r *Ring) setBroken(err error) {
	r.broken.CompareAndSwap(nil, &err)
}

// Err returns the error that made the ring unusable, or nil.
func (r *Ring) Err() error {
	if p := r.broken.Load(); p != nil {
		return *p
	}
	return nil
}

// corrupt turns an error of the byte ring into a fatal one of the ring.
func (r *Ring) corrupt(which string, err error) error {
	if errors.Is(err, bytering.ErrCorrupt) {
		err = fmt.Errorf("%w: %s ring: %w", ErrCorrupt, which, err)
	} else {
		err = fmt.Errorf("xsring: %s ring: %w", which, err)
	}
	r.setBroken(err)
	return r.Err()
}

// wait blocks until a notification newer than g arrives.
func (r *Ring) wait(ctx context.Context, g uint64) error {
	ng, err := r.n.Wait(ctx, evtchn.Generation(g))
	if err != nil {
		if r.life.Err() != nil {
			return r.Err()
		}
		return fmt.Errorf("xsring: waiting for peer: %w", err)
	}
	for {
		old := r.gen.Load()
		if uint64(ng) <= old || r.gen.CompareAndSwap(old, uint64(ng)) {
			return nil
		}
	}
}

// opContext merges the caller's ctx with the ring's lifetime.
func (r *Ring) opContext(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(r.life, cancel)
	return ctx, func() { stop(); cancel() }
}

// acquire takes the turn token of lock, giving up when ctx ends or the
// ring dies.
func (r *Ring) acquire(ctx context.Context, lock chan struct{}, what string) error {
	if err := r.Err(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("xsring: %s: %w", what, err)
	}
	select {
	case lock <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("xsring: %s: waiting for an earlier message: %w", what, ctx.Err())
	case <-r.life.Done():
		return r.Err()
	}
	if err := r.Err(); err != nil {
		<-lock
		return err
	}
	return nil
}

// WriteMsg writes m (header and payload) into the outgoing ring, waiting
// for room as needed, and notifies the peer. It returns when ctx ends,
// whatever the state of the ring:
//
//   - if no byte of m was written, with an error wrapping ctx.Err(), and m
//     is not sent;
//   - if part of m was written, with an error wrapping both ctx.Err() and
//     [ErrDetached]: the rest of m is then written in the background (the
//     next writer waits for it, within its own context), since half a
//     message would desynchronise the stream. m reaches the peer unless
//     the ring is closed or breaks meanwhile (which Err then says).
func (r *Ring) WriteMsg(ctx context.Context, m wire.Msg) error {
	b, err := m.Marshal()
	if err != nil {
		return fmt.Errorf("xsring: %w", err)
	}
	if err := r.acquire(ctx, r.wlock, "write"); err != nil {
		return err
	}
	opCtx, done := r.opContext(ctx)
	n, err := r.write(opCtx, b)
	done()
	switch {
	case err == nil:
		<-r.wlock
		return nil
	case n == 0 || r.Err() != nil:
		<-r.wlock
		return err
	}
	// The caller's context ended with the message partly written: keep
	// the turn and finish it, waiting on the ring's life only.
	go func() {
		defer func() { <-r.wlock }()
		if _, err := r.write(r.life, b[n:]); err != nil {
			r.setBroken(fmt.Errorf("xsring: message partially transferred: %w", err))
		}
	}()
	return fmt.Errorf("%w (%d of %d bytes written): %w", ErrDetached, n, len(b), err)
}

// write writes b into the outgoing ring, notifying the peer when the ring
// is full and when done, and returns how many bytes it wrote. It returns
// early only with an error: ctx ended, the notifier failed, or the ring
// is corrupt (the ring is then broken).
func (r *Ring) write(ctx context.Context, b []byte) (int, error) {
	written, dirty := 0, false
	for written < len(b) {
		g := r.gen.Load()
		n, err := r.out.Put(b[written:])
		if err != nil {
			return written, r.corrupt("outgoing", err)
		}
		if n > 0 {
			written += n
			dirty = true
			continue
		}
		if dirty {
			if err := r.n.Notify(); err != nil {
				return written, r.fail(fmt.Errorf("xsring: notify: %w", err), true)
			}
			dirty = false
		}
		if err := r.wait(ctx, g); err != nil {
			return written, err
		}
	}
	if err := r.n.Notify(); err != nil {
		return written, r.fail(fmt.Errorf("xsring: notify: %w", err), written > 0)
	}
	return written, nil
}

// fail records err as fatal if a message was partially transferred.
func (r *Ring) fail(err error, partial bool) error {
	if partial {
		err = fmt.Errorf("xsring: message partially transferred: %w", err)
		r.setBroken(err)
	}
	return err
}

// ReadMsg reads the next message from the incoming ring, waiting for data
// as needed, and notifies the peer that room was made. A header announcing
// more than wire.PayloadMax bytes breaks the ring (ErrCorrupt). ctx is
// honoured until the first byte is consumed; after that the message is
// read to its end unless the ring is closed. A reader waiting for an
// earlier ReadMsg to finish gives up when its ctx ends.
func (r *Ring) ReadMsg(ctx context.Context) (wire.Msg, error) {
	if err := r.acquire(ctx, r.rlock, "read"); err != nil {
		return wire.Msg{}, err
	}
	defer func() { <-r.rlock }()
	opCtx, done := r.opContext(ctx)
	defer done()
	st := readState{ctx: opCtx}
	if err := r.readFull(&st, r.hdr[:]); err != nil {
		return wire.Msg{}, err
	}
	h, _ := wire.ParseHeader(r.hdr[:])
	if err := h.Check(); err != nil {
		err = fmt.Errorf("%w: %w", ErrCorrupt, err)
		r.setBroken(err)
		return wire.Msg{}, err
	}
	m := wire.Msg{Header: h, Payload: make([]byte, h.Len)}
	if err := r.readFull(&st, m.Payload); err != nil {
		return wire.Msg{}, err
	}
	if st.dirty {
		if err := r.n.Notify(); err != nil {
			return m, fmt.Errorf("xsring: notify: %w", err)
		}
	}
	return m, nil
}

type readState struct {
	ctx     context.Context
	started bool // a byte of the message was consumed
	dirty   bool // consumed since the last notification
}

func (r *Ring) readFull(st *readState, buf []byte) error {
	for len(buf) > 0 {
		g := r.gen.Load()
		n, err := r.in.Take(buf)
		if err != nil {
			return r.corrupt("incoming", err)
		}
		if n > 0 {
			buf = buf[n:]
			st.started, st.dirty = true, true
			continue
		}
		if st.dirty {
			if err := r.n.Notify(); err != nil {
				return r.fail(fmt.Errorf("xsring: notify: %w", err), st.started)
			}
			st.dirty = false
		}
		ctx := st.ctx
		if st.started {
			ctx = r.life
		}
		if err := r.wait(ctx, g); err != nil {
			return r.fail(err, st.started)
		}
	}
	return nil
}
