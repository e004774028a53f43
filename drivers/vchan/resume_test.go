package vchan

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gozen-dev/gozen/domid"
	"github.com/gozen-dev/gozen/evtchn"
	"github.com/gozen-dev/gozen/gnttab"
)

// resumingEvents is an in-heap domain's event channels that can be
// "resumed as a new domain", as evxen is after xl restore: the epoch
// moves on, waiters wake with ErrResumed, and every later use of a port
// bound before counts as a stale touch (in Xen its number may by then be
// another binding's).
type resumingEvents struct {
	evtchn.Events
	mu     sync.Mutex
	epoch  atomic.Uint64
	bound  map[evtchn.Port]uint64 // port -> epoch it was bound in
	stale  atomic.Int64
	cancel []context.CancelFunc
}

func newResumingEvents(ev evtchn.Events) *resumingEvents {
	return &resumingEvents{Events: ev, bound: map[evtchn.Port]uint64{}}
}

func (r *resumingEvents) Epoch() uint64 { return r.epoch.Load() }

func (r *resumingEvents) note(p evtchn.Port) {
	r.mu.Lock()
	r.bound[p] = r.epoch.Load()
	r.mu.Unlock()
}

// old reports (and counts) a use of a port bound before the last resume.
func (r *resumingEvents) old(p evtchn.Port) bool {
	r.mu.Lock()
	e, ok := r.bound[p]
	r.mu.Unlock()
	if ok && e != r.epoch.Load() {
		r.stale.Add(1)
		return true
	}
	return false
}

func (r *resumingEvents) AllocUnbound(remote domid.ID) (evtchn.Port, error) {
	p, err := r.Events.AllocUnbound(remote)
	if err == nil {
		r.note(p)
	}
	return p, err
}

func (r *resumingEvents) BindInterdomain(remote domid.ID, rp evtchn.Port) (evtchn.Port, error) {
	p, err := r.Events.BindInterdomain(remote, rp)
	if err == nil {
		r.note(p)
	}
	return p, err
}

func (r *resumingEvents) Notify(p evtchn.Port) error {
	if r.old(p) {
		return fmt.Errorf("stale notify of port %d: %w", p, evtchn.ErrBadPort)
	}
	return r.Events.Notify(p)
}

func (r *resumingEvents) Close(p evtchn.Port) error {
	if r.old(p) {
		return fmt.Errorf("stale close of port %d: %w", p, evtchn.ErrBadPort)
	}
	return r.Events.Close(p)
}

func (r *resumingEvents) Wait(ctx context.Context, p evtchn.Port, seen evtchn.Generation) (evtchn.Generation, error) {
	if r.old(p) {
		return seen, fmt.Errorf("stale wait on port %d: %w", p, evtchn.ErrBadPort)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	r.mu.Lock()
	r.cancel = append(r.cancel, cancel)
	e := r.epoch.Load()
	r.mu.Unlock()
	g, err := r.Events.Wait(ctx, p, seen)
	if r.epoch.Load() != e {
		return seen, fmt.Errorf("wait on port %d: %w (%w)", p, evtchn.ErrResumed, evtchn.ErrClosed)
	}
	return g, err
}

// resume moves to a new epoch and wakes every waiter, as Reset does.
func (r *resumingEvents) resume() {
	r.mu.Lock()
	r.epoch.Add(1)
	cs := r.cancel
	r.cancel = nil
	r.mu.Unlock()
	for _, c := range cs {
		c()
	}
}

// resumingMemory forgets, after resume, the shares and mappings made
// before, as gntxen does: releasing one reports gnttab.ErrResumed.
type resumingMemory struct {
	gnttab.SharedMemory
	mu     sync.Mutex
	before map[*byte]bool
	all    []*byte
}

func newResumingMemory(m gnttab.SharedMemory) *resumingMemory {
	return &resumingMemory{SharedMemory: m, before: map[*byte]bool{}}
}

func (r *resumingMemory) Share(remote domid.ID, pages int, writable bool) (*gnttab.Share, error) {
	s, err := r.SharedMemory.Share(remote, pages, writable)
	if err == nil {
		r.mu.Lock()
		r.all = append(r.all, &s.Buf[0])
		r.mu.Unlock()
	}
	return s, err
}

func (r *resumingMemory) Map(remote domid.ID, refs []gnttab.Ref, writable bool) (*gnttab.Mapping, error) {
	m, err := r.SharedMemory.Map(remote, refs, writable)
	if err == nil {
		r.mu.Lock()
		r.all = append(r.all, &m.Buf[0])
		r.mu.Unlock()
	}
	return m, err
}

func (r *resumingMemory) lost(b []byte) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.before[&b[0]]
}

