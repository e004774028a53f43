// Package xssock carries xenstore messages over a byte stream, such as
// the Unix socket xenstored serves dom0's tools on (and package
// xenbus/memstore serves between host processes): each message is its
// 16-byte header (struct xsd_sockmsg of io/xs_wire.h) followed by its
// payload, back to back, with no other framing.
//
// A [Conn] moves whole [wire.Msg] values in both directions, like the
// shared ring of package xenbus/xsring, so that the xenbus client and the
// memstore server run unchanged over either. The stream is untrusted: a
// header announcing more than wire.PayloadMax bytes, or a stream that
// ends in the middle of a message, breaks the connection with an error
// wrapping [ErrCorrupt]; the peer hanging up between two messages is an
// error wrapping io.EOF. Nothing read from the stream can make this
// package panic or allocate more than one maximal message.
package xssock

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"

	"github.com/gozen-dev/gozen/xenbus/wire"
)

// Errors of this package; they are wrapped with context.
var (
	// ErrCorrupt means the peer broke the framing (an oversized header,
	// a message cut short). The connection cannot be used any more.
	ErrCorrupt = errors.New("xssock: corrupt stream")
	// ErrClosed means the connection was closed locally.
	ErrClosed = errors.New("xssock: closed")
	// ErrDetached means a WriteMsg returned (its context ended) before
	// its message was written; the message is still written in the
	// background, so the peer gets it unless the connection breaks.
	ErrDetached = errors.New("xssock: message left to finish in the background")
)

// Conn is one end of a xenstore stream. ReadMsg and WriteMsg may be
// called concurrently with each other and from several goroutines;
// messages never interleave.
type Conn struct {
	nc net.Conn

	life   context.Context // ends at Close or when the stream breaks
	cancel context.CancelFunc
	broken atomic.Pointer[error]

	in     chan wire.Msg // from the reader goroutine
	rdone  chan struct{} // the reader goroutine ended
	wlock  chan struct{} // the writer's turn, cap 1
	closed sync.Once
}

// New starts a Conn on nc; Close closes nc.
func New(nc net.Conn) *Conn {
	c := &Conn{nc: nc, in: make(chan wire.Msg), rdone: make(chan struct{}), wlock: make(chan struct{}, 1)}
	c.life, c.cancel = context.WithCancel(context.Background())
	go c.readLoop()
	return c
}

// Close makes pending and future calls fail with an error wrapping
// ErrClosed and closes the stream; a message being written in the
// background (see WriteMsg) may be cut short.
func (c *Conn) Close() error {
	c.closed.Do(func() {
		c.setBroken(ErrClosed)
		c.cancel()
		c.nc.Close()
	})
	<-c.rdone
	return nil
}

// Err returns the error that made the connection unusable, or nil.
func (c *Conn) Err() error {
	if p := c.broken.Load(); p != nil {
		return *p
	}
	return nil
}

func (c *Conn) setBroken(err error) {
	if c.broken.CompareAndSwap(nil, &err) {
		c.cancel()
	}
}

// readLoop reads messages off the stream and hands them to ReadMsg, until
// the stream ends or breaks.
func (c *Conn) readLoop() {
	defer close(c.rdone)
	var hdr [wire.HeaderSize]byte
	for {
		if n, err := io.ReadFull(c.nc, hdr[:]); err != nil {
			switch {
			case n > 0:
				if errors.Is(err, io.EOF) {
					err = io.ErrUnexpectedEOF
				}
				c.setBroken(fmt.Errorf("%w: stream ended inside a header (%d of %d bytes): %w", ErrCorrupt, n, wire.HeaderSize, err))
			case errors.Is(err, io.EOF):
				c.setBroken(fmt.Errorf("xssock: peer hung up: %w", io.EOF))
			default:
				c.setBroken(fmt.Errorf("xssock: reading: %w", err))
			}
			return
		}
		h, _ := wire.ParseHeader(hdr[:])
		if err := h.Check(); err != nil {
			c.setBroken(fmt.Errorf("%w: %w", ErrCorrupt, err))
			return
		}
		m := wire.Msg{Header: h, Payload: make([]byte, h.Len)}
		if n, err := io.ReadFull(c.nc, m.Payload); err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF // not a hang-up between messages
			}
			c.setBroken(fmt.Errorf("%w: stream ended inside a %s payload (%d of %d bytes): %w", ErrCorrupt, h.Type, n, h.Len, err))
			return
		}
		select {
		case c.in <- m:
		case <-c.life.Done():
			return
		}
	}
}

// ReadMsg returns the next message, waiting until one arrives, ctx ends
// or the connection ends (an error wrapping ErrClosed, ErrCorrupt or, if
// the peer hung up, io.EOF). A message is never lost to a cancelled
// ReadMsg: the next call gets it.
func (c *Conn) ReadMsg(ctx context.Context) (wire.Msg, error) {
	if err := c.Err(); err != nil {
		return wire.Msg{}, err
	}
	select {
	case m := <-c.in:
		return m, nil
	case <-ctx.Done():
		return wire.Msg{}, fmt.Errorf("xssock: read: %w", ctx.Err())
	case <-c.life.Done():
		return wire.Msg{}, c.Err()
	}
}

// WriteMsg writes m (header and payload) to the stream. If ctx ends while
// an earlier message is still being written, m is not sent and the error
// wraps ctx.Err(). If ctx ends once m's turn came, WriteMsg returns an
// error wrapping both ErrDetached and ctx.Err() and m is written in the
// background (half a message would desynchronise the stream).
func (c *Conn) WriteMsg(ctx context.Context, m wire.Msg) error {
	b, err := m.Marshal()
	if err != nil {
		return fmt.Errorf("xssock: %w", err)
	}
	if err := c.Err(); err != nil {
		return err
	}
	select {
	case c.wlock <- struct{}{}:
	case <-ctx.Done():
		return fmt.Errorf("xssock: write: waiting for an earlier message: %w", ctx.Err())
	case <-c.life.Done():
		return c.Err()
	}
	if err := c.Err(); err != nil {
		<-c.wlock
		return err
	}
	done := make(chan error, 1)
	go func() {
		defer func() { <-c.wlock }()
		_, err := c.nc.Write(b)
		if err != nil {
			c.setBroken(fmt.Errorf("xssock: writing: %w", err))
			err = c.Err()
		}
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("%w: %w", ErrDetached, ctx.Err())
	}
}
