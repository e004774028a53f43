package xslink_test

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gozen-dev/gozen/domid"
	"github.com/gozen-dev/gozen/evtchn"
	"github.com/gozen-dev/gozen/evtchn/evheap"
	"github.com/gozen-dev/gozen/evtchn/evtchntest"
	"github.com/gozen-dev/gozen/evtchn/evtchntest/twodom"
	"github.com/gozen-dev/gozen/evtchn/evtchntest/twodom/xslink"
	"github.com/gozen-dev/gozen/gnttab"
	"github.com/gozen-dev/gozen/gnttab/gntheap"
	"github.com/gozen-dev/gozen/gnttab/gnttabtest"
	"github.com/gozen-dev/gozen/xenbus"
	"github.com/gozen-dev/gozen/xenbus/memstore"
	"github.com/gozen-dev/gozen/xenbus/wire"
)

var _ twodom.LinkCloser = (*xslink.Link)(nil)

// store returns a store in which domains 1, 2 and 3 exist with data
// directories they own, as xl makes them, and a client for each domain
// (index = domid) plus dom0's at index 0.
func store(t *testing.T) []*xenbus.Client {
	_, cs := storeAndClients(t)
	return cs
}

func storeAndClients(t *testing.T) (*memstore.Store, []*xenbus.Client) {
	t.Helper()
	s := memstore.New()
	t.Cleanup(func() { s.Close() })
	clients := make([]*xenbus.Client, 4)
	for d := range domid.ID(4) {
		c, err := s.Connect(d)
		if err != nil {
			t.Fatal(err)
		}
		clients[d] = c
		if d == 0 {
			continue
		}
		data := wire.DomainPath(d) + "/data"
		if err := s.Mkdir(data); err != nil {
			t.Fatal(err)
		}
		if err := s.SetPerms(data, wire.Perm{Dom: d, Access: wire.AccessNone}); err != nil {
			t.Fatal(err)
		}
	}
	return s, clients
}

// openPair opens both ends of a link (each Open waits for the other).
func openPair(t *testing.T, cs []*xenbus.Client, name string, o xslink.Options) (a, b *xslink.Link) {
	t.Helper()
	var wg sync.WaitGroup
	var errA, errB error
	wg.Go(func() { a, errA = xslink.Open(cs[1], 1, 2, name, o) })
	wg.Go(func() { b, errB = xslink.Open(cs[2], 2, 1, name, o) })
	wg.Wait()
	if errA != nil || errB != nil {
		t.Fatalf("Open: A: %v, B: %v", errA, errB)
	}
	return a, b
}

