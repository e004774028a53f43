package xsring

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/gozen-dev/gozen/xenbus/wire"
)

func pair(t *testing.T) (c, s *Ring, page []byte) {
	t.Helper()
	page = make([]byte, PageSize)
	a, b := NewLocalPair()
	c, err := New(page, Client, a)
	if err != nil {
		t.Fatal(err)
	}
	s, err = New(page, Server, b)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); s.Close(); a.Close() })
	return c, s, page
}

func TestRoundTripSizes(t *testing.T) {
	c, s, _ := pair(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sizes := []int{0, 1, 100, Size - wire.HeaderSize, Size, Size + 1, 3000, wire.PayloadMax}
	go func() {
		for i, n := range sizes {
			p := bytes.Repeat([]byte{byte(i + 1)}, n)
			if err := c.WriteMsg(ctx, wire.Msg{Header: wire.Header{Type: wire.Write, ReqID: uint32(i)}, Payload: p}); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	for i, n := range sizes {
		m, err := s.ReadMsg(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if m.ReqID != uint32(i) || m.Type != wire.Write || len(m.Payload) != n || (n > 0 && m.Payload[n-1] != byte(i+1)) {
			t.Fatalf("message %d: got %+v len %d", i, m.Header, len(m.Payload))
		}
	}
}

func TestConcurrentWritersDoNotInterleave(t *testing.T) {
	c, s, _ := pair(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	const writers, each = 8, 50
	var wg sync.WaitGroup
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				p := bytes.Repeat([]byte{byte(w)}, 50+i*20)
				if err := c.WriteMsg(ctx, wire.Msg{Header: wire.Header{Type: wire.Read, ReqID: uint32(w)}, Payload: p}); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	for range writers * each {
		m, err := s.ReadMsg(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, b := range m.Payload {
			if b != byte(m.ReqID) {
				t.Fatalf("interleaved payload in message from writer %d", m.ReqID)
			}
		}
	}
	wg.Wait()
}

func TestHostileIndices(t *testing.T) {
	tests := []struct {
		name string
		prep func(r *Ring, page []byte)
		read bool
	}{
		{"read prod-cons > size", func(r *Ring, page []byte) { r.Store(OffRspProd, 5000) }, true},
		{"read cons ahead of prod", func(r *Ring, page []byte) { r.Store(OffRspCons, 10) }, true},
		{"read payload too long", func(r *Ring, page []byte) {
			wire.Header{Type: wire.Read, Len: wire.PayloadMax + 1}.Put(page[OffRsp:])
			r.Store(OffRspProd, wire.HeaderSize)
		}, true},
		{"read wrapped huge index", func(r *Ring, page []byte) {
			r.Store(OffRspCons, 0xfffffff0)
			r.Store(OffRspProd, 0x10)
			wire.Header{Type: wire.Read, Len: 0xffffffff}.Put(page[OffRsp+1024-16:])
		}, true},
		{"write prod-cons > size", func(r *Ring, page []byte) { r.Store(OffReqCons, 0x80000000) }, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c, _, page := pair(t)
			tc.prep(c, page)
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			var err error
			if tc.read {
				_, err = c.ReadMsg(ctx)
			} else {
				err = c.WriteMsg(ctx, wire.Msg{Header: wire.Header{Type: wire.Read}, Payload: []byte("x\x00")})
			}
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("got %v, want ErrCorrupt", err)
			}
			if !errors.Is(c.Err(), ErrCorrupt) {
				t.Fatalf("ring not marked broken: %v", c.Err())
			}
		})
	}
}

func TestWrappedIndicesWork(t *testing.T) {
	c, s, _ := pair(t)
	for _, r := range []*Ring{c} {
		r.Store(OffReqCons, 0xfffffff0)
		r.Store(OffReqProd, 0xfffffff0)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	go c.WriteMsg(ctx, wire.Msg{Header: wire.Header{Type: wire.Read, ReqID: 7}, Payload: []byte("hello\x00")})
	m, err := s.ReadMsg(ctx)
	if err != nil || m.ReqID != 7 || string(m.Payload) != "hello\x00" {
		t.Fatalf("got %+v %q %v", m.Header, m.Payload, err)
	}
}

func TestTimeoutAndClose(t *testing.T) {
	c, _, _ := pair(t)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := c.ReadMsg(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want deadline", err)
	}
	if c.Err() != nil {
		t.Fatalf("timeout before any byte must not break the ring: %v", c.Err())
	}
	done := make(chan error)
	go func() { _, err := c.ReadMsg(context.Background()); done <- err }()
	time.Sleep(10 * time.Millisecond)
	c.Close()
	select {
	case err := <-done:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("got %v, want ErrClosed", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Close did not wake reader")
	}
}

func TestPartialMessageThenTimeoutWaitsForRest(t *testing.T) {
	c, _, page := pair(t)
	// Server side writes only the header of a 10-byte message.
	wire.Header{Type: wire.Read, ReqID: 3, Len: 10}.Put(page[OffRsp:])
	c.Store(OffRspProd, wire.HeaderSize)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	done := make(chan error, 1)
	go func() { _, err := c.ReadMsg(ctx); done <- err }()
	select {
	case err := <-done:
		t.Fatalf("returned %v mid-message", err)
	case <-time.After(50 * time.Millisecond):
	}
	c.Close()
	if err := <-done; !errors.Is(err, ErrClosed) {
		t.Fatalf("got %v, want ErrClosed", err)
	}
}

func TestBadPage(t *testing.T) {
	a, _ := NewLocalPair()
	if _, err := New(make([]byte, 100), Client, a); err == nil {
		t.Fatal("short page accepted")
	}
	if _, err := New(make([]byte, PageSize+1)[1:], Client, a); err == nil {
		t.Fatal("misaligned page accepted")
	}
	if _, err := New(make([]byte, PageSize), Client, nil); err == nil {
		t.Fatal("nil notifier accepted")
	}
}
