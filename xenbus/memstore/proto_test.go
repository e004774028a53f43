package memstore_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/gozen-dev/gozen/domid"
	"github.com/gozen-dev/gozen/xenbus/memstore"
	"github.com/gozen-dev/gozen/xenbus/wire"
	"github.com/gozen-dev/gozen/xenbus/xsring"
)

// rawClient speaks the wire protocol directly, to test the server.
type rawClient struct {
	t    *testing.T
	r    *xsring.Ring
	conn *memstore.Conn
	page []byte
	n    *xsring.LocalNotifier
}

func newRaw(t *testing.T, s *memstore.Store, dom domid.ID) *rawClient {
	t.Helper()
	page := make([]byte, xsring.PageSize)
	cn, sn := xsring.NewLocalPair()
	if err := s.AddDomain(dom); err != nil {
		t.Fatal(err)
	}
	conn, err := s.Serve(page, sn, dom)
	if err != nil {
		t.Fatal(err)
	}
	r, err := xsring.New(page, xsring.Client, cn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); conn.Close(); cn.Close() })
	return &rawClient{t, r, conn, page, cn}
}

func (c *rawClient) do(typ wire.Type, tx uint32, payload string) wire.Msg {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := c.r.WriteMsg(ctx, wire.Msg{Header: wire.Header{Type: typ, ReqID: 99, TxID: tx}, Payload: []byte(payload)}); err != nil {
		c.t.Fatal(err)
	}
	return c.next()
}

func (c *rawClient) next() wire.Msg {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	m, err := c.r.ReadMsg(ctx)
	if err != nil {
		c.t.Fatal(err)
	}
	return m
}

func TestServerProtocol(t *testing.T) {
	s := memstore.New()
	defer s.Close()
	c := newRaw(t, s, 5)
	tests := []struct {
		name    string
		typ     wire.Type
		tx      uint32
		payload string
		want    wire.Type
		reply   string
	}{
		{"relative write", wire.Write, 0, "a/b\x00v", wire.Write, "OK\x00"},
		{"relative read", wire.Read, 0, "a/b\x00", wire.Read, "v"},
		{"absolute read", wire.Read, 0, "/local/domain/5/a/b\x00", wire.Read, "v"},
		{"directory", wire.Directory, 0, "a\x00", wire.Directory, "b\x00"},
		{"perms", wire.GetPerms, 0, "a/b\x00", wire.GetPerms, "n5\x00"},
		{"domain path", wire.GetDomainPath, 0, "3\x00", wire.GetDomainPath, "/local/domain/3\x00"},
		{"unterminated path", wire.Read, 0, "a/b", wire.Error, "EINVAL\x00"},
		{"bad path", wire.Read, 0, "a//b\x00", wire.Error, "EINVAL\x00"},
		{"missing", wire.Read, 0, "zz\x00", wire.Error, "ENOENT\x00"},
		{"unreadable", wire.Read, 0, "/local\x00", wire.Error, "EACCES\x00"},
		{"bad perm string", wire.SetPerms, 0, "a/b\x00q5\x00", wire.Error, "EINVAL\x00"},
		{"no perms", wire.SetPerms, 0, "a/b\x00", wire.Error, "EINVAL\x00"},
		{"write without nul", wire.Write, 0, "abc", wire.Error, "EINVAL\x00"},
		{"unknown tx", wire.Read, 1234, "a/b\x00", wire.Error, "ENOENT\x00"},
		{"end unknown tx", wire.TransactionEnd, 1234, "T\x00", wire.Error, "ENOENT\x00"},
		{"tx start in tx", wire.TransactionStart, 5, "\x00", wire.Error, "EINVAL\x00"},
		{"privileged op", wire.Introduce, 0, "1\x002\x003\x00", wire.Error, "EACCES\x00"},
		{"is introduced by domU", wire.IsDomainIntroduced, 0, "5\x00", wire.Error, "EACCES\x00"},
		{"unknown type", wire.Type(77), 0, "", wire.Error, "ENOSYS\x00"},
		{"watch event from client", wire.WatchEvent, 0, "a\x00b\x00", wire.Error, "ENOSYS\x00"},
		{"unwatch unknown", wire.Unwatch, 0, "a\x00t\x00", wire.Error, "ENOENT\x00"},
		{"rm root", wire.Rm, 0, "/\x00", wire.Error, "EINVAL\x00"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := c.do(tc.typ, tc.tx, tc.payload)
			if m.Type != tc.want || string(m.Payload) != tc.reply || m.ReqID != 99 || m.TxID != tc.tx {
				t.Fatalf("got %s %q (req %d tx %d), want %s %q", m.Type, m.Payload, m.ReqID, m.TxID, tc.want, tc.reply)
			}
		})
	}
}

func TestServerRelativeWatchAndReset(t *testing.T) {
	s := memstore.New()
	defer s.Close()
	c := newRaw(t, s, 5)
	if m := c.do(wire.Watch, 0, "data\x00tok\x00"); m.Type != wire.Watch {
		t.Fatalf("watch: %s %q", m.Type, m.Payload)
	}
	if m := c.next(); m.Type != wire.WatchEvent || string(m.Payload) != "data\x00tok\x00" {
		t.Fatalf("initial event %s %q", m.Type, m.Payload)
	}
	if m := c.do(wire.Watch, 0, "data\x00tok\x00"); string(m.Payload) != "EEXIST\x00" {
		t.Fatalf("duplicate watch: %q", m.Payload)
	}
	s.Write("/local/domain/5/data/x", "1")
	if m := c.next(); m.Type != wire.WatchEvent || string(m.Payload) != "data/x\x00tok\x00" {
		t.Fatalf("relative event %s %q", m.Type, m.Payload)
	}
	c.do(wire.TransactionStart, 0, "\x00")
	if m := c.do(wire.ResetWatches, 0, ""); m.Type != wire.ResetWatches {
		t.Fatalf("reset: %s %q", m.Type, m.Payload)
	}
	s.Write("/local/domain/5/data/x", "2")
	if m := c.do(wire.Read, 0, "data/x\x00"); m.Type != wire.Read || string(m.Payload) != "2" {
		t.Fatalf("after reset, got %s %q (a watch event?)", m.Type, m.Payload)
	}
}

func TestServerDropsHostileClient(t *testing.T) {
	s := memstore.New()
	defer s.Close()
	for _, tc := range []struct {
		name string
		prep func(c *rawClient)
	}{
		{"payload too long", func(c *rawClient) {
			wire.Header{Type: wire.Read, Len: wire.PayloadMax + 1}.Put(c.page[xsring.OffReq:])
			c.r.Store(xsring.OffReqProd, wire.HeaderSize)
		}},
		{"req_prod far ahead", func(c *rawClient) { c.r.Store(xsring.OffReqProd, 100000) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newRaw(t, s, 5)
			tc.prep(c)
			c.n.Notify()
			deadline := time.Now().Add(5 * time.Second)
			for c.conn.Err() == nil && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
			if !errors.Is(c.conn.Err(), xsring.ErrCorrupt) {
				t.Fatalf("conn error %v", c.conn.Err())
			}
		})
	}
	// The store keeps serving others.
	g, err := s.Connect(6)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := g.WriteString(ctx, "ok", "1"); err != nil {
		t.Fatal(err)
	}
}
