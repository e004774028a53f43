//go:build linux

package xslinux

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gozen-dev/gozen/xenbus"
	"github.com/gozen-dev/gozen/xenbus/memstore"
	"github.com/gozen-dev/gozen/xenbus/wire"
	"github.com/gozen-dev/gozen/xenbus/xsring"
)

// server stands in for xenstored's socket, or for the kernel's device when
// kernel is set: it relays the stream to a memstore (as dom0) and, like
// the kernel, answers XS_WATCH and XS_UNWATCH with req_id 0.
func server(t *testing.T, kernel bool) (client net.Conn, store *memstore.Store) {
	t.Helper()
	s := memstore.New()
	page := make([]byte, xsring.PageSize)
	cn, sn := xsring.NewLocalPair()
	conn, err := s.Serve(page, sn, 0)
	if err != nil {
		t.Fatal(err)
	}
	ring, err := xsring.New(page, xsring.Client, cn)
	if err != nil {
		t.Fatal(err)
	}
	a, b := net.Pipe()
	go func() { // stream to store
		r := bufio.NewReader(b)
		for {
			m, err := readMsg(r)
			if err != nil {
				return
			}
			if ring.WriteMsg(context.Background(), m) != nil {
				return
			}
		}
	}()
	go func() { // store to stream
		for {
			m, err := ring.ReadMsg(context.Background())
			if err != nil {
				return
			}
			if kernel && (m.Type == wire.Watch || m.Type == wire.Unwatch) {
				m.ReqID, m.TxID = 0, 0
			}
			buf, _ := m.Marshal()
			if _, err := b.Write(buf); err != nil {
				return
			}
		}
	}()
	t.Cleanup(func() {
		a.Close()
		b.Close()
		ring.Close()
		conn.Close()
		s.Close()
	})
	return a, s
}

func readMsg(r io.Reader) (wire.Msg, error) {
	var hdr [wire.HeaderSize]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return wire.Msg{}, err
	}
	h, _ := wire.ParseHeader(hdr[:])
	if err := h.Check(); err != nil {
		return wire.Msg{}, err
	}
	m := wire.Msg{Header: h, Payload: make([]byte, h.Len)}
	_, err := io.ReadFull(r, m.Payload)
	return m, err
}

// refusing is the client end of the kernel's device that refuses, with
// EINVAL, every message whose payload holds "refused", as the kernel
// does with a watch xenstored refused.
type refusing struct{ net.Conn }

func (r refusing) Write(b []byte) (int, error) {
	if bytes.Contains(b, []byte("refused")) {
		return 0, syscall.EINVAL
	}
	return r.Conn.Write(b)
}

func exercise(t *testing.T, c *xenbus.Client) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := c.WriteString(ctx, "/t/a", "1"); err != nil {
		t.Fatalf("write: %v", err)
	}
	if v, err := c.ReadString(ctx, "/t/a"); err != nil || v != "1" {
		t.Fatalf("read = %q, %v", v, err)
	}
	if _, err := c.ReadString(ctx, "/t/none"); !errors.Is(err, wire.ErrNotExist) {
		t.Fatalf("read of a missing node: %v, want ENOENT", err)
	}
	// Several watches at once: each synthesized reply must reach its
	// own caller.
	var wg sync.WaitGroup
	ws := make([]*xenbus.Watch, 8)
	for i := range ws {
		wg.Go(func() {
			w, err := c.Watch(ctx, "/t/w"+strings.Repeat("x", i))
			if err != nil {
				t.Errorf("watch %d: %v", i, err)
				return
			}
			ws[i] = w
		})
	}
	wg.Wait()
	if t.Failed() {
		t.FailNow()
	}
	w := ws[0]
	drain := func() {
		for {
			select {
			case <-w.Events():
			case <-time.After(50 * time.Millisecond):
				return
			}
		}
	}
	drain() // the event every new watch fires
	if err := c.WriteString(ctx, "/t/w/k", "v"); err != nil {
		t.Fatal(err)
	}
	select {
	case ev := <-w.Events():
		if ev.Path != "/t/w/k" {
			t.Errorf("watch event for %q, want /t/w/k", ev.Path)
		}
	case <-ctx.Done():
		t.Fatal("no watch event")
	}
	for _, w := range ws {
		if err := w.Unwatch(ctx); err != nil {
			t.Errorf("unwatch: %v", err)
		}
	}
	err := c.Transaction(ctx, func(tx *xenbus.Tx) error {
		return tx.WriteString(ctx, "/t/tx", "in")
	})
	if err != nil {
		t.Fatalf("transaction: %v", err)
	}
	if v, err := c.ReadString(ctx, "/t/tx"); err != nil || v != "in" {
		t.Fatalf("read after the transaction = %q, %v", v, err)
	}
}

