package v4v

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gozen-dev/gozen/domid"
	"github.com/gozen-dev/gozen/internal/deadline"
)

// DefaultRingSize is the data-area size Listen uses when Config.RingSize is
// zero: four pages, header included.
const DefaultRingSize = 4*PageSize - RingHeaderSize

// busyRetry is how long a blocking send waits before retrying when the
// hypervisor could not queue a space notification (ErrBusy), since no
// VIRQ_ARGO will come for it then.
const busyRetry = 2 * time.Millisecond

// Config describes an endpoint: the ring it registers and the message type
// its WriteTo sends.
type Config struct {
	// Hypervisor is the local domain's Argo.
	Hypervisor Hypervisor
	// Port is the local port: the ring's port and the source port of sends.
	Port Port
	// Partner is the only domain allowed to send to the ring, or domid.Any
	// for every domain. The zero value is domain 0.
	Partner domid.ID
	// RingSize is the size of the ring's data area in bytes: a multiple
	// of SlotSize from MinRingSize to MaxRingSize; zero means
	// DefaultRingSize. The largest message it takes is MaxPayload(RingSize).
	RingSize int
	// MessageType is the type WriteTo sends with (Send and TrySend take
	// one per call).
	MessageType uint32
}

// Endpoint is a registered ring and the sending side of one port: a
// net.PacketConn whose addresses are [Addr]. Reads consume messages from
// the ring (any message type; ReadMsg reports it); a message longer than
// the read buffer is truncated, the rest discarded, as for UDP. Writes
// block while the destination ring is full. Methods are safe for
// concurrent use.
type Endpoint struct {
	hv      Hypervisor
	cfg     Config
	ring    *Ring
	rmu     sync.Mutex // serializes ring consumption
	seen    atomic.Uint64
	rdl     *deadline.Deadline
	wdl     *deadline.Deadline
	done    context.Context
	cancel  context.CancelFunc
	closeMu sync.Mutex
	closed  bool
}

var _ net.PacketConn = (*Endpoint)(nil)

// Listen allocates and registers the ring described by cfg and returns its
// endpoint.
func Listen(cfg Config) (*Endpoint, error) {
	if cfg.Hypervisor == nil {
		return nil, fmt.Errorf("v4v: listen: no hypervisor: %w", ErrInvalid)
	}
	if cfg.RingSize == 0 {
		cfg.RingSize = DefaultRingSize
	}
	if err := CheckRingSize(cfg.RingSize); err != nil {
		return nil, fmt.Errorf("v4v: listen on port %d: %w", cfg.Port, err)
	}
	r, err := cfg.Hypervisor.NewRing(cfg.RingSize)
	if err != nil {
		return nil, fmt.Errorf("v4v: listen on port %d: %w", cfg.Port, err)
	}
	if err := cfg.Hypervisor.RegisterRing(r, cfg.Port, cfg.Partner, 0); err != nil {
		return nil, fmt.Errorf("v4v: listen on port %d: %w", cfg.Port, err)
	}
	e := &Endpoint{hv: cfg.Hypervisor, cfg: cfg, ring: r, rdl: deadline.New(), wdl: deadline.New()}
	e.done, e.cancel = context.WithCancel(context.Background())
	return e, nil
}

// Reregister registers the ring again, as after a resume or migration.
// Messages in the ring and tx_ptr are kept.
func (e *Endpoint) Reregister() error {
	if err := e.hv.RegisterRing(e.ring, e.cfg.Port, e.cfg.Partner, 0); err != nil {
		return fmt.Errorf("v4v: re-register port %d: %w", e.cfg.Port, err)
	}
	return nil
}

// LocalAddr returns the endpoint's address (the domain is domid.Any if the
// hypervisor does not know the local domain id).
func (e *Endpoint) LocalAddr() net.Addr { return e.addr() }

func (e *Endpoint) addr() Addr { return Addr{Domain: e.hv.Domain(), Port: e.cfg.Port} }

// Partner returns the ring's partner domain (domid.Any for every domain).
func (e *Endpoint) Partner() domid.ID { return e.cfg.Partner }

// MaxPayload returns the largest message the endpoint's own ring takes.
func (e *Endpoint) MaxPayload() int { return MaxPayload(e.ring.Size()) }

