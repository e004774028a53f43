package xenbus_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gozen-dev/gozen/xenbus"
	"github.com/gozen-dev/gozen/xenbus/memstore"
	"github.com/gozen-dev/gozen/xenbus/wire"
	"github.com/gozen-dev/gozen/xenbus/xsring"
)

func setup(t *testing.T) (s *memstore.Store, dom0, guest *xenbus.Client, ctx context.Context) {
	t.Helper()
	s = memstore.New()
	t.Cleanup(func() { s.Close() })
	var err error
	if dom0, err = s.Connect(0); err != nil {
		t.Fatal(err)
	}
	if guest, err = s.Connect(5); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return s, dom0, guest, ctx
}

func TestRoundTrips(t *testing.T) {
	_, dom0, g, ctx := setup(t)
	if g.Home() != "/local/domain/5" {
		t.Fatalf("home %q", g.Home())
	}
	big := bytes.Repeat([]byte("v"), wire.PayloadMax-len("/local/domain/5/big")-1)
	vals := []struct {
		path string
		val  []byte
	}{
		{"a", []byte("1")},
		{"dir/b", []byte("two")},
		{"dir/c", []byte{}},
		{"dir/bin", []byte{0, 1, 2, 0xff, 0}},
		{"/local/domain/5/dir/abs", []byte("abs")},
		{"big", big},
	}
	for _, v := range vals {
		if err := g.Write(ctx, v.path, v.val); err != nil {
			t.Fatalf("write %s: %v", v.path, err)
		}
		got, err := g.Read(ctx, v.path)
		if err != nil || !bytes.Equal(got, v.val) {
			t.Fatalf("read %s: %q %v", v.path, got, err)
		}
	}
	if got, _ := dom0.ReadString(ctx, "/local/domain/5/dir/b"); got != "two" {
		t.Fatalf("dom0 read %q", got)
	}
	d, err := g.Directory(ctx, "dir")
	if err != nil || !slices.Equal(d, []string{"abs", "b", "bin", "c"}) {
		t.Fatalf("directory: %q %v", d, err)
	}
	if err := g.Mkdir(ctx, "dir/sub/deep"); err != nil {
		t.Fatal(err)
	}
	if v, err := g.Read(ctx, "dir/sub"); err != nil || len(v) != 0 {
		t.Fatalf("mkdir parent: %q %v", v, err)
	}
	if err := g.Rm(ctx, "dir"); err != nil {
		t.Fatal(err)
	}
	if _, err := g.Read(ctx, "dir/b"); !errors.Is(err, wire.ErrNotExist) || !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("after rm: %v", err)
	}
	if err := g.Rm(ctx, "dir"); err != nil {
		t.Fatalf("rm of missing node with parent: %v", err)
	}
	if err := g.Rm(ctx, "nope/nope"); !errors.Is(err, wire.ErrNotExist) {
		t.Fatalf("rm without parent: %v", err)
	}
	if p, err := g.GetDomainPath(ctx, 7); err != nil || p != "/local/domain/7" {
		t.Fatalf("GetDomainPath: %q %v", p, err)
	}
	// Local validation: bad paths never reach the wire.
	for _, p := range []string{"", "a//b", "a/", "/x y", "/é"} {
		if _, err := g.Read(ctx, p); !errors.Is(err, wire.ErrInvalid) {
			t.Errorf("path %q: %v", p, err)
		}
	}
	if err := g.Write(ctx, "x", make([]byte, wire.PayloadMax)); !errors.Is(err, wire.ErrTooLong) {
		t.Errorf("oversized write: %v", err)
	}
	if err := g.Err(); err != nil {
		t.Fatal(err)
	}
}