func TestValuesInOrderThenFinished(t *testing.T) {
	cs := store(t)
	a, b := openPair(t, cs, "suite/case", xslink.Options{Timeout: 10 * time.Second})
	want := []uint64{0, 1, 7, 1 << 40, ^uint64(0)}
	for _, v := range want {
		if err := a.Send(v); err != nil {
			t.Fatal(err)
		}
	}
	closed := make(chan error, 1)
	go func() { closed <- a.Close() }()
	for i, w := range want {
		v, err := b.Recv()
		if err != nil || v != w {
			t.Fatalf("value %d: %d, %v; want %d", i, v, err, w)
		}
	}
	if v, err := b.Recv(); !errors.Is(err, xslink.ErrFinished) {
		t.Fatalf("Recv past the last value = %d, %v; want ErrFinished", v, err)
	}
	if err := b.Send(5); err != nil {
		t.Fatalf("Send to a closed end: %v (the value is only left unread)", err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("B Close: %v", err)
	}
	if err := <-closed; err != nil {
		t.Fatalf("A Close: %v", err)
	}
	for d := domid.ID(1); d <= 2; d++ {
		left, err := cs[0].Directory(context.Background(), wire.DomainPath(d)+"/data/twodom/suite")
		if err != nil || len(left) != 0 {
			t.Errorf("domain %d's link nodes after both closed: %q, %v; want none", d, left, err)
		}
	}
	if err := a.Send(1); err == nil {
		t.Errorf("Send on a closed link succeeded")
	}
	if _, err := a.Recv(); err == nil {
		t.Errorf("Recv on a closed link succeeded")
	}
}

// TestOtherEndGone: an end whose directory disappeared (its domain died,
// or it closed and removed its nodes) reads as finished, although
// xenstored answers EACCES, not ENOENT, for nodes under a directory the
// reader may not read.
func TestOtherEndGone(t *testing.T) {
	s, cs := storeAndClients(t)
	a, _ := openPair(t, cs, "gone", xslink.Options{Timeout: 10 * time.Second})
	if err := s.Rm(xslink.Dir(2, "gone")); err != nil {
		t.Fatal(err)
	}
	if _, err := cs[1].Read(context.Background(), xslink.Dir(2, "gone")+"/0"); !errors.Is(err, fs.ErrPermission) {
		t.Fatalf("reading a node of the removed end: err = %v, want EACCES as from xenstored", err)
	}
	if v, err := a.Recv(); !errors.Is(err, xslink.ErrFinished) {
		t.Errorf("Recv from a removed end = %d, %v; want ErrFinished", v, err)
	}
	if err := a.Close(); err != nil {
		t.Errorf("Close with the other end removed: %v", err)
	}
}

func TestBothWays(t *testing.T) {
	cs := store(t)
	a, b := openPair(t, cs, "ping", xslink.Options{Timeout: 10 * time.Second})
	var wg sync.WaitGroup
	wg.Go(func() {
		for i := range uint64(50) {
			if err := a.Send(i); err != nil {
				t.Errorf("A send %d: %v", i, err)
				return
			}
			if v, err := a.Recv(); err != nil || v != i+1000 {
				t.Errorf("A recv %d: %d, %v", i, v, err)
				return
			}
		}
		if err := a.Close(); err != nil {
			t.Errorf("A close: %v", err)
		}
	})
	for i := range uint64(50) {
		v, err := b.Recv()
		if err != nil || v != i {
			t.Fatalf("B recv %d: %d, %v", i, v, err)
		}
		if err := b.Send(v + 1000); err != nil {
			t.Fatal(err)
		}
	}
	if err := b.Close(); err != nil {
		t.Errorf("B close: %v", err)
	}
	wg.Wait()
}

func TestTimeouts(t *testing.T) {
	const timeout = 150 * time.Millisecond
	tests := []struct {
		name string
		run  func(t *testing.T, cs []*xenbus.Client) error
		want string
	}{
		{"the other end never opens", func(t *testing.T, cs []*xenbus.Client) error {
			_, err := xslink.Open(cs[1], 1, 2, "lonely", xslink.Options{Timeout: timeout})
			return err
		}, "the other end to open"},
		{"nothing is sent", func(t *testing.T, cs []*xenbus.Client) error {
			_, b := openPair(t, cs, "quiet", xslink.Options{Timeout: timeout})
			_, err := b.Recv()
			return err
		}, "nothing after"},
		{"the other end never closes", func(t *testing.T, cs []*xenbus.Client) error {
			a, _ := openPair(t, cs, "stuck", xslink.Options{Timeout: timeout})
			return a.Close()
		}, "the other end to close"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			start := time.Now()
			err := tt.run(t, store(t))
			if err == nil || errors.Is(err, xslink.ErrFinished) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want a time-out naming %q", err, tt.want)
			}
			if d := time.Since(start); d > 20*timeout {
				t.Errorf("gave up after %v, timeout %v", d, timeout)
			}
		})
	}
}

func TestOnlyThePeerReads(t *testing.T) {
	cs := store(t)
	a, b := openPair(t, cs, "private", xslink.Options{Timeout: 10 * time.Second})
	defer func() {
		go a.Close()
		b.Close()
	}()
	if err := a.Send(42); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	node := xslink.Dir(1, "private") + "/0"
	if v, err := cs[2].ReadString(ctx, node); err != nil || v != "42" {
		t.Errorf("the peer reads %s = %q, %v; want 42", node, v, err)
	}
	if _, err := cs[3].ReadString(ctx, node); !errors.Is(err, fs.ErrPermission) {
		t.Errorf("a third domain reads %s: err = %v, want EACCES", node, err)
	}
	if err := cs[2].WriteString(ctx, node, "7"); !errors.Is(err, fs.ErrPermission) {
		t.Errorf("the peer writes %s: err = %v, want EACCES", node, err)
	}
}

