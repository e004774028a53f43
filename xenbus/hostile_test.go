package xenbus_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/gozen-dev/gozen/xenbus"
	"github.com/gozen-dev/gozen/xenbus/wire"
	"github.com/gozen-dev/gozen/xenbus/xsring"
)

// fakeServer is a scripted xenstored on the server side of a page.
type fakeServer struct {
	page []byte
	srv  *xsring.Ring
	n    *xsring.LocalNotifier
}

func newFake(t *testing.T) (*fakeServer, *xenbus.Client) {
	t.Helper()
	page := make([]byte, xsring.PageSize)
	cn, sn := xsring.NewLocalPair()
	srv, err := xsring.New(page, xsring.Server, sn)
	if err != nil {
		t.Fatal(err)
	}
	c, err := xenbus.New(page, cn, 5)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close(); srv.Close(); cn.Close() })
	return &fakeServer{page, srv, sn}, c
}

func (f *fakeServer) reply(m wire.Msg, t wire.Type, payload string) {
	f.srv.WriteMsg(context.Background(), wire.Msg{Header: wire.Header{Type: t, ReqID: m.ReqID, TxID: m.TxID}, Payload: []byte(payload)})
}

// raw appends bytes to the response ring without any checks.
func (f *fakeServer) raw(b []byte) {
	prod := f.srv.Load(xsring.OffRspProd)
	for i, c := range b {
		f.page[xsring.OffRsp+int((prod+uint32(i))%xsring.Size)] = c
	}
	f.srv.Store(xsring.OffRspProd, prod+uint32(len(b)))
	f.n.Notify()
}

func hdr(t wire.Type, id, l uint32) []byte {
	b := make([]byte, wire.HeaderSize)
	wire.Header{Type: t, ReqID: id, Len: l}.Put(b)
	return b
}

