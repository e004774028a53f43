package xenbus_test

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/gozen-dev/gozen/xenbus/wire"
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
		case <-time.After(timeout + 2*time.Second):
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