func TestPermissions(t *testing.T) {
	s, dom0, g, ctx := setup(t)
	if err := s.Write("/local/domain/0/backend/vif/5/0/state", "1"); err != nil {
		t.Fatal(err)
	}
	be := "/local/domain/0/backend/vif/5/0"
	if _, err := g.Read(ctx, be+"/state"); !errors.Is(err, wire.ErrAccess) || !errors.Is(err, fs.ErrPermission) {
		t.Fatalf("read of dom0 node: %v", err)
	}
	if err := g.WriteString(ctx, be+"/state", "4"); !errors.Is(err, wire.ErrAccess) {
		t.Fatalf("write of dom0 node: %v", err)
	}
	if err := g.WriteString(ctx, "/local/domain/6/x", "4"); !errors.Is(err, wire.ErrAccess) {
		t.Fatalf("write outside home: %v", err)
	}
	// Grant read to domain 5 on the backend directory (as a toolstack does).
	for _, p := range []string{be, be + "/state"} {
		if err := dom0.SetPerms(ctx, p, []wire.Perm{{Dom: 0, Access: wire.AccessNone}, {Dom: 5, Access: wire.AccessRead}}); err != nil {
			t.Fatal(err)
		}
	}
	if v, err := g.ReadString(ctx, be+"/state"); err != nil || v != "1" {
		t.Fatalf("granted read: %q %v", v, err)
	}
	if err := g.WriteString(ctx, be+"/state", "4"); !errors.Is(err, wire.ErrAccess) {
		t.Fatalf("write with read-only grant: %v", err)
	}
	// Nodes the guest creates are owned by it; it may grant dom 7 access.
	if err := g.WriteString(ctx, "shared", "x"); err != nil {
		t.Fatal(err)
	}
	perms, err := g.GetPerms(ctx, "shared")
	if err != nil || len(perms) == 0 || perms[0].Dom != 5 {
		t.Fatalf("perms of own node: %v %v", perms, err)
	}
	want := []wire.Perm{{Dom: 5, Access: wire.AccessNone}, {Dom: 7, Access: wire.AccessBoth}}
	if err := g.SetPerms(ctx, "shared", want); err != nil {
		t.Fatal(err)
	}
	if got, err := dom0.GetPerms(ctx, "/local/domain/5/shared"); err != nil || !slices.Equal(got, want) {
		t.Fatalf("GetPerms: %v %v", got, err)
	}
	// The guest cannot give its node away nor change dom0's.
	if err := g.SetPerms(ctx, "shared", []wire.Perm{{Dom: 7, Access: wire.AccessNone}}); !errors.Is(err, wire.ErrAccess) {
		t.Fatalf("owner change: %v", err)
	}
	if err := g.SetPerms(ctx, be, []wire.Perm{{Dom: 5, Access: wire.AccessBoth}}); !errors.Is(err, wire.ErrAccess) {
		t.Fatalf("SetPerms on dom0 node: %v", err)
	}
	// Domain 7 (not the owner, granted b7) can read and write it.
	d7, err := s.Connect(7)
	if err != nil {
		t.Fatal(err)
	}
	if err := d7.WriteString(ctx, "/local/domain/5/shared", "from7"); err != nil {
		t.Fatal(err)
	}
	if v, _ := g.ReadString(ctx, "shared"); v != "from7" {
		t.Fatalf("got %q", v)
	}
}

func nextEvent(t *testing.T, w *xenbus.Watch) string {
	t.Helper()
	select {
	case ev, ok := <-w.Events():
		if !ok {
			t.Fatal("watch channel closed")
		}
		return ev.Path
	case <-time.After(5 * time.Second):
		t.Fatal("no watch event")
	}
	return ""
}

func noEvent(t *testing.T, w *xenbus.Watch) {
	t.Helper()
	select {
	case ev := <-w.Events():
		t.Fatalf("unexpected event %q", ev.Path)
	case <-time.After(50 * time.Millisecond):
	}
}

