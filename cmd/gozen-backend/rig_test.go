//go:build linux

package main

import (
	"bytes"
	"context"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gozen-dev/gozen/domid"
	"github.com/gozen-dev/gozen/evtchn/evheap"
	"github.com/gozen-dev/gozen/gnttab/gntheap"
	"github.com/gozen-dev/gozen/xenbus"
	"github.com/gozen-dev/gozen/xenbus/memstore"
	"github.com/gozen-dev/gozen/xenbus/wire"
)

// guestDom is the guest of the tests.
const guestDom domid.ID = 7

// rig is a store with a dom0 client over a Unix socket (the framing
// xslinux speaks to xenstored), a guest client, and the in-process event
// and grant hubs standing in for the kernel's devices.
type rig struct {
	t     *testing.T
	ctx   context.Context
	store *memstore.Store
	dom0  *xenbus.Client // over the socket
	guest *xenbus.Client
	ev    *evheap.Hub
	gn    *gntheap.Hub
	env   *env
	out   *syncBuffer
	// before is the store's tree before the device was created.
	before []string
}

// syncBuffer is a bytes.Buffer safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newRig(t *testing.T) *rig {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	r := &rig{t: t, ctx: ctx, store: memstore.New(), ev: evheap.NewHub(), gn: gntheap.NewHub(), out: &syncBuffer{}}
	t.Cleanup(func() { r.store.Close() })
	must(t, r.store.Write("/local/domain/0/domid", "0")) // as xen-init-dom0 writes it
	must(t, r.store.AddDomain(guestDom))
	ln, err := r.store.ListenUnix(filepath.Join(t.TempDir(), "xenstored.sock"), 0)
	must(t, err)
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			if _, err := ln.Accept(context.Background()); err != nil {
				return
			}
		}
	}()
	r.dom0, err = xenbus.DialUnix(ctx, ln.Path())
	must(t, err)
	t.Cleanup(func() { r.dom0.Close() })
	r.guest, err = r.store.Connect(guestDom)
	must(t, err)
	bev, err := r.ev.Domain(0)
	must(t, err)
	bgn, err := r.gn.Domain(0)
	must(t, err)
	r.env = &env{Store: r.dom0, Events: bev, Grants: bgn, Out: r.out}
	r.before = r.dump()
	return r
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// dump lists every node of the store as "path=value perms".
func (r *rig) dump() []string {
	var out []string
	var walk func(p string)
	walk = func(p string) {
		v, _ := r.store.Read(p)
		perms, _ := r.store.GetPerms(p)
		out = append(out, p+"="+v+" "+strings.Join(wire.PermStrings(perms), ","))
		kids, _ := r.store.Directory(p)
		slices.Sort(kids)
		for _, k := range kids {
			walk(strings.TrimSuffix(p, "/") + "/" + k)
		}
	}
	walk("/")
	return out
}

// checkClean checks that the store is as before the device and that no
// port or grant is left in either domain.
func (r *rig) checkClean() {
	r.t.Helper()
	if got := r.dump(); !slices.Equal(got, r.before) {
		r.t.Errorf("store after teardown:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(r.before, "\n"))
	}
	if s := r.ev.Stats(); s.Ports != 0 {
		r.t.Errorf("leftover: %d event-channel ports", s.Ports)
	}
	if s := r.gn.Stats().String(); s != "" {
		r.t.Errorf("leftover: %s", s)
	}
}

// waitNode waits until the node at p exists.
func (r *rig) waitNode(p string) {
	r.t.Helper()
	err := r.dom0.WaitFor(r.ctx, p, func() (bool, error) {
		_, err := r.store.Read(p)
		return err == nil, nil
	})
	must(r.t, err)
}

// waitOutput waits until the output contains s.
func (r *rig) waitOutput(s string) {
	r.t.Helper()
	for !strings.Contains(r.out.String(), s) {
		select {
		case <-r.ctx.Done():
			r.t.Fatalf("no %q in the output:\n%s", s, r.out.String())
		case <-time.After(5 * time.Millisecond):
		}
	}
}
