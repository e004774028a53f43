package vchan

import (
	"context"
	"errors"
	"fmt"
	"github.com/gozen-dev/gozen/domid"
	"io"
	"strconv"
	"testing"
	"time"

	"github.com/gozen-dev/gozen/evtchn"
	"github.com/gozen-dev/gozen/gnttab"
)

// within runs f and fails the test unless it returns within a second.
func within(t *testing.T, what string, f func() error) error {
	t.Helper()
	errc := make(chan error, 1)
	go func() { errc <- f() }()
	select {
	case err := <-errc:
		return err
	case <-time.After(time.Second):
		t.Fatalf("%s: still blocked after a second", what)
		return nil
	}
}

// TestHostileConnected corrupts the shared page from one end of a live
// channel and checks that the other end fails with ErrProtocol, promptly,
// and tears down cleanly.
func TestHostileConnected(t *testing.T) {
	for _, tc := range []struct {
		name string
		// victimIsServer selects which end suffers.
		victimIsServer bool
		// write: the victim writes instead of reading.
		write bool
		// corrupt damages the page through the hostile end.
		corrupt func(bad, victim *Conn)
	}{
		{"read prod past ring", true, false, func(bad, v *Conn) { bad.sh.store(v.rd.prodOff, v.rcons+v.rd.size+1) }},
		{"read prod behind cons", true, false, func(bad, v *Conn) { bad.sh.store(v.rd.prodOff, v.rcons-1) }},
		{"read prod huge (client)", false, false, func(bad, v *Conn) { bad.sh.store(v.rd.prodOff, 0x80000000) }},
		{"write cons past prod", true, true, func(bad, v *Conn) { bad.sh.store(v.wr.consOff, v.wprod+5) }},
		{"write cons far behind (client)", false, true, func(bad, v *Conn) { bad.sh.store(v.wr.consOff, v.wprod-v.wr.size-1) }},
		{"client live 7", true, false, func(bad, v *Conn) { bad.sh.setFlag(flagCliLive, 7) }},
		{"client live back to waiting", true, true, func(bad, v *Conn) { bad.sh.setFlag(flagCliLive, liveWaiting) }},
		{"server live 200", false, false, func(bad, v *Conn) { bad.sh.setFlag(flagSrvLive, 200) }},
		{"server live waiting", false, true, func(bad, v *Conn) { bad.sh.setFlag(flagSrvLive, liveWaiting) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, 4096, 0)
			srv, cli := r.pair(t)
			victim, bad := cli, srv
			if tc.victimIsServer {
				victim, bad = srv, cli
			}
			if tc.write {
				// Fill the victim's write ring so its Write blocks.
				victim.SetWriteDeadline(time.Now().Add(10 * time.Millisecond))
				victim.Write(make([]byte, victim.wr.size))
				victim.SetWriteDeadline(time.Time{})
			}
			err := within(t, "victim", func() error {
				go func() {
					time.Sleep(10 * time.Millisecond)
					tc.corrupt(bad, victim)
					bad.cfg.Events.Notify(bad.port)
				}()
				var err error
				if tc.write {
					_, err = victim.Write([]byte("data"))
				} else {
					_, err = victim.Read(make([]byte, 10))
				}
				return err
			})
			if !isProtocol(err) {
				t.Fatalf("victim got %v, want ErrProtocol", err)
			}
			// The error sticks, and the hostile end sees the victim gone.
			if _, err := victim.Read(make([]byte, 1)); !isProtocol(err) {
				t.Errorf("next Read: %v, want ErrProtocol", err)
			}
			if got := bad.sh.flag(victim.myLive); got != liveClosed {
				t.Errorf("victim's live flag is %d after the violation, want 0", got)
			}
			closeBoth(t, srv, cli)
			r.leftovers(t)
		})
	}
}

// hostileServer advertises a hand-made control page.
type hostileServer struct {
	r     *rig
	page  *gnttab.Share
	ring  *gnttab.Share
	port  evtchn.Port
	sh    shared
	extra []byte
}

func newHostileServer(t *testing.T, r *rig) *hostileServer {
	h := &hostileServer{r: r}
	var err error
	if h.port, err = r.srvEv.AllocUnbound(cliDom); err != nil {
		t.Fatal(err)
	}
	if h.page, err = r.srvMem.Share(cliDom, 1, true); err != nil {
		t.Fatal(err)
	}
	// One real extra ring page, for layouts that need a grant.
	if h.ring, err = r.srvMem.Share(cliDom, 16, true); err != nil {
		t.Fatal(err)
	}
	h.sh, _ = newShared(h.page.Buf)
	h.sh.setFlag(flagSrvLive, liveOpen)
	h.sh.setFlag(flagCliLive, liveWaiting)
	return h
}

