package vchan

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"testing"
	"time"

	"github.com/gozen-dev/gozen/xenbus/memstore"
	"github.com/gozen-dev/gozen/xenbus/wire"
)

// TestXenStore runs the rendezvous through the xenstore adapter over the
// in-process xenstore, which enforces permissions as xenstored does: the
// client dials before the server listens (it waits on a watch), the nodes
// are readable by the client domain and by no third domain, and the server
// removes them on Close.
func TestXenStore(t *testing.T) {
	r := newRig(t, 4096, 4096)
	xs := memstore.New()
	defer xs.Close()
	srvXS, err := xs.Connect(srvDom)
	if err != nil {
		t.Fatal(err)
	}
	cliXS, err := xs.Connect(cliDom)
	if err != nil {
		t.Fatal(err)
	}
	otherXS, err := xs.Connect(3)
	if err != nil {
		t.Fatal(err)
	}
	r.srvCfg.Store = NewXenStore(srvXS, srvDom)
	r.srvCfg.Path = ServerPath(cliDom, "7") // relative, as libxenvchan users write it
	r.cliCfg.Store = NewXenStore(cliXS, cliDom)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()

	dialed := make(chan *Conn, 1)
	dialErr := make(chan error, 1)
	go func() {
		c, err := Dial(ctx, r.cliCfg)
		dialErr <- err
		dialed <- c
	}()
	time.Sleep(50 * time.Millisecond) // let Dial find nothing and watch
	l, err := Listen(ctx, r.srvCfg)
	if err != nil {
		t.Fatalf("Listen: %v", err)
	}
	for _, node := range []string{"ring-ref", "event-channel"} {
		p := r.cliCfg.Path + "/" + node
		perms, err := xs.GetPerms(p)
		if err != nil {
			t.Fatal(err)
		}
		want := []wire.Perm{{Dom: srvDom, Access: wire.AccessNone}, {Dom: cliDom, Access: wire.AccessRead}}
		if len(perms) != 2 || perms[0] != want[0] || perms[1] != want[1] {
			t.Errorf("%s has permissions %v, want %v", p, perms, want)
		}
		if _, err := otherXS.ReadString(ctx, p); !errors.Is(err, fs.ErrPermission) {
			t.Errorf("domain 3 reading %s: %v, want a permission error", p, err)
		}
	}
	srv, err := l.Accept(ctx)
	if err != nil {
		t.Fatalf("Accept: %v", err)
	}
	if err := <-dialErr; err != nil {
		t.Fatalf("Dial: %v", err)
	}
	cli := <-dialed
	go func() { cli.Write([]byte("over xenstore")); cli.Close() }()
	got, err := io.ReadAll(srv)
	if err != nil || string(got) != "over xenstore" {
		t.Errorf("server read %q, %v", got, err)
	}
	if err := srv.Close(); err != nil {
		t.Errorf("server Close: %v", err)
	}
	// gone: ENOENT, or EACCES as xenstored answers when the nearest
	// existing ancestor (the server's data directory) is not ours to read
	if _, err := cliXS.ReadString(ctx, r.cliCfg.Path+"/ring-ref"); !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, fs.ErrPermission) {
		t.Errorf("ring-ref after Close: %v, want not-exist or permission denied", err)
	}
	if err := NewXenStore(srvXS, srvDom).Rm(ctx, r.srvCfg.Path); err != nil {
		t.Errorf("removing a missing node: %v", err)
	}
}
