// Package ring implements the xenstore shared ring of Xen's io/xs_wire.h
// (struct xenstore_domain_interface): two 1024-byte byte rings, one for
// requests and one for responses and watch events, with free-running
// uint32 producer and consumer indices, in a single 4096-byte page.
//
// A [Ring] is one side of the page: the client side produces requests and
// consumes responses, the server side the opposite. It moves whole
// [wire.Msg] values, waits for space or data through a [Notifier] and
// treats the page as hostile: inconsistent indices or oversized payloads
// yield errors wrapping [ErrCorrupt], never a panic or an endless loop.
package ring

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/gozen-dev/gozen/evtchn"
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
	ErrCorrupt = errors.New("xenstore ring: corrupt")
	// ErrClosed means the ring was closed locally.
	ErrClosed = errors.New("xenstore ring: closed")
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
// serialised so that messages never interleave.
type Ring struct {
	page []byte
	n    Notifier

	outData, outCons, outProd int // the ring we produce into
	inData, inCons, inProd    int // the ring we consume from

	gen atomic.Uint64 // newest notifier generation seen

	wmu, rmu sync.Mutex
	hdr      [wire.HeaderSize]byte // reader scratch, under rmu

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
		return nil, fmt.Errorf("xenstore ring: page of %d bytes, need %d", len(page), interfaceSize)
	}
	if uintptr(unsafe.Pointer(&page[0]))%4 != 0 {
		return nil, fmt.Errorf("xenstore ring: page is not 4-byte aligned")
	}
	if n == nil {
		return nil, fmt.Errorf("xenstore ring: nil notifier")
	}
	r := &Ring{page: page, n: n}
	if side == Client {
		r.outData, r.outCons, r.outProd = OffReq, OffReqCons, OffReqProd
		r.inData, r.inCons, r.inProd = OffRsp, OffRspCons, OffRspProd
	} else {
		r.outData, r.outCons, r.outProd = OffRsp, OffRspCons, OffRspProd
		r.inData, r.inCons, r.inProd = OffReq, OffReqCons, OffReqProd
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
// error wrapping ErrClosed. It does not touch the notifier or the page.
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

// wait blocks until a notification newer than g arrives.
func (r *Ring) wait(ctx context.Context, g uint64) error {
	ng, err := r.n.Wait(ctx, evtchn.Generation(g))
	if err != nil {
		if r.life.Err() != nil {
			return r.Err()
		}
		return fmt.Errorf("xenstore ring: waiting for peer: %w", err)
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

// WriteMsg writes m (header and payload) into the outgoing ring, waiting
// for room as needed, and notifies the peer. ctx is honoured until the
// first byte is written; after that the message is completed unless the
// ring is closed, since a partial message would desynchronise the stream.
func (r *Ring) WriteMsg(ctx context.Context, m wire.Msg) error {
	b, err := m.Marshal()
	if err != nil {
		return fmt.Errorf("xenstore ring: %w", err)
	}
	r.wmu.Lock()
	defer r.wmu.Unlock()
	if err := r.Err(); err != nil {
		return err
	}
	opCtx, done := r.opContext(ctx)
	defer done()
	waitCtx := opCtx
	dirty := false
	for len(b) > 0 {
		g := r.gen.Load()
		cons := r.Load(r.outCons)
		prod := r.Load(r.outProd)
		used := prod - cons
		if used > Size {
			err := fmt.Errorf("%w: outgoing ring has prod %d, cons %d", ErrCorrupt, prod, cons)
			r.setBroken(err)
			return err
		}
		if used == Size {
			if dirty {
				if err := r.n.Notify(); err != nil {
					return r.fail(fmt.Errorf("xenstore ring: notify: %w", err), waitCtx != opCtx)
				}
				dirty = false
			}
			if err := r.wait(waitCtx, g); err != nil {
				return r.fail(err, waitCtx != opCtx)
			}
			continue
		}
		off := prod % Size
		n := min(Size-used, Size-off, uint32(len(b)))
		copy(r.page[r.outData+int(off):], b[:n])
		r.Store(r.outProd, prod+n)
		b = b[n:]
		dirty = true
		waitCtx = r.life // committed: finish the message
	}
	if err := r.n.Notify(); err != nil {
		return fmt.Errorf("xenstore ring: notify: %w", err)
	}
	return nil
}

// fail records err as fatal if a message was partially transferred.
func (r *Ring) fail(err error, partial bool) error {
	if partial {
		err = fmt.Errorf("xenstore ring: message partially transferred: %w", err)
		r.setBroken(err)
	}
	return err
}

// ReadMsg reads the next message from the incoming ring, waiting for data
// as needed, and notifies the peer that room was made. A header announcing
// more than wire.PayloadMax bytes breaks the ring (ErrCorrupt). ctx is
// honoured until the first byte is consumed.
func (r *Ring) ReadMsg(ctx context.Context) (wire.Msg, error) {
	r.rmu.Lock()
	defer r.rmu.Unlock()
	if err := r.Err(); err != nil {
		return wire.Msg{}, err
	}
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
			return m, fmt.Errorf("xenstore ring: notify: %w", err)
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
		cons := r.Load(r.inCons)
		prod := r.Load(r.inProd)
		avail := prod - cons
		if avail > Size {
			err := fmt.Errorf("%w: incoming ring has prod %d, cons %d", ErrCorrupt, prod, cons)
			r.setBroken(err)
			return err
		}
		if avail == 0 {
			if st.dirty {
				if err := r.n.Notify(); err != nil {
					return r.fail(fmt.Errorf("xenstore ring: notify: %w", err), st.started)
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
			continue
		}
		off := cons % Size
		n := min(avail, Size-off, uint32(len(buf)))
		copy(buf, r.page[r.inData+int(off):r.inData+int(off+n)])
		r.Store(r.inCons, cons+n)
		buf = buf[n:]
		st.started, st.dirty = true, true
	}
	return nil
}