func TestBadNames(t *testing.T) {
	cs := store(t)
	for _, name := range []string{"", "/abs", "trailing/", "a//b"} {
		if _, err := xslink.Open(cs[1], 1, 2, name, xslink.Options{Timeout: time.Second}); err == nil {
			t.Errorf("Open(%q) succeeded", name)
		}
	}
}

// runSides runs both sides of cases with twodom.RunSide, one goroutine per
// domain, over xslink, and returns the reports of each side.
func runSides[S any](t *testing.T, cs []*xenbus.Client, suite string, cases []twodom.Case[S], da, db twodom.Domain[S]) map[twodom.Half][]string {
	t.Helper()
	var mu sync.Mutex
	reports := map[twodom.Half][]string{}
	var wg sync.WaitGroup
	for _, side := range []struct {
		h          twodom.Half
		d          twodom.Domain[S]
		peer       domid.ID
		c          *xenbus.Client
		self, othr domid.ID
	}{{twodom.HalfA, da, db.ID, cs[da.ID], da.ID, db.ID}, {twodom.HalfB, db, da.ID, cs[db.ID], db.ID, da.ID}} {
		wg.Go(func() {
			twodom.RunSide(cases, twodom.SideConfig[S]{
				Half: side.h, Domain: side.d, Peer: side.peer, Limit: time.Minute,
				Open: func(name string) (twodom.LinkCloser, error) {
					return xslink.Open(side.c, side.self, side.othr, suite+"/"+name, xslink.Options{Timeout: 30 * time.Second})
				},
				Report: func(name string, r twodom.Result) {
					mu.Lock()
					defer mu.Unlock()
					line := "PASS " + name
					if r.Failed() {
						line = "FAIL " + name + ": " + strings.Join(r.Errors, "; ")
					}
					reports[side.h] = append(reports[side.h], line)
				},
			})
		})
	}
	wg.Wait()
	return reports
}

func checkAllPassed(t *testing.T, names []string, reports map[twodom.Half][]string) {
	t.Helper()
	for _, h := range []twodom.Half{twodom.HalfA, twodom.HalfB} {
		if len(reports[h]) != len(names) {
			t.Errorf("half %s reported %d cases, want %d: %q", h, len(reports[h]), len(names), reports[h])
			continue
		}
		for i, r := range reports[h] {
			if r != "PASS "+names[i] {
				t.Errorf("half %s: %s", h, r)
			}
		}
	}
}

// TestSuitesOverXenstore runs the two conformance suites as the guests do
// (each domain running its halves with twodom.RunSide, the side channel
// through xenstore), against the in-heap services.
func TestSuitesOverXenstore(t *testing.T) {
	t.Run("evtchn", func(t *testing.T) {
		cs := store(t)
		hub := evheap.NewHub()
		dom := func(id domid.ID) evtchntest.Domain {
			d, err := hub.Domain(id)
			if err != nil {
				t.Fatal(err)
			}
			return evtchntest.Domain{Svc: d, ID: id, Leftovers: func() string {
				if n := d.Stats().Ports; n != 0 {
					return fmt.Sprintf("%d ports open", n)
				}
				return ""
			}}
		}
		cases := evtchntest.CasesWith(evtchntest.Options{PingPongs: 2000})
		var names []string
		for _, c := range cases {
			names = append(names, c.Name)
		}
		checkAllPassed(t, names, runSides[evtchn.Events](t, cs, "evtchn", cases, dom(1), dom(2)))
	})
	t.Run("gnttab", func(t *testing.T) {
		cs := store(t)
		hub := gntheap.NewHub()
		dom := func(id domid.ID) gnttabtest.Domain {
			d, err := hub.Domain(id)
			if err != nil {
				t.Fatal(err)
			}
			return gnttabtest.Domain{Svc: d, ID: id, Leftovers: func() string { return d.Stats().String() }}
		}
		cases := gnttabtest.Cases()
		var names []string
		for _, c := range cases {
			names = append(names, c.Name)
		}
		checkAllPassed(t, names, runSides[gnttab.SharedMemory](t, cs, "gnttab", cases, dom(1), dom(2)))
	})
}