func (h *hostileServer) advertise(ctx context.Context, ref, port string) {
	if ref == "" {
		ref = strconv.Itoa(int(h.page.Refs[0]))
	}
	if port == "" {
		port = strconv.Itoa(int(h.port))
	}
	h.r.store.Write(ctx, h.r.cliCfg.Path+"/event-channel", port)
	h.r.store.Write(ctx, h.r.cliCfg.Path+"/ring-ref", ref)
}

func (h *hostileServer) close(t *testing.T) {
	h.r.store.Rm(context.Background(), h.r.cliCfg.Path)
	for _, s := range []*gnttab.Share{h.ring, h.page} {
		if err := h.r.srvMem.Unshare(s); err != nil {
			t.Errorf("hostile server: unshare: %v (the client kept a mapping)", err)
		}
	}
	h.r.srvEv.Close(h.port)
}

// TestHostileServerSetup offers Dial malformed control pages and
// advertisements: each must fail, promptly, leaving nothing mapped or
// bound.
func TestHostileServerSetup(t *testing.T) {
	for _, tc := range []struct {
		name      string
		ref, port string
		setup     func(h *hostileServer)
		want      error
	}{
		{"order 9", "", "", func(h *hostileServer) { h.sh.setOrders(9, 11) }, ErrProtocol},
		{"order 21", "", "", func(h *hostileServer) { h.sh.setOrders(12, 21) }, ErrProtocol},
		{"order 65535", "", "", func(h *hostileServer) { h.sh.setOrders(0xffff, 0xffff) }, ErrProtocol},
		{"orders 10 10 overlap", "", "", func(h *hostileServer) { h.sh.setOrders(10, 10) }, ErrProtocol},
		{"grants overrun ring", "", "", func(h *hostileServer) { h.sh.setOrders(20, 10) }, ErrProtocol},
		{"zero page", "", "", func(h *hostileServer) {}, ErrProtocol},
		{"ungranted ring ref", "", "", func(h *hostileServer) {
			h.sh.setOrders(12, 10)
			h.sh.setGrant(0, 999)
		}, gnttab.ErrBadRef},
		{"ring ref granted elsewhere", "", "", func(h *hostileServer) {
			h.sh.setOrders(11, 13) // the right ring's grants are garbage
			h.sh.setGrant(0, h.ring.Refs[0])
			h.sh.setGrant(1, 4000)
		}, gnttab.ErrBadRef},
		{"indexes past ring", "", "", func(h *hostileServer) {
			h.sh.setOrders(10, 11)
			h.sh.store(offRightProd, 5000)
		}, ErrProtocol},
		{"write ring full past size", "", "", func(h *hostileServer) {
			h.sh.setOrders(10, 11)
			h.sh.store(offLeftProd, 2000)
		}, ErrProtocol},
		{"server live 9", "", "", func(h *hostileServer) { h.sh.setOrders(10, 11); h.sh.setFlag(flagSrvLive, 9) }, ErrProtocol},
		{"server gone", "", "", func(h *hostileServer) { h.sh.setOrders(10, 11); h.sh.setFlag(flagSrvLive, 0) }, ErrPeerClosed},
		{"ring-ref not a number", "x12", "", func(h *hostileServer) { h.sh.setOrders(10, 11) }, ErrProtocol},
		{"event-channel not a number", "", "-1", func(h *hostileServer) { h.sh.setOrders(10, 11) }, ErrProtocol},
		{"ring-ref not ours", "17", "", func(h *hostileServer) { h.sh.setOrders(10, 11) }, gnttab.ErrBadRef},
		{"event-channel not ours", "", "33", func(h *hostileServer) { h.sh.setOrders(10, 11) }, evtchn.ErrNoPeer},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, 0, 0)
			h := newHostileServer(t, r)
			tc.setup(h)
			h.advertise(ctxT(t), tc.ref, tc.port)
			err := within(t, "Dial", func() error {
				c, err := Dial(ctxT(t), r.cliCfg)
				if err == nil {
					c.Close()
				}
				return err
			})
			if !errors.Is(err, tc.want) {
				t.Errorf("Dial: %v, want %v", err, tc.want)
			}
			if s := r.cliEv.Stats(); s.Ports != 0 {
				t.Errorf("client holds %d ports after failed Dial", s.Ports)
			}
			if s := r.cliMem.Stats(); s.Mappings != 0 {
				t.Errorf("client holds %d mappings after failed Dial", s.Mappings)
			}
			if got := h.sh.flag(flagCliLive); got == liveOpen {
				t.Errorf("client marked itself live on a bad page")
			}
			h.close(t)
			r.leftovers(t)
		})
	}
}

