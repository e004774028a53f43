package memstore_test

import (
	"context"
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/gozen-dev/gozen/domid"
	"github.com/gozen-dev/gozen/xenbus"
	"github.com/gozen-dev/gozen/xenbus/memstore"
	"github.com/gozen-dev/gozen/xenbus/wire"
	"github.com/gozen-dev/gozen/xenbus/xssock"
)

// sockDir returns a short directory for sockets (sockaddr_un is ~100
// bytes), removed at the end.
func sockDir(t *testing.T) string {
	t.Helper()
	d, err := os.MkdirTemp("", "ms")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

func listen(t *testing.T, s *memstore.Store, dom domid.ID) *memstore.Listener {
	t.Helper()
	l, err := s.ListenUnix(filepath.Join(sockDir(t), "xs.sock"), dom)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// TestSocketClient runs the xenbus client over the socket: relative
// paths under the listener's domain, permissions, transactions and
// watches, all through the same client code as over a ring.
func TestSocketClient(t *testing.T) {
	s := memstore.New()
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	l := listen(t, s, 7)
	accepted := make(chan *memstore.Conn, 1)
	go func() {
		c, err := l.Accept(ctx)
		if err != nil {
			t.Error(err)
		}
		accepted <- c
	}()
	c, err := xenbus.DialUnix(ctx, l.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	sc := <-accepted
	if c.Home() != "/local/domain/7" || sc.Domain() != 7 {
		t.Fatalf("home %q, served as %d", c.Home(), sc.Domain())
	}
	if err := c.WriteString(ctx, "data/x", "1"); err != nil {
		t.Fatal(err)
	}
	if v, err := s.Read("/local/domain/7/data/x"); err != nil || v != "1" {
		t.Fatalf("store has %q %v", v, err)
	}
	if _, err := c.Read(ctx, "/local/domain/0/secret"); !errors.Is(err, wire.ErrAccess) {
		t.Fatalf("dom0's home: %v, want EACCES", err)
	}
	w, err := c.Watch(ctx, "data")
	if err != nil {
		t.Fatal(err)
	}
	<-w.Events() // the initial event
	err = c.Transaction(ctx, func(tx *xenbus.Tx) error {
		v, err := tx.ReadString(ctx, "data/x")
		if err != nil {
			return err
		}
		return tx.WriteString(ctx, "data/y", v+"2")
	})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-w.Events():
		if ev.Path != "/local/domain/7/data/y" {
			t.Fatalf("event %q", ev.Path)
		}
	case <-ctx.Done():
		t.Fatal("no watch event")
	}
	// The client hanging up ends its connection cleanly.
	c.Close()
	select {
	case <-sc.Done():
	case <-ctx.Done():
		t.Fatal("hang-up not noticed")
	}
	if err := sc.Err(); err != nil {
		t.Fatalf("hang-up error %v", err)
	}
}

// TestSocketStoreGone: calls on a client whose store went away fail with
// ErrConnLost instead of hanging.
func TestSocketStoreGone(t *testing.T) {
	s := memstore.New()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	l := listen(t, s, 3)
	go l.Accept(ctx)
	c, err := xenbus.DialUnix(ctx, l.Path())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	w, err := c.Watch(ctx, "x")
	if err != nil {
		t.Fatal(err)
	}
	l.Close()
	s.Close()
	for range w.Events() {
	}
	if _, err := c.Read(ctx, "domid"); !errors.Is(err, xenbus.ErrConnLost) {
		t.Fatalf("read after the store left: %v", err)
	}
	if _, err := os.Stat(l.Path()); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket left behind: %v", err)
	}
}

// TestSocketHostileClient: bad framing ends that connection with
// xssock.ErrCorrupt; the store keeps serving others.
func TestSocketHostileClient(t *testing.T) {
	s := memstore.New()
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, tc := range []struct {
		name string
		raw  func() []byte
	}{
		{"payload too long", func() []byte {
			b := make([]byte, wire.HeaderSize)
			wire.Header{Type: wire.Write, Len: wire.PayloadMax + 1}.Put(b)
			return b
		}},
		{"cut short", func() []byte {
			b := make([]byte, wire.HeaderSize+2)
			wire.Header{Type: wire.Write, Len: 100}.Put(b)
			return b
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a, b := net.Pipe()
			sc, err := s.ServeConn(b, 4)
			if err != nil {
				t.Fatal(err)
			}
			a.Write(tc.raw())
			a.Close()
			select {
			case <-sc.Done():
			case <-ctx.Done():
				t.Fatal("not dropped")
			}
			if !errors.Is(sc.Err(), xssock.ErrCorrupt) {
				t.Fatalf("conn error %v", sc.Err())
			}
		})
	}
	a, b := net.Pipe()
	if _, err := s.ServeConn(b, 4); err != nil {
		t.Fatal(err)
	}
	c, err := xenbus.DialConn(ctx, a)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if err := c.WriteString(ctx, "ok", "1"); err != nil {
		t.Fatal(err)
	}
}

// TestListenUnixStale: a stale socket left by a dead process is replaced;
// a live one is refused.
func TestListenUnixStale(t *testing.T) {
	s := memstore.New()
	defer s.Close()
	path := filepath.Join(sockDir(t), "xs.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.ListenUnix(path, 1); err == nil {
		t.Fatal("took over a live socket")
	}
	ln.SetUnlinkOnClose(false)
	ln.Close() // the socket file stays, as after a crash
	l, err := s.ListenUnix(path, 1)
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := l.Accept(ctx); !errors.Is(err, memstore.ErrClosed) || !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled accept: %v", err)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("socket left behind: %v", err)
	}
}