func TestSocket(t *testing.T) {
	a, _ := server(t, false)
	c := xenbus.NewTransport(newConn(a, false, "test socket"), 0)
	defer c.Close()
	exercise(t, c)
}

func TestKernelDevice(t *testing.T) {
	a, _ := server(t, true)
	c := xenbus.NewTransport(newConn(refusing{a}, true, "test device"), 0)
	defer c.Close()
	exercise(t, c)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Watch(ctx, "/refused"); !errors.Is(err, wire.ErrInvalid) {
		t.Fatalf("watch the kernel refuses: %v, want EINVAL from the store", err)
	}
	// the connection still works
	if err := c.WriteString(ctx, "/t/after", "x"); err != nil {
		t.Fatalf("write after a refused watch: %v", err)
	}
}

// TestDial reads the domain's id from the store.
func TestDial(t *testing.T) {
	a, s := server(t, false)
	if err := s.Write("/local/domain/0/domid", "0"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := xenbus.DialTransport(ctx, newConn(a, false, "test socket"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Home() != "/local/domain/0" {
		t.Errorf("home %q", c.Home())
	}
}

// TestHostileStream: a header announcing too long a payload, or a stream
// cut inside a message, breaks the connection with a clear error.
func TestHostileStream(t *testing.T) {
	big := make([]byte, wire.HeaderSize)
	wire.Header{Type: wire.Read, ReqID: 1, Len: wire.PayloadMax + 1}.Put(big)
	cut := make([]byte, wire.HeaderSize+2)
	wire.Header{Type: wire.Read, ReqID: 1, Len: 10}.Put(cut)
	for _, c := range []struct {
		name string
		in   []byte
		want error
	}{
		{"oversized", big, wire.ErrTooLong},
		{"cut", cut, io.ErrUnexpectedEOF},
		{"cut header", big[:5], io.ErrUnexpectedEOF},
	} {
		t.Run(c.name, func(t *testing.T) {
			a, b := net.Pipe()
			defer a.Close()
			conn := newConn(a, true, "hostile")
			go func() { b.Write(c.in); b.Close() }()
			_, err := conn.ReadMsg(context.Background())
			if !errors.Is(err, c.want) {
				t.Fatalf("ReadMsg = %v, want %v", err, c.want)
			}
			if err := conn.WriteMsg(context.Background(), wire.Msg{Header: wire.Header{Type: wire.Read}}); err == nil {
				t.Errorf("WriteMsg on a broken connection succeeded")
			}
		})
	}
}

func TestClose(t *testing.T) {
	a, b := net.Pipe()
	defer b.Close()
	conn := newConn(a, false, "closing")
	done := make(chan error, 1)
	go func() {
		_, err := conn.ReadMsg(context.Background())
		done <- err
	}()
	conn.Close()
	if err := <-done; !errors.Is(err, xsring.ErrClosed) {
		t.Errorf("ReadMsg after Close: %v, want xsring.ErrClosed", err)
	}
	if err := conn.WriteMsg(context.Background(), wire.Msg{}); !errors.Is(err, xsring.ErrClosed) {
		t.Errorf("WriteMsg after Close: %v, want xsring.ErrClosed", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	c2 := newConn(b, false, "x")
	defer c2.Close()
	if _, err := c2.ReadMsg(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("ReadMsg with a cancelled context: %v", err)
	}
}

// TestFixWatchReply: synthesized replies take the ids of the oldest
// unanswered request of their type; real ids are left alone.
func TestFixWatchReply(t *testing.T) {
	c := &Conn{kernel: true}
	c.watches = []wire.Header{{Type: wire.Watch, ReqID: 5}, {Type: wire.Unwatch, ReqID: 6, TxID: 0}, {Type: wire.Watch, ReqID: 7}}
	for _, s := range []struct {
		in, want wire.Header
	}{
		{wire.Header{Type: wire.Unwatch}, wire.Header{Type: wire.Unwatch, ReqID: 6}},
		{wire.Header{Type: wire.Watch, ReqID: 7}, wire.Header{Type: wire.Watch, ReqID: 7}},
		{wire.Header{Type: wire.Watch}, wire.Header{Type: wire.Watch, ReqID: 5}},
		{wire.Header{Type: wire.Watch}, wire.Header{Type: wire.Watch}}, // none left
		{wire.Header{Type: wire.Read}, wire.Header{Type: wire.Read}},
	} {
		m := wire.Msg{Header: s.in}
		c.fixWatchReply(&m)
		if m.Header != s.want {
			t.Errorf("fix(%+v) = %+v, want %+v", s.in, m.Header, s.want)
		}
	}
	if len(c.watches) != 0 {
		t.Errorf("left %v", c.watches)
	}
}

func TestErrorReply(t *testing.T) {
	for _, c := range []struct {
		errno syscall.Errno
		want  string
	}{
		{syscall.EINVAL, "EINVAL\x00"}, {syscall.ESRCH, "ESRCH\x00"}, {syscall.E2BIG, "E2BIG\x00"}, {syscall.Errno(4095), "EIO\x00"},
	} {
		m := errorReply(wire.Header{Type: wire.Watch, ReqID: 3, TxID: 4}, c.errno)
		if m.Type != wire.Error || m.ReqID != 3 || m.TxID != 4 || string(m.Payload) != c.want {
			t.Errorf("errorReply(%v) = %+v %q", c.errno, m.Header, m.Payload)
		}
	}
}

// FuzzStream feeds arbitrary bytes as the store's stream: messages come
// out whole and within bounds, or the connection breaks; never a panic.
func FuzzStream(f *testing.F) {
	ok := wire.Msg{Header: wire.Header{Type: wire.WatchEvent}, Payload: []byte("/a\x00tok\x00")}
	b, _ := ok.Marshal()
	f.Add(b, true)
	w := wire.Msg{Header: wire.Header{Type: wire.Watch}, Payload: []byte("OK\x00")}
	b2, _ := w.Marshal()
	f.Add(append(b, b2...), true)
	f.Add([]byte{1, 2, 3}, false)
	f.Fuzz(func(t *testing.T, in []byte, kernel bool) {
		a, bb := net.Pipe()
		conn := newConn(a, kernel, "fuzz")
		conn.watches = []wire.Header{{Type: wire.Watch, ReqID: 9}}
		go func() { bb.Write(in); bb.Close() }()
		total := 0
		for {
			m, err := conn.ReadMsg(context.Background())
			if err != nil {
				break
			}
			if len(m.Payload) > wire.PayloadMax || int(m.Len) != len(m.Payload) {
				t.Fatalf("message of %d bytes announcing %d", len(m.Payload), m.Len)
			}
			total += wire.HeaderSize + len(m.Payload)
		}
		if total > len(in) {
			t.Fatalf("%d bytes of messages from %d bytes", total, len(in))
		}
		conn.Close()
	})
}

// TestRealDevice talks to the store through the kernel's device.
func TestRealDevice(t *testing.T) {
	if _, err := os.Stat(DevicePath); err != nil {
		t.Skipf("%s absent (not a Xen domain): %v", DevicePath, err)
	}
	conn, err := OpenDevice(DevicePath)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := xenbus.DialTransport(ctx, conn)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Directory(ctx, c.Home()); err != nil {
		t.Fatal(err)
	}
}