// Close unregisters the ring and wakes blocked calls with net.ErrClosed.
func (e *Endpoint) Close() error {
	e.closeMu.Lock()
	if e.closed {
		e.closeMu.Unlock()
		return e.opErr("close", nil, net.ErrClosed)
	}
	e.closed = true
	e.closeMu.Unlock()
	e.cancel()
	e.rdl.Close()
	e.wdl.Close()
	if err := e.hv.UnregisterRing(e.cfg.Port, e.cfg.Partner); err != nil {
		return e.opErr("close", nil, err)
	}
	return nil
}

func (e *Endpoint) isClosed() bool {
	e.closeMu.Lock()
	defer e.closeMu.Unlock()
	return e.closed
}

// SetDeadline sets the read and write deadlines.
func (e *Endpoint) SetDeadline(t time.Time) error {
	e.rdl.Set(t)
	e.wdl.Set(t)
	return nil
}

// SetReadDeadline sets the deadline for ReadFrom, ReadMsg and Peek's wait,
// including calls already blocked.
func (e *Endpoint) SetReadDeadline(t time.Time) error { e.rdl.Set(t); return nil }

// SetWriteDeadline sets the deadline for WriteTo, including calls already
// blocked.
func (e *Endpoint) SetWriteDeadline(t time.Time) error { e.wdl.Set(t); return nil }

func (e *Endpoint) opErr(op string, dst net.Addr, err error) error {
	if err == nil {
		return nil
	}
	return &net.OpError{Op: op, Net: "v4v", Source: e.addr(), Addr: dst, Err: err}
}

// wait waits for VIRQ_ARGO past seen under ctx, which also ends at Close.
// retry reports that the wait ended because a deadline was replaced.
func (e *Endpoint) wait(ctx context.Context, seen uint64) (retry bool, err error) {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stop := context.AfterFunc(e.done, func() { cancel(net.ErrClosed) })
	defer stop()
	g, err := e.hv.Wait(ctx, seen)
	if err == nil {
		for {
			old := e.seen.Load()
			if g <= old || e.seen.CompareAndSwap(old, g) {
				break
			}
		}
		return false, nil
	}
	if ctx.Err() != nil {
		switch cause := context.Cause(ctx); {
		case errors.Is(cause, deadline.ErrChanged):
			return true, nil
		case cause != nil:
			return false, cause
		}
	}
	return false, err
}

// copyOut copies out the next message under the reader lock; a corrupt
// ring is flushed.
func (e *Endpoint) copyOut(p []byte, consume bool) (int, Message, error) {
	e.rmu.Lock()
	n, m, err := e.ring.CopyOut(p, consume)
	if errors.Is(err, ErrCorrupt) {
		e.ring.Flush()
		consume = true
	}
	e.rmu.Unlock()
	if consume && !errors.Is(err, ErrEmpty) {
		// Wake senders waiting for the space just freed. A failed notify
		// loses nothing here: the message is ours either way.
		_ = e.hv.Notify(nil)
	}
	return n, m, err
}

// next waits under ctx for a message, then copies it out.
func (e *Endpoint) next(ctx context.Context, p []byte, consume bool) (int, Message, error) {
	for {
		if e.isClosed() {
			return 0, Message{}, net.ErrClosed
		}
		seen := e.seen.Load()
		n, m, err := e.copyOut(p, consume)
		if !errors.Is(err, ErrEmpty) {
			return n, m, err
		}
		retry, err := e.wait(ctx, seen)
		if err != nil {
			return 0, Message{}, err
		}
		if retry {
			return 0, Message{}, deadline.ErrChanged
		}
	}
}

// readDeadline runs next under the read deadline, following its changes.
func (e *Endpoint) readDeadline(p []byte, consume bool) (int, Message, error) {
	for {
		n, m, err := e.next(e.rdl.Context(), p, consume)
		if !errors.Is(err, deadline.ErrChanged) {
			return n, m, err
		}
	}
}