func TestWatch(t *testing.T) {
	s, dom0, g, ctx := setup(t)
	if err := dom0.WriteString(ctx, "/local/domain/5/device/vif/0/state", "1"); err != nil {
		t.Fatal(err)
	}
	w, err := g.Watch(ctx, "device/vif/0")
	if err != nil {
		t.Fatal(err)
	}
	if w.Path() != "/local/domain/5/device/vif/0" {
		t.Fatalf("path %q", w.Path())
	}
	if p := nextEvent(t, w); p != w.Path() {
		t.Fatalf("initial event %q", p)
	}
	if err := dom0.WriteString(ctx, "/local/domain/5/device/vif/0/state", "2"); err != nil {
		t.Fatal(err)
	}
	if p := nextEvent(t, w); p != w.Path()+"/state" {
		t.Fatalf("event %q", p)
	}
	// Unrelated writes do not fire.
	dom0.WriteString(ctx, "/local/domain/5/device/vif/1/state", "2")
	dom0.WriteString(ctx, "/local/domain/5/device/vif/0x", "2")
	noEvent(t, w)
	// Removal of a parent fires with the watched path.
	if err := s.Rm("/local/domain/5/device"); err != nil {
		t.Fatal(err)
	}
	if p := nextEvent(t, w); p != w.Path() {
		t.Fatalf("removal event %q", p)
	}
	// A watch on a node the guest cannot read does not leak events.
	s.Write("/secret/x", "1")
	ws, err := g.Watch(ctx, "/secret")
	if err != nil {
		t.Fatal(err)
	}
	nextEvent(t, ws) // the initial event always fires
	s.Write("/secret/x", "2")
	noEvent(t, ws)
	// Special watches.
	wi, err := dom0.Watch(ctx, "@introduceDomain")
	if err != nil {
		t.Fatal(err)
	}
	if p := nextEvent(t, wi); p != "@introduceDomain" {
		t.Fatalf("special initial %q", p)
	}
	s.AddDomain(9)
	if p := nextEvent(t, wi); p != "@introduceDomain" {
		t.Fatalf("special %q", p)
	}
	// Unwatch closes the channel and stops events.
	if err := w.Unwatch(ctx); err != nil {
		t.Fatal(err)
	}
	if _, ok := <-w.Events(); ok {
		t.Fatal("channel still open after Unwatch")
	}
	if err := w.Unwatch(ctx); err != nil {
		t.Fatalf("second Unwatch: %v", err)
	}
}

func TestWatchSlowConsumerCollapses(t *testing.T) {
	_, dom0, g, ctx := setup(t)
	w, err := g.Watch(ctx, "q")
	if err != nil {
		t.Fatal(err)
	}
	// Do not consume while 3000 distinct events arrive.
	for i := range 3000 {
		if err := dom0.WriteString(ctx, fmt.Sprintf("/local/domain/5/q/k%d", i), "x"); err != nil {
			t.Fatal(err)
		}
	}
	// The client must still answer calls (reader goroutine not blocked).
	if _, err := g.Read(ctx, "q/k1"); err != nil {
		t.Fatal(err)
	}
	n := 0
	sawRescan := false
	for {
		select {
		case ev := <-w.Events():
			n++
			if ev.Path == w.Path() {
				sawRescan = true
			}
			continue
		case <-time.After(100 * time.Millisecond):
		}
		break
	}
	if n == 0 || n > 1100 || !sawRescan {
		t.Fatalf("got %d events, rescan %v", n, sawRescan)
	}
}