func (r *resumingMemory) Unshare(s *gnttab.Share) error {
	if r.lost(s.Buf) {
		return fmt.Errorf("unshare %v: %w", s.Refs, gnttab.ErrResumed)
	}
	return r.SharedMemory.Unshare(s)
}

func (r *resumingMemory) Unmap(m *gnttab.Mapping) error {
	if r.lost(m.Buf) {
		return fmt.Errorf("unmap %v: %w", m.Refs, gnttab.ErrResumed)
	}
	return r.SharedMemory.Unmap(m)
}

func (r *resumingMemory) resume() {
	r.mu.Lock()
	for _, b := range r.all {
		r.before[b] = true
	}
	r.mu.Unlock()
}

// TestResumedAsNewDomain resumes one end's domain as a new domain while a
// Read is blocked: the Read fails with ErrResumed (which wraps
// ErrPeerClosed), so do later Reads and Writes, and Close succeeds without
// touching the old port (whose number may be someone else's binding by
// then), for either role.
func TestResumedAsNewDomain(t *testing.T) {
	for _, role := range []string{"server", "client"} {
		t.Run(role, func(t *testing.T) {
			r := newRig(t, 0, 0)
			ev := newResumingEvents(r.srvEv)
			mem := newResumingMemory(r.srvMem)
			cfg := &r.srvCfg
			if role == "client" {
				ev, mem, cfg = newResumingEvents(r.cliEv), newResumingMemory(r.cliMem), &r.cliCfg
			}
			cfg.Events, cfg.Memory = ev, mem
			srv, cli := r.pair(t)
			me, peer := srv, cli
			if role == "client" {
				me, peer = cli, srv
			}
			if _, err := peer.Write([]byte("before")); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 16)
			if n, err := me.Read(buf); err != nil || string(buf[:n]) != "before" {
				t.Fatalf("Read before the resume: %q, %v", buf[:n], err)
			}
			errc := make(chan error, 1)
			go func() {
				_, err := me.Read(buf)
				errc <- err
			}()
			time.Sleep(20 * time.Millisecond) // let the Read block
			mem.resume()
			ev.resume()
			select {
			case err := <-errc:
				if !errors.Is(err, ErrResumed) || !errors.Is(err, ErrPeerClosed) {
					t.Fatalf("blocked Read after the resume: %v, want ErrResumed", err)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("a Read blocked across the resume was not woken")
			}
			if _, err := me.Read(buf); !errors.Is(err, ErrResumed) {
				t.Errorf("Read after the resume: %v, want ErrResumed", err)
			}
			if _, err := me.Write([]byte("after")); !errors.Is(err, ErrResumed) {
				t.Errorf("Write after the resume: %v, want ErrResumed", err)
			}
			if err := me.Close(); err != nil {
				t.Errorf("Close after the resume: %v", err)
			}
			if n := ev.stale.Load(); n != 0 {
				t.Errorf("%d uses of the port bound before the resume", n)
			}
			// The peer of a domain that vanished learns it from xenstore
			// (TestPeerDomainGone); here it just closes.
			peer.Close()
		})
	}
}

// TestResumedWhileIdle resumes the domain while nothing waits: the next
// Write fails with ErrResumed before it touches the ring or the port.
func TestResumedWhileIdle(t *testing.T) {
	r := newRig(t, 0, 0)
	ev := newResumingEvents(r.cliEv)
	mem := newResumingMemory(r.cliMem)
	r.cliCfg.Events, r.cliCfg.Memory = ev, mem
	srv, cli := r.pair(t)
	mem.resume()
	ev.resume()
	if _, err := cli.Write([]byte("x")); !errors.Is(err, ErrResumed) {
		t.Errorf("Write: %v, want ErrResumed", err)
	}
	if err := cli.CloseWrite(); err != nil {
		t.Errorf("CloseWrite: %v", err)
	}
	if err := cli.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if n := ev.stale.Load(); n != 0 {
		t.Errorf("%d uses of the port bound before the resume", n)
	}
	srv.Close()
}
