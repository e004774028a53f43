package xssock_test

import (
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/gozen-dev/gozen/xenbus/wire"
	"github.com/gozen-dev/gozen/xenbus/xssock"
)

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func pair(t *testing.T) (*xssock.Conn, *xssock.Conn) {
	t.Helper()
	a, b := net.Pipe()
	ca, cb := xssock.New(a), xssock.New(b)
	t.Cleanup(func() { ca.Close(); cb.Close() })
	return ca, cb
}

func TestRoundTrip(t *testing.T) {
	ctx := ctxT(t)
	a, b := pair(t)
	msgs := []wire.Msg{
		{Header: wire.Header{Type: wire.Read, ReqID: 1}, Payload: wire.Strings("a/b")},
		{Header: wire.Header{Type: wire.Write, ReqID: 2, TxID: 7}, Payload: wire.PathValue("x", []byte("v"))},
		{Header: wire.Header{Type: wire.TransactionStart, ReqID: 3}, Payload: nil},
		{Header: wire.Header{Type: wire.Write, ReqID: 4}, Payload: make([]byte, wire.PayloadMax)},
	}
	go func() {
		for _, m := range msgs {
			if err := a.WriteMsg(ctx, m); err != nil {
				t.Error(err)
			}
		}
	}()
	for _, want := range msgs {
		got, err := b.ReadMsg(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if got.Type != want.Type || got.ReqID != want.ReqID || got.TxID != want.TxID || got.Len != uint32(len(want.Payload)) || string(got.Payload) != string(want.Payload) {
			t.Fatalf("got %+v, want %+v", got.Header, want.Header)
		}
	}
}

func TestCancelledReadKeepsMessage(t *testing.T) {
	ctx := ctxT(t)
	a, b := pair(t)
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if _, err := b.ReadMsg(cctx); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled read: %v", err)
	}
	go a.WriteMsg(ctx, wire.Msg{Header: wire.Header{Type: wire.Read, ReqID: 9}, Payload: []byte("p")})
	m, err := b.ReadMsg(ctx)
	if err != nil || m.ReqID != 9 {
		t.Fatalf("read after cancel: %+v %v", m.Header, err)
	}
}

// TestCancelledWrite: a write whose ctx ends is either not sent at all
// (it never got its turn) or detached and then sent whole, never half.
func TestCancelledWrite(t *testing.T) {
	ctx := ctxT(t)
	for i := 0; i < 50; i++ {
		a, b := pair(t)
		// net.Pipe is unbuffered: a write blocks until b reads.
		cctx, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- a.WriteMsg(cctx, wire.Msg{Header: wire.Header{Type: wire.Read, ReqID: 5}}) }()
		cancel()
		err := <-done
		go a.WriteMsg(ctx, wire.Msg{Header: wire.Header{Type: wire.Read, ReqID: 6}})
		m, rerr := b.ReadMsg(ctx)
		if rerr != nil {
			t.Fatal(rerr)
		}
		switch {
		case err == nil || errors.Is(err, xssock.ErrDetached):
			if m.ReqID != 5 {
				t.Fatalf("write said %v, then got request %d first", err, m.ReqID)
			}
		case errors.Is(err, context.Canceled):
			if m.ReqID != 6 {
				t.Fatalf("write said %v (not sent), then got request %d", err, m.ReqID)
			}
		default:
			t.Fatalf("cancelled write: %v", err)
		}
	}
}

func TestStreamEnds(t *testing.T) {
	hdr := func(len uint32) []byte {
		b := make([]byte, wire.HeaderSize)
		wire.Header{Type: wire.Read, ReqID: 1, Len: len}.Put(b)
		return b
	}
	for _, tc := range []struct {
		name string
		raw  []byte
		want error
	}{
		{"hang-up", nil, io.EOF},
		{"half a header", hdr(0)[:7], xssock.ErrCorrupt},
		{"payload too long", hdr(wire.PayloadMax + 1), xssock.ErrCorrupt},
		{"payload cut short", append(hdr(10), 1, 2, 3), xssock.ErrCorrupt},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := ctxT(t)
			a, b := net.Pipe()
			c := xssock.New(b)
			defer c.Close()
			go func() { a.Write(tc.raw); a.Close() }()
			_, err := c.ReadMsg(ctx)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			if err := c.WriteMsg(ctx, wire.Msg{}); !errors.Is(err, tc.want) {
				t.Fatalf("write after: %v", err)
			}
		})
	}
}

func TestClose(t *testing.T) {
	ctx := ctxT(t)
	a, _ := pair(t)
	done := make(chan error, 1)
	go func() { _, err := a.ReadMsg(ctx); done <- err }()
	a.Close()
	if err := <-done; !errors.Is(err, xssock.ErrClosed) {
		t.Fatalf("read on closed: %v", err)
	}
	if err := a.WriteMsg(ctx, wire.Msg{}); !errors.Is(err, xssock.ErrClosed) {
		t.Fatalf("write on closed: %v", err)
	}
	if err := a.WriteMsg(ctx, wire.Msg{Payload: make([]byte, wire.PayloadMax+1)}); !errors.Is(err, wire.ErrTooLong) {
		t.Fatalf("oversized write: %v", err)
	}
}