func TestTransactionConflictRetries(t *testing.T) {
	_, dom0, g, ctx := setup(t)
	if err := g.WriteString(ctx, "counter", "0"); err != nil {
		t.Fatal(err)
	}
	attempts := 0
	err := g.Transaction(ctx, func(tx *xenbus.Tx) error {
		attempts++
		v, err := tx.ReadString(ctx, "counter")
		if err != nil {
			return err
		}
		if attempts == 1 {
			// Someone else changes what we read: the commit must fail.
			if err := dom0.WriteString(ctx, "/local/domain/5/counter", "10"); err != nil {
				return err
			}
		}
		return tx.WriteString(ctx, "counter", v+"+1")
	})
	if err != nil {
		t.Fatal(err)
	}
	if attempts != 2 {
		t.Fatalf("attempts %d", attempts)
	}
	if v, _ := g.ReadString(ctx, "counter"); v != "10+1" {
		t.Fatalf("counter %q", v)
	}

	// A raw conflicting transaction reports EAGAIN.
	tx, err := g.TransactionStart(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := tx.WriteString(ctx, "counter", "tx"); err != nil {
		t.Fatal(err)
	}
	if v, _ := g.ReadString(ctx, "counter"); v != "10+1" {
		t.Fatalf("uncommitted write visible: %q", v)
	}
	dom0.WriteString(ctx, "/local/domain/5/counter", "other")
	if err := tx.End(ctx, true); !errors.Is(err, wire.ErrAgain) {
		t.Fatalf("End: %v", err)
	}
	if err := tx.End(ctx, true); !errors.Is(err, wire.ErrNotExist) {
		t.Fatalf("End of ended tx: %v", err)
	}

	// Non-conflicting concurrent changes commit; aborts discard.
	tx, _ = g.TransactionStart(ctx)
	tx.WriteString(ctx, "a/b", "1")
	tx.Rm(ctx, "counter")
	dom0.WriteString(ctx, "/local/domain/5/unrelated", "x")
	if err := tx.End(ctx, true); err != nil {
		t.Fatal(err)
	}
	if _, err := g.Read(ctx, "counter"); !errors.Is(err, wire.ErrNotExist) {
		t.Fatalf("rm in tx: %v", err)
	}
	tx, _ = g.TransactionStart(ctx)
	tx.WriteString(ctx, "a/b", "2")
	tx.End(ctx, false)
	if v, _ := g.ReadString(ctx, "a/b"); v != "1" {
		t.Fatalf("aborted write visible: %q", v)
	}
	// fn errors abort and are returned.
	boom := errors.New("boom")
	if err := g.Transaction(ctx, func(tx *xenbus.Tx) error {
		tx.WriteString(ctx, "a/b", "3")
		return boom
	}); !errors.Is(err, boom) {
		t.Fatalf("fn error: %v", err)
	}
	if v, _ := g.ReadString(ctx, "a/b"); v != "1" {
		t.Fatalf("after fn error: %q", v)
	}
}

func TestTransactionWatchFiresOnCommit(t *testing.T) {
	_, dom0, g, ctx := setup(t)
	w, err := dom0.Watch(ctx, "/local/domain/5/dev")
	if err != nil {
		t.Fatal(err)
	}
	nextEvent(t, w)
	err = g.Transaction(ctx, func(tx *xenbus.Tx) error {
		if err := tx.WriteString(ctx, "dev/ring-ref", "8"); err != nil {
			return err
		}
		return tx.WriteString(ctx, "dev/event-channel", "3")
	})
	if err != nil {
		t.Fatal(err)
	}
	got := []string{nextEvent(t, w), nextEvent(t, w)}
	slices.Sort(got)
	if got[0] != "/local/domain/5/dev/event-channel" || got[1] != "/local/domain/5/dev/ring-ref" {
		t.Fatalf("events %q", got)
	}
}

func TestConcurrentRequests(t *testing.T) {
	_, _, g, ctx := setup(t)
	const goroutines, each = 50, 20 // 1000 write+read pairs
	var wg sync.WaitGroup
	var bad atomic.Int32
	for i := range goroutines {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range each {
				key := fmt.Sprintf("c/g%d/k%d", i, j)
				val := fmt.Sprintf("%d-%d", i, j)
				if err := g.WriteString(ctx, key, val); err != nil {
					t.Error(err)
					bad.Add(1)
					return
				}
				if v, err := g.ReadString(ctx, key); err != nil || v != val {
					t.Errorf("%s: got %q %v", key, v, err)
					bad.Add(1)
					return
				}
			}
		}()
	}
	wg.Wait()
	if bad.Load() != 0 {
		t.Fatal("some requests failed")
	}
	d, err := g.Directory(ctx, "c")
	if err != nil || len(d) != goroutines {
		t.Fatalf("directory: %d %v", len(d), err)
	}
}

func TestDialDiscoversDomID(t *testing.T) {
	s := memstore.New()
	defer s.Close()
	s.AddDomain(12)
	page := make([]byte, xsring.PageSize)
	cn, sn := xsring.NewLocalPair()
	defer cn.Close()
	if _, err := s.Serve(page, sn, 12); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := xenbus.Dial(ctx, page, cn)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if c.Home() != "/local/domain/12" {
		t.Fatalf("home %q", c.Home())
	}
}

func TestCloseWakesEverything(t *testing.T) {
	_, _, g, ctx := setup(t)
	w, err := g.Watch(ctx, "x")
	if err != nil {
		t.Fatal(err)
	}
	g.Close()
	for range w.Events() {
	}
	if _, err := g.Read(ctx, "x"); !errors.Is(err, xenbus.ErrClosed) {
		t.Fatalf("after Close: %v", err)
	}
	if _, err := g.Watch(ctx, "x"); !errors.Is(err, xenbus.ErrClosed) {
		t.Fatalf("Watch after Close: %v", err)
	}
	g.Close() // idempotent
}
