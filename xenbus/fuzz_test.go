package xenbus_test

import (
	"context"
	"testing"
	"time"

	"github.com/gozen-dev/gozen/xenbus/wire"
	"github.com/gozen-dev/gozen/xenbus/xsring"
)

// FuzzClientReplies answers a client's READ with arbitrary bytes in the
// response xsring. The client must never panic, and every call must return
// once the client gives up or is closed.
func FuzzClientReplies(f *testing.F) {
	ok, _ := wire.Msg{Header: wire.Header{Type: wire.Read, ReqID: 1}, Payload: []byte("v")}.Marshal()
	f.Add(ok)
	errMsg, _ := wire.Msg{Header: wire.Header{Type: wire.Error, ReqID: 1}, Payload: []byte("EACCES\x00")}.Marshal()
	f.Add(errMsg)
	ev, _ := wire.Msg{Header: wire.Header{Type: wire.WatchEvent}, Payload: []byte("/x\x00gozen1\x00")}.Marshal()
	f.Add(append(ev, ok...))
	f.Add([]byte{2, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0x20, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > 1024 {
			b = b[:1024]
		}
		fs, c := newFake(t)
		rctx, rcancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer rcancel()
		// Register watch token gozen1, so events can match it.
		go func() {
			if m, err := fs.srv.ReadMsg(rctx); err == nil {
				fs.reply(m, wire.Watch, "OK\x00")
			}
		}()
		w, err := c.Watch(rctx, "/x")
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			for range w.Events() {
			}
		}()
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			c.Read(ctx, "x")
			close(done)
		}()
		if _, err := fs.srv.ReadMsg(rctx); err != nil {
			t.Fatal(err)
		}
		fs.raw(b)
		deadline := time.Now().Add(50 * time.Millisecond)
		for time.Now().Before(deadline) && c.Err() == nil &&
			fs.srv.Load(xsring.OffRspCons) != fs.srv.Load(xsring.OffRspProd) {
			time.Sleep(time.Millisecond)
		}
		cancel()
		c.Close()
		select {
		case <-done:
		case <-time.After(2 * time.Second):
			t.Fatal("call did not return after Close")
		}
	})
}