// TestFailureCrossesTheLink checks that a half that fails early does not
// hang its peer: the peer's Recv ends with ErrFinished, both sides report
// the case, and the next case still runs.
func TestFailureCrossesTheLink(t *testing.T) {
	cs := store(t)
	hub := evheap.NewHub()
	var doms []evtchntest.Domain
	for id := domid.ID(1); id <= 2; id++ {
		d, _ := hub.Domain(id)
		doms = append(doms, evtchntest.Domain{Svc: d, ID: id})
	}
	cases := []twodom.Case[evtchn.Events]{
		{Name: "AGivesUp",
			A: func(t twodom.T, s *evtchntest.Side) { t.Fatalf("given up") },
			B: func(t twodom.T, s *evtchntest.Side) {
				if _, err := s.Link.Recv(); !errors.Is(err, xslink.ErrFinished) {
					t.Errorf("Recv after the peer gave up: %v, want ErrFinished", err)
				}
			}},
		{Name: "Next",
			A: func(t twodom.T, s *evtchntest.Side) {
				if err := s.Link.Send(9); err != nil {
					t.Error(err)
				}
			},
			B: func(t twodom.T, s *evtchntest.Side) {
				if v, err := s.Link.Recv(); err != nil || v != 9 {
					t.Errorf("Recv = %d, %v; want 9", v, err)
				}
			}},
	}
	reports := runSides(t, cs, "fail", cases, doms[0], doms[1])
	want := map[twodom.Half][]string{
		twodom.HalfA: {"FAIL AGivesUp: given up", "PASS Next"},
		twodom.HalfB: {"PASS AGivesUp", "PASS Next"},
	}
	for h, w := range want {
		if strings.Join(reports[h], "\n") != strings.Join(w, "\n") {
			t.Errorf("half %s reported %q, want %q", h, reports[h], w)
		}
	}
}

// TestTagsInOneDomain: two ends in the same domain (two processes of
// dom0) meet through tagged directories.
func TestTagsInOneDomain(t *testing.T) {
	cs := store(t)
	o := xslink.Options{Timeout: 10 * time.Second}
	var a, b *xslink.Link
	var errA, errB error
	var wg sync.WaitGroup
	wg.Go(func() {
		oa := o
		oa.Tags = [2]string{"A", "B"}
		a, errA = xslink.Open(cs[1], 1, 1, "suite/tagged", oa)
	})
	wg.Go(func() {
		ob := o
		ob.Tags = [2]string{"B", "A"}
		b, errB = xslink.Open(cs[1], 1, 1, "suite/tagged", ob)
	})
	wg.Wait()
	if errA != nil || errB != nil {
		t.Fatalf("Open: %v, %v", errA, errB)
	}
	if err := a.Send(42); err != nil {
		t.Fatal(err)
	}
	if v, err := b.Recv(); err != nil || v != 42 {
		t.Fatalf("Recv = %d, %v", v, err)
	}
	wg.Go(func() { errA = a.Close() })
	errB = b.Close()
	wg.Wait()
	if errA != nil || errB != nil {
		t.Fatalf("Close: %v, %v", errA, errB)
	}
	for _, tags := range [][2]string{{"A", "A"}, {"A", ""}, {"", "B"}, {"A/x", "B"}} {
		if _, err := xslink.Open(cs[1], 1, 1, "suite/bad", xslink.Options{Timeout: time.Second, Tags: tags}); err == nil {
			t.Errorf("Open with tags %q succeeded", tags)
		}
	}
}