func TestHostileReplies(t *testing.T) {
	type op func(ctx context.Context, c *xenbus.Client) error
	read := func(ctx context.Context, c *xenbus.Client) error { _, err := c.Read(ctx, "x"); return err }
	dir := func(ctx context.Context, c *xenbus.Client) error { _, err := c.Directory(ctx, "x"); return err }
	perms := func(ctx context.Context, c *xenbus.Client) error { _, err := c.GetPerms(ctx, "x"); return err }
	write := func(ctx context.Context, c *xenbus.Client) error { return c.WriteString(ctx, "x", "v") }
	txStart := func(ctx context.Context, c *xenbus.Client) error { _, err := c.TransactionStart(ctx); return err }
	domPath := func(ctx context.Context, c *xenbus.Client) error { _, err := c.GetDomainPath(ctx, 1); return err }

	tests := []struct {
		name    string
		op      op
		respond func(f *fakeServer, m wire.Msg)
		want    error // errors.Is target; nil means success
		fatal   bool  // the connection must be dead afterwards
		check   func(t *testing.T, c *xenbus.Client)
	}{
		{"error EACCES", read, func(f *fakeServer, m wire.Msg) { f.reply(m, wire.Error, "EACCES\x00") }, wire.ErrAccess, false, nil},
		{"error EAGAIN", write, func(f *fakeServer, m wire.Msg) { f.reply(m, wire.Error, "EAGAIN\x00") }, wire.ErrAgain, false, nil},
		{"error unknown name", read, func(f *fakeServer, m wire.Msg) { f.reply(m, wire.Error, "EWEIRD\x00") }, &wire.XSError{Name: "EWEIRD"}, false, nil},
		{"error unterminated", read, func(f *fakeServer, m wire.Msg) { f.reply(m, wire.Error, "ENOENT") }, wire.ErrMalformed, false, nil},
		{"error empty payload", read, func(f *fakeServer, m wire.Msg) { f.reply(m, wire.Error, "") }, wire.ErrMalformed, false, nil},
		{"wrong reply type", read, func(f *fakeServer, m wire.Msg) { f.reply(m, wire.Directory, "a\x00") }, wire.ErrMalformed, false, nil},
		{"write reply not OK string", write, func(f *fakeServer, m wire.Msg) { f.reply(m, wire.Write, "OK") }, wire.ErrMalformed, false, nil},
		{"directory unterminated", dir, func(f *fakeServer, m wire.Msg) { f.reply(m, wire.Directory, "a\x00b") }, wire.ErrMalformed, false, nil},
		{"perms bad letter", perms, func(f *fakeServer, m wire.Msg) { f.reply(m, wire.GetPerms, "x5\x00") }, wire.ErrMalformed, false, nil},
		{"perms bad domid", perms, func(f *fakeServer, m wire.Msg) { f.reply(m, wire.GetPerms, "r99999\x00") }, wire.ErrMalformed, false, nil},
		{"perms empty", perms, func(f *fakeServer, m wire.Msg) { f.reply(m, wire.GetPerms, "") }, wire.ErrMalformed, false, nil},
		{"tx id not a number", txStart, func(f *fakeServer, m wire.Msg) { f.reply(m, wire.TransactionStart, "abc\x00") }, wire.ErrMalformed, false, nil},
		{"tx id zero", txStart, func(f *fakeServer, m wire.Msg) { f.reply(m, wire.TransactionStart, "0\x00") }, wire.ErrMalformed, false, nil},
		{"domain path trailing junk", domPath, func(f *fakeServer, m wire.Msg) { f.reply(m, wire.GetDomainPath, "/a\x00b") }, wire.ErrMalformed, false, nil},
		{"unknown req_id then real reply", read, func(f *fakeServer, m wire.Msg) {
			f.srv.WriteMsg(context.Background(), wire.Msg{Header: wire.Header{Type: wire.Read, ReqID: m.ReqID + 1000}, Payload: []byte("bogus")})
			f.reply(m, wire.Read, "good")
		}, nil, false, func(t *testing.T, c *xenbus.Client) {
			if c.Stats().UnknownReplies != 1 {
				t.Errorf("stats %+v", c.Stats())
			}
		}},
		{"stray watch events", read, func(f *fakeServer, m wire.Msg) {
			f.srv.WriteMsg(context.Background(), wire.Msg{Header: wire.Header{Type: wire.WatchEvent}, Payload: []byte("/p\x00nosuchtoken\x00")})
			f.srv.WriteMsg(context.Background(), wire.Msg{Header: wire.Header{Type: wire.WatchEvent}, Payload: []byte("/p")})
			f.reply(m, wire.Read, "good")
		}, nil, false, func(t *testing.T, c *xenbus.Client) {
			if s := c.Stats(); s.UnknownWatches != 1 || s.MalformedEvents != 1 {
				t.Errorf("stats %+v", s)
			}
		}},
		{"payload too long", read, func(f *fakeServer, m wire.Msg) { f.raw(hdr(wire.Read, m.ReqID, wire.PayloadMax+1)) }, xsring.ErrCorrupt, true, nil},
		{"payload len 0xffffffff", read, func(f *fakeServer, m wire.Msg) { f.raw(hdr(wire.Read, m.ReqID, 0xffffffff)) }, xsring.ErrCorrupt, true, nil},
		{"rsp_prod far ahead", read, func(f *fakeServer, m wire.Msg) {
			f.srv.Store(xsring.OffRspProd, f.srv.Load(xsring.OffRspCons)+xsring.Size+1)
			f.n.Notify()
		}, xsring.ErrCorrupt, true, nil},
		{"rsp_prod behind rsp_cons", read, func(f *fakeServer, m wire.Msg) {
			f.srv.Store(xsring.OffRspProd, f.srv.Load(xsring.OffRspCons)-1)
			f.n.Notify()
		}, xsring.ErrCorrupt, true, nil},
		{"req_cons moved beyond req_prod", read, func(f *fakeServer, m wire.Msg) {
			f.srv.Store(xsring.OffReqCons, f.srv.Load(xsring.OffReqProd)+5000)
			f.reply(m, wire.Read, "v")
		}, nil, false, func(t *testing.T, c *xenbus.Client) {
			// The next request detects the corrupt request xsring.
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			if _, err := c.Read(ctx, "y"); !errors.Is(err, xsring.ErrCorrupt) {
				t.Errorf("next request: %v", err)
			}
		}},
		{"no reply", read, func(f *fakeServer, m wire.Msg) {}, context.DeadlineExceeded, false, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f, c := newFake(t)
			go func() {
				m, err := f.srv.ReadMsg(context.Background())
				if err == nil {
					tc.respond(f, m)
				}
			}()
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			err := tc.op(ctx, c)
			switch {
			case tc.want == nil && err != nil:
				t.Fatalf("got %v, want success", err)
			case tc.want != nil && !errors.Is(err, tc.want):
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			if tc.fatal {
				if !errors.Is(err, xenbus.ErrConnLost) || !errors.Is(c.Err(), xenbus.ErrConnLost) {
					t.Fatalf("connection not marked lost: %v / %v", err, c.Err())
				}
				if _, err := c.Read(context.Background(), "z"); !errors.Is(err, xenbus.ErrConnLost) {
					t.Fatalf("later call: %v", err)
				}
			} else if tc.check == nil && c.Err() != nil && !errors.Is(tc.want, xsring.ErrCorrupt) {
				t.Fatalf("connection broken: %v", c.Err())
			}
			if tc.check != nil {
				tc.check(t, c)
			}
		})
	}
}

// A reply that arrives after its caller gave up is dropped quietly, and a
// transaction started that way is ended.
func TestLateReplies(t *testing.T) {
	f, c := newFake(t)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := c.TransactionStart(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v", err)
	}
	bg, cancel2 := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel2()
	m, err := f.srv.ReadMsg(bg)
	if err != nil || m.Type != wire.TransactionStart {
		t.Fatalf("got %v %v", m.Header, err)
	}
	f.reply(m, wire.TransactionStart, "42\x00")
	end, err := f.srv.ReadMsg(bg)
	if err != nil || end.Type != wire.TransactionEnd || end.TxID != 42 || string(end.Payload) != "F\x00" {
		t.Fatalf("orphan transaction not aborted: %+v %q %v", end.Header, end.Payload, err)
	}
	if s := c.Stats(); s.UnknownReplies != 0 {
		t.Fatalf("late reply counted as unknown: %+v", s)
	}
}
