package xenbus_test

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/gozen-dev/gozen/xenbus/wire"
	"github.com/gozen-dev/gozen/xenbus/xsring"
)

// TestStalledStoreHonoursContexts is the xenstore defect of issue 10: a
// xenstored that stops reading while a long request is half written must
// not block later calls past their deadline (a READ with a 200 ms
// deadline was still blocked after 3 s), and once it reads again the
// stream must be intact.
func TestStalledStoreHonoursContexts(t *testing.T) {
	f, c := newFake(t)
	call := func(name string, timeout time.Duration, op func(ctx context.Context) error) error {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		done := make(chan error, 1)
		start := time.Now()
		go func() { done <- op(ctx) }()
		select {
		case err := <-done:
			return err
		case <-time.After(timeout + 10*time.Second): // a hang, not slowness: the old code never returned
			t.Fatalf("%s with a %v deadline still blocked after %v", name, timeout, time.Since(start))
			return nil
		}
	}

	// The long WRITE fills the 1024-byte request ring and gives up.
	long := bytes.Repeat([]byte{'v'}, 3000)
	err := call("long write", 200*time.Millisecond, func(ctx context.Context) error { return c.Write(ctx, "big", long) })
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("long write: %v", err)
	}
	// Every later call returns on its own deadline.
	for _, name := range []string{"read", "read again"} {
		err := call(name, 200*time.Millisecond, func(ctx context.Context) error { _, err := c.Read(ctx, "x"); return err })
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("%s: %v", name, err)
		}
	}
	if c.Err() != nil {
		t.Fatalf("connection lost: %v", c.Err())
	}

	// xenstored wakes up: the long request arrives whole, and the client
	// keeps working.
	bg, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	m, err := f.srv.ReadMsg(bg)
	if err != nil || m.Type != wire.Write || !bytes.Equal(m.Payload, append([]byte(c.Home()+"/big\x00"), long...)) {
		t.Fatalf("server got %+v (%d bytes), %v", m.Header, len(m.Payload), err)
	}
	f.reply(m, wire.Write, "OK\x00")
	go func() {
		m, err := f.srv.ReadMsg(bg)
		if err == nil {
			f.reply(m, wire.Read, "fine")
		}
	}()
	v, err := c.Read(bg, "x")
	if err != nil || string(v) != "fine" {
		t.Fatalf("read after the stall: %q, %v", v, err)
	}
}

// TestDetachedTransactionStartIsEnded: a TRANSACTION_START whose context
// ends while it is partly written (xsring.ErrDetached) still reaches the
// store, which opens a transaction. Its late reply must be consumed, not
// counted as unknown, and the orphan transaction ended, as for a request
// whose context ends after it was sent (TestLateReplies).
func TestDetachedTransactionStartIsEnded(t *testing.T) {
	f, c := newFake(t)
	bg, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()

	// A WRITE leaves 5 bytes free in the 1024-byte request ring, which
	// the stalled store does not read; its caller gives up on the reply.
	const free = 5
	path := c.Home() + "/pad\x00"
	pad := bytes.Repeat([]byte{'p'}, xsring.Size-free-wire.HeaderSize-len(path))
	short, cancelShort := context.WithTimeout(bg, 50*time.Millisecond)
	defer cancelShort()
	if err := c.Write(short, "pad", pad); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("pad write: %v", err)
	}
	if got := f.srv.Load(xsring.OffReqProd); got != xsring.Size-free {
		t.Fatalf("req_prod %d after the pad write, want %d", got, xsring.Size-free)
	}

	// TRANSACTION_START (17 bytes) is detached after 5 bytes.
	short, cancelShort = context.WithTimeout(bg, 200*time.Millisecond)
	defer cancelShort()
	_, err := c.TransactionStart(short)
	if !errors.Is(err, xsring.ErrDetached) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("TransactionStart: %v, want ErrDetached and DeadlineExceeded", err)
	}

	// The store wakes up and answers both; the transaction is then ended.
	m, err := f.srv.ReadMsg(bg)
	if err != nil || m.Type != wire.Write {
		t.Fatalf("server got %+v, %v; want the pad WRITE", m.Header, err)
	}
	f.reply(m, wire.Write, "OK\x00")
	m, err = f.srv.ReadMsg(bg)
	if err != nil || m.Type != wire.TransactionStart {
		t.Fatalf("server got %+v, %v; want TRANSACTION_START", m.Header, err)
	}
	f.reply(m, wire.TransactionStart, "42\x00")
	endCtx, cancelEnd := context.WithTimeout(bg, 2*time.Second)
	defer cancelEnd()
	end, err := f.srv.ReadMsg(endCtx)
	if err != nil || end.Type != wire.TransactionEnd || end.TxID != 42 || string(end.Payload) != "F\x00" {
		t.Fatalf("orphan transaction not ended: %+v %q, %v", end.Header, end.Payload, err)
	}
	f.reply(end, wire.TransactionEnd, "OK\x00")

	// A round trip after them: every earlier reply was dispatched.
	go func() {
		if m, err := f.srv.ReadMsg(bg); err == nil {
			f.reply(m, wire.Read, "fine")
		}
	}()
	if v, err := c.Read(bg, "x"); err != nil || string(v) != "fine" {
		t.Fatalf("read after the transaction: %q, %v", v, err)
	}
	if s := c.Stats(); s.UnknownReplies != 0 {
		t.Fatalf("late replies counted as unknown: %+v", s)
	}
}
