package xenbus_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/gozen-dev/gozen/domid"
	"github.com/gozen-dev/gozen/xenbus"
	"github.com/gozen-dev/gozen/xenbus/memstore"
	"github.com/gozen-dev/gozen/xenbus/xsring"
)

// TestSuspendResume checks the client across a suspend: calls made while
// suspended wait and then go through, and a watch keeps firing, when the
// suspend is cancelled (same ring), when the domain is new (a new ring
// page and connection, where the watch must be registered again), and
// when it was restored under another domid (xl save, then xl restore: the
// home and the watch under it move to the new domain's home).
func TestSuspendResume(t *testing.T) {
	for _, tc := range []struct {
		name      string
		cancelled bool
		newID     domid.ID // the domid after the resume
	}{
		{"cancelled", true, 12},
		{"new-domain", false, 12},
		{"restored", false, 13},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := memstore.New()
			defer s.Close()
			s.AddDomain(12)
			dom0, err := s.Connect(0)
			if err != nil {
				t.Fatal(err)
			}
			defer dom0.Close()
			page := make([]byte, xsring.PageSize)
			cn, sn := xsring.NewLocalPair()
			conn, err := s.Serve(page, sn, 12)
			if err != nil {
				t.Fatal(err)
			}
			c, err := xenbus.New(page, cn, 12)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			w, err := c.Watch(ctx, "x")
			if err != nil {
				t.Fatal(err)
			}
			<-w.Events() // the initial event

			if err := c.Suspend(ctx); err != nil {
				t.Fatalf("suspend: %v", err)
			}
			if err := c.Suspend(ctx); !errors.Is(err, xenbus.ErrSuspended) {
				t.Fatalf("second suspend: %v, want ErrSuspended", err)
			}
			wrote := make(chan error, 1)
			go func() { wrote <- c.WriteString(ctx, "x", "during") }()
			// A bounded call made while suspended ends with its context.
			short, cancelShort := context.WithTimeout(ctx, 50*time.Millisecond)
			if _, err := c.ReadString(short, "x"); !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("read while suspended: %v, want DeadlineExceeded", err)
			}
			cancelShort()
			if _, err := dom0.ReadString(ctx, "/local/domain/12/x"); err == nil {
				t.Fatal("a write made while suspended reached the store before resume")
			}

			if tc.cancelled {
				err = c.Resume(ctx, true, nil, nil)
			} else {
				// The old domain is gone: its connection and watches
				// with it; the toolstack gives the new one a fresh page.
				conn.Close()
				cn.Close()
				page = make([]byte, xsring.PageSize)
				cn, sn = xsring.NewLocalPair()
				if err := s.AddDomain(tc.newID); err != nil {
					t.Fatal(err)
				}
				if _, err := s.Serve(page, sn, tc.newID); err != nil {
					t.Fatal(err)
				}
				err = c.Resume(ctx, false, page, cn)
			}
			defer cn.Close()
			if err != nil {
				t.Fatalf("resume: %v", err)
			}
			if err := <-wrote; err != nil {
				t.Fatalf("write made while suspended: %v", err)
			}
			home := fmt.Sprintf("/local/domain/%d", tc.newID)
			if c.Home() != home || w.Path() != home+"/x" {
				t.Fatalf("after resume: home %q, watch on %q; want %q", c.Home(), w.Path(), home)
			}
			if v, err := dom0.ReadString(ctx, home+"/x"); err != nil || v != "during" {
				t.Fatalf("after resume: x = %q, %v", v, err)
			}
			// The watch fires for the write (after the re-registration's
			// own initial event, for a new domain).
			deadline := time.After(5 * time.Second)
			for fired := false; !fired; {
				select {
				case ev, ok := <-w.Events():
					if !ok {
						t.Fatal("watch closed by the resume")
					}
					fired = ev.Path == home+"/x"
				case <-deadline:
					t.Fatal("watch did not fire after resume")
				}
			}
			if err := dom0.WriteString(ctx, home+"/x", "later"); err != nil {
				t.Fatal(err)
			}
			select {
			case <-w.Events():
			case <-time.After(5 * time.Second):
				t.Fatal("watch did not fire for a write after resume")
			}
			if err := c.Resume(ctx, true, nil, nil); err == nil {
				t.Fatal("resume without suspend succeeded")
			}
		})
	}
}

// TestSuspendWaitsForReplies checks that Suspend waits for the reply to a
// request already sent, and refuses with ErrSuspended (leaving the client
// usable) when the store does not answer in time.
func TestSuspendWaitsForReplies(t *testing.T) {
	f, c := newFake(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	read := make(chan error, 1)
	go func() {
		_, err := c.ReadString(ctx, "k")
		read <- err
	}()
	m, err := f.srv.ReadMsg(ctx) // the READ is in flight, unanswered
	if err != nil {
		t.Fatal(err)
	}
	short, cancelShort := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancelShort()
	if err := c.Suspend(short); !errors.Is(err, xenbus.ErrSuspended) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("suspend with a request in flight: %v, want ErrSuspended and DeadlineExceeded", err)
	}
	// Refused: the client goes on; once the reply comes, Suspend succeeds.
	suspended := make(chan error, 1)
	go func() { suspended <- c.Suspend(ctx) }()
	f.reply(m, m.Type, "v")
	if err := <-read; err != nil {
		t.Fatalf("read: %v", err)
	}
	if err := <-suspended; err != nil {
		t.Fatalf("suspend after the reply: %v", err)
	}
	if err := c.Resume(ctx, true, nil, nil); err != nil {
		t.Fatal(err)
	}
}