// ReadMsg waits for the next message (until the read deadline), copies up
// to len(p) bytes of its payload into p and consumes it. It returns the
// number of bytes copied and the message's description: Len is the full
// payload length, so n < m.Len means the message was truncated.
func (e *Endpoint) ReadMsg(p []byte) (n int, m Message, err error) {
	n, m, err = e.readDeadline(p, true)
	return n, m, e.opErr("read", nil, err)
}

// ReadFrom implements net.PacketConn: ReadMsg, returning the source.
func (e *Endpoint) ReadFrom(p []byte) (int, net.Addr, error) {
	n, m, err := e.ReadMsg(p)
	if err != nil {
		return 0, nil, err
	}
	return n, m.Source, nil
}

// Peek waits until ctx ends (or the endpoint closes) for a message and
// describes it without consuming it.
func (e *Endpoint) Peek(ctx context.Context) (Message, error) {
	_, m, err := e.next(ctx, nil, false)
	return m, e.opErr("peek", nil, err)
}

// CopyOut is the non-blocking copy_out: it copies up to len(p) bytes of the
// next message's payload into p and, if consume, removes the message and
// notifies the hypervisor. It returns ErrEmpty if the ring is empty.
func (e *Endpoint) CopyOut(p []byte, consume bool) (int, Message, error) {
	if e.isClosed() {
		return 0, Message{}, e.opErr("read", nil, net.ErrClosed)
	}
	n, m, err := e.copyOut(p, consume)
	return n, m, e.opErr("read", nil, err)
}

func (e *Endpoint) src() Addr { return Addr{Domain: domid.Any, Port: e.cfg.Port} }

// TrySend sends the concatenation of iov (at most MaxIOV buffers) as one
// message of type msgType to dst without blocking: a full destination ring
// gives ErrWouldBlock (and queues a space notification). It returns the
// payload length.
func (e *Endpoint) TrySend(dst Addr, msgType uint32, iov ...[]byte) (int, error) {
	if e.isClosed() {
		return 0, e.opErr("write", dst, net.ErrClosed)
	}
	n, err := e.hv.Sendv(e.src(), dst, iov, msgType)
	return n, e.opErr("write", dst, err)
}

// Send is TrySend that, while the destination ring is full, waits for the
// hypervisor's space notification and retries, until ctx ends or the
// endpoint closes.
func (e *Endpoint) Send(ctx context.Context, dst Addr, msgType uint32, iov ...[]byte) (int, error) {
	n, err := e.send(ctx, dst, msgType, iov)
	return n, e.opErr("write", dst, err)
}

func (e *Endpoint) send(ctx context.Context, dst Addr, msgType uint32, iov [][]byte) (int, error) {
	for {
		if e.isClosed() {
			return 0, net.ErrClosed
		}
		seen := e.seen.Load()
		n, err := e.hv.Sendv(e.src(), dst, iov, msgType)
		switch {
		case err == nil:
			return n, nil
		case errors.Is(err, ErrWouldBlock):
			retry, werr := e.wait(ctx, seen)
			if werr != nil {
				return 0, werr
			}
			if retry {
				return 0, deadline.ErrChanged
			}
		case errors.Is(err, ErrBusy):
			// No notification is queued for us: poll.
			wctx, cancel := context.WithTimeout(ctx, busyRetry)
			_, werr := e.wait(wctx, seen)
			cancel()
			if werr != nil && !errors.Is(werr, context.DeadlineExceeded) {
				return 0, werr
			}
			if ctx.Err() != nil {
				return 0, context.Cause(ctx)
			}
		default:
			return 0, err
		}
	}
}

// WriteTo implements net.PacketConn: it sends p as one message of type
// Config.MessageType to addr (an Addr or *Addr), waiting while the
// destination ring is full until the write deadline.
func (e *Endpoint) WriteTo(p []byte, addr net.Addr) (int, error) {
	var dst Addr
	switch a := addr.(type) {
	case Addr:
		dst = a
	case *Addr:
		dst = *a
	default:
		return 0, e.opErr("write", addr, fmt.Errorf("v4v: address of type %T: %w", addr, ErrInvalid))
	}
	for {
		ctx := e.wdl.Context()
		n, err := e.send(ctx, dst, e.cfg.MessageType, [][]byte{p})
		if errors.Is(err, deadline.ErrChanged) {
			continue
		}
		return n, e.opErr("write", dst, err)
	}
}