// TestPeerCrash: the peer vanishes without tearing down; a Read blocked
// on the survivor must end with io.EOF.
func TestPeerCrash(t *testing.T) {
	for _, tc := range []struct {
		name             string
		survivorIsServer bool
		crash            func(r *rig, dead *Conn)
	}{
		{"client live flag drops", true, func(r *rig, dead *Conn) {
			dead.sh.setFlag(flagCliLive, liveClosed)
			dead.cfg.Events.Notify(dead.port)
		}},
		{"client port closes", true, func(r *rig, dead *Conn) { r.cliEv.Close(dead.port) }},
		{"server live flag drops", false, func(r *rig, dead *Conn) {
			dead.sh.setFlag(flagSrvLive, liveClosed)
			dead.cfg.Events.Notify(dead.port)
		}},
		{"server port closes", false, func(r *rig, dead *Conn) { r.srvEv.Close(dead.port) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, 0, 8192)
			srv, cli := r.pair(t)
			survivor, dead := cli, srv
			if tc.survivorIsServer {
				survivor, dead = srv, cli
			}
			err := within(t, "Read", func() error {
				go func() {
					time.Sleep(10 * time.Millisecond)
					tc.crash(r, dead)
				}()
				_, err := survivor.Read(make([]byte, 1))
				return err
			})
			if err != io.EOF {
				t.Errorf("survivor Read: %v, want io.EOF", err)
			}
			if _, err := survivor.Write([]byte("x")); !errors.Is(err, ErrPeerClosed) {
				t.Errorf("survivor Write: %v, want ErrPeerClosed", err)
			}
			// Tear down the crashed end's leftovers the way its
			// hypervisor would, then the survivor.
			deadErr := make(chan error, 1)
			go func() { deadErr <- dead.Close() }()
			if err := survivor.Close(); err != nil {
				t.Errorf("survivor Close: %v", err)
			}
			<-deadErr // may complain that its port is gone
			r.leftovers(t)
		})
	}
}

// TestCloseTimeout: a client that never unmaps makes the server's Close
// report the grants it could not revoke, and they are freed later.
func TestCloseTimeout(t *testing.T) {
	r := newRig(t, 1<<13, 0)
	r.srvCfg.CloseTimeout = 50 * time.Millisecond
	srv, cli := r.pair(t)
	start := time.Now()
	err := srv.Close()
	if !errors.Is(err, gnttab.ErrInUse) {
		t.Fatalf("server Close with the client mapped: %v, want ErrInUse", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("Close took %v", d)
	}
	if _, err := cli.Read(make([]byte, 1)); err != io.EOF {
		t.Errorf("client Read: %v, want EOF", err)
	}
	if err := cli.Close(); err != nil {
		t.Errorf("client Close: %v", err)
	}
	deadline := time.Now().Add(3 * time.Second)
	for r.gn.Stats().String() != "" && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	r.leftovers(t)
}

// TestPeerDomainGone: the peer's domain is destroyed with the channel open
// (its live flag still reads open, its port stays silent, as with xl
// destroy): once xenstore loses the peer's home and fires @releaseDomain,
// a Read or Write blocked on the survivor fails with ErrPeerGone. Without
// a home to start from, nothing is watched.
func TestPeerDomainGone(t *testing.T) {
	for _, tc := range []struct {
		name             string
		survivorIsServer bool
		write            bool
	}{
		{"client reading, server gone", false, false},
		{"client writing, server gone", false, true},
		{"server reading, client gone", true, false},
		{"server writing, client gone", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, 0, 0)
			ctx := ctxT(t)
			for _, d := range []domid.ID{srvDom, cliDom} {
				if err := r.store.Write(ctx, fmt.Sprintf("/local/domain/%d", d), ""); err != nil {
					t.Fatal(err)
				}
			}
			srv, cli := r.pair(t)
			survivor, dead := cli, srv
			if tc.survivorIsServer {
				survivor, dead = srv, cli
			}
			err := within(t, "blocked call", func() error {
				go func() {
					time.Sleep(10 * time.Millisecond)
					r.store.Rm(ctx, fmt.Sprintf("/local/domain/%d", dead.cfg.Self))
					r.store.Write(ctx, releaseDomain, "")
				}()
				if tc.write {
					_, err := survivor.Write(make([]byte, 64<<10)) // more than the rings hold
					return err
				}
				_, err := survivor.Read(make([]byte, 1))
				return err
			})
			if !errors.Is(err, ErrPeerGone) || !errors.Is(err, ErrPeerClosed) {
				t.Errorf("survivor: %v, want ErrPeerGone", err)
			}
			deadErr := make(chan error, 1)
			go func() { deadErr <- dead.Close() }()
			if err := survivor.Close(); err != nil {
				t.Logf("survivor Close: %v", err)
			}
			<-deadErr
			r.store.Rm(ctx, fmt.Sprintf("/local/domain/%d", survivor.cfg.Self))
			r.store.Rm(ctx, releaseDomain)
			r.leftovers(t)
		})
	}
}
