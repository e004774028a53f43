package vchan

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/gozen-dev/gozen/domid"
	"github.com/gozen-dev/gozen/evtchn/evheap"
	"github.com/gozen-dev/gozen/gnttab/gntheap"
)

const (
	srvDom domid.ID = 1
	cliDom domid.ID = 2
)

// rig is two in-heap domains and a store: a server in domain 1 and a
// client in domain 2.
type rig struct {
	ev      *evheap.Hub
	gn      *gntheap.Hub
	store   *MemStore
	srvEv   *evheap.Domain
	cliEv   *evheap.Domain
	srvMem  *gntheap.Domain
	cliMem  *gntheap.Domain
	srvCfg  Config
	cliCfg  Config
	timeout time.Duration
}

func newRig(t testing.TB, readMin, writeMin int) *rig {
	t.Helper()
	r := &rig{ev: evheap.NewHub(), gn: gntheap.NewHub(), store: &MemStore{}}
	var err error
	must := func(e error) {
		if e != nil {
			t.Fatal(e)
		}
	}
	r.srvEv, err = r.ev.Domain(srvDom)
	must(err)
	r.cliEv, err = r.ev.Domain(cliDom)
	must(err)
	r.srvMem, err = r.gn.Domain(srvDom)
	must(err)
	r.cliMem, err = r.gn.Domain(cliDom)
	must(err)
	r.srvCfg = Config{Events: r.srvEv, Memory: r.srvMem, Store: r.store, Remote: cliDom, Self: srvDom,
		Path: Path(srvDom, cliDom, "7"), ReadMin: readMin, WriteMin: writeMin, CloseTimeout: 2 * time.Second}
	r.cliCfg = Config{Events: r.cliEv, Memory: r.cliMem, Store: r.store, Remote: srvDom, Self: cliDom,
		Path: Path(srvDom, cliDom, "7")}
	return r
}

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// pair connects a server and a client.
func (r *rig) pair(t testing.TB) (srv, cli *Conn) {
	t.Helper()
	ctx := ctxT(t)
	l, err := Listen(ctx, r.srvCfg)
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	cli, err = Dial(ctx, r.cliCfg)
	if err != nil {
		l.Close()
		t.Fatalf("Dial: %v", err)
	}
	srv, err = l.Accept(ctx)
	if err != nil {
		t.Fatalf("Accept: %v", err)
	}
	return srv, cli
}

// closeBoth closes both ends concurrently and checks there is no error.
func closeBoth(t testing.TB, srv, cli *Conn) {
	t.Helper()
	errc := make(chan error, 1)
	go func() { errc <- srv.Close() }()
	if err := cli.Close(); err != nil {
		t.Errorf("client Close: %v", err)
	}
	if err := <-errc; err != nil {
		t.Errorf("server Close: %v", err)
	}
}

// leftovers fails the test if any port, grant, mapping or xenstore node
// is still held.
func (r *rig) leftovers(t testing.TB) {
	t.Helper()
	if s := r.ev.Stats(); s.Ports != 0 {
		t.Errorf("leftover: %d event-channel ports", s.Ports)
	}
	if s := r.gn.Stats().String(); s != "" {
		t.Errorf("leftover: %s", s)
	}
	if n := r.store.Len(); n != 0 {
		t.Errorf("leftover: %d xenstore nodes", n)
	}
}

func isProtocol(err error) bool { return errors.Is(err, ErrProtocol) }
