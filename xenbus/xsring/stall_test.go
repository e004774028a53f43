package xsring

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/gozen-dev/gozen/xenbus/wire"
)

// within runs f and fails the test if it has not returned after limit:
// a call that ignores its context shows up as a failure, not a hang.
func within(t *testing.T, limit time.Duration, what string, f func() error) error {
	t.Helper()
	done := make(chan error, 1)
	start := time.Now()
	go func() { done <- f() }()
	select {
	case err := <-done:
		return err
	case <-time.After(limit):
		t.Fatalf("%s still blocked after %v", what, time.Since(start))
		return nil
	}
}

// TestStalledPeerHonoursContexts is the defect of issue 10: a peer that
// stops consuming while a long request is half written must not make
// later calls ignore their contexts, and the stream must stay intact.
func TestStalledPeerHonoursContexts(t *testing.T) {
	c, s, _ := pair(t)
	long := bytes.Repeat([]byte{'L'}, 3000) // more than the 1024-byte ring
	msg := func(id uint32, p []byte) wire.Msg {
		return wire.Msg{Header: wire.Header{Type: wire.Write, ReqID: id}, Payload: p}
	}

	// The server is stalled: nobody reads. The long request times out
	// with part of it written.
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	err := within(t, 2*time.Second, "long write", func() error { return c.WriteMsg(ctx, msg(1, long)) })
	if !errors.Is(err, ErrDetached) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("long write: %v, want ErrDetached and DeadlineExceeded", err)
	}

	// Later calls, short ones included, return on their own deadline.
	for _, name := range []string{"short write", "second short write"} {
		ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
		start := time.Now()
		err := within(t, 2*time.Second, name, func() error { return c.WriteMsg(ctx, msg(2, []byte("x\x00"))) })
		cancel()
		if !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrDetached) {
			t.Fatalf("%s: %v, want a plain DeadlineExceeded", name, err)
		}
		if d := time.Since(start); d < 150*time.Millisecond {
			t.Fatalf("%s returned after %v, before its deadline", name, d)
		}
	}
	if c.Err() != nil {
		t.Fatalf("the ring broke: %v", c.Err())
	}

	// The server wakes up: it finds the long request whole, then the
	// stream goes on with no trace of the calls that gave up.
	rctx, rcancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer rcancel()
	m, err := s.ReadMsg(rctx)
	if err != nil || m.ReqID != 1 || !bytes.Equal(m.Payload, long) {
		t.Fatalf("server read %+v (%d bytes), %v", m.Header, len(m.Payload), err)
	}
	go c.WriteMsg(rctx, msg(3, []byte("after\x00")))
	m, err = s.ReadMsg(rctx)
	if err != nil || m.ReqID != 3 || string(m.Payload) != "after\x00" {
		t.Fatalf("next message %+v %q, %v", m.Header, m.Payload, err)
	}
}

// TestStalledReaderHonoursContexts: a reader stuck in the middle of a
// message keeps its turn, and other readers give up on their context.
func TestStalledReaderHonoursContexts(t *testing.T) {
	c, _, page := pair(t)
	wire.Header{Type: wire.Read, ReqID: 3, Len: 10}.Put(page[OffRsp:])
	c.Store(OffRspProd, wire.HeaderSize) // header only, no payload
	go c.ReadMsg(context.Background())
	time.Sleep(20 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	err := within(t, 2*time.Second, "second reader", func() error { _, err := c.ReadMsg(ctx); return err })
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("second reader: %v", err)
	}
}

// TestCloseAbandonsBackgroundWrite: closing the ring ends a message being
// finished in the background and releases the writers' turn.
func TestCloseAbandonsBackgroundWrite(t *testing.T) {
	c, _, _ := pair(t)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	err := within(t, 2*time.Second, "long write", func() error {
		return c.WriteMsg(ctx, wire.Msg{Header: wire.Header{Type: wire.Write}, Payload: make([]byte, 2000)})
	})
	if !errors.Is(err, ErrDetached) {
		t.Fatalf("got %v", err)
	}
	c.Close()
	err = within(t, 2*time.Second, "write after close", func() error {
		return c.WriteMsg(context.Background(), wire.Msg{Header: wire.Header{Type: wire.Write}})
	})
	if !errors.Is(err, ErrClosed) {
		t.Fatalf("after close: %v", err)
	}
}
