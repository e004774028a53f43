package conform_test

import (
	"bytes"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gozen-dev/gozen/domid"
	"github.com/gozen-dev/gozen/evtchn"
	"github.com/gozen-dev/gozen/evtchn/evheap"
	"github.com/gozen-dev/gozen/evtchn/evtchntest"
	"github.com/gozen-dev/gozen/evtchn/evtchntest/twodom"
	"github.com/gozen-dev/gozen/evtchn/evtchntest/twodom/conform"
	"github.com/gozen-dev/gozen/gnttab/gntheap"
	"github.com/gozen-dev/gozen/gnttab/gnttabtest"
	"github.com/gozen-dev/gozen/xenbus"
	"github.com/gozen-dev/gozen/xenbus/memstore"
	"github.com/gozen-dev/gozen/xenbus/wire"
)

// TestCaseLines: the lines have the format the rig's tests parse.
func TestCaseLines(t *testing.T) {
	for _, c := range []struct {
		name string
		h    twodom.Half
		r    twodom.Result
		want string
	}{
		{"evtchn/PingPong", twodom.HalfA, twodom.Result{Logs: []string{"x", "y"}, Elapsed: 1500 * time.Millisecond},
			"CONFORMANCE PASS evtchn/PingPong half=A secs=1.500 | x | y\n"},
		{"gnttab/Copy", twodom.HalfB, twodom.Result{Elapsed: time.Millisecond},
			"CONFORMANCE PASS gnttab/Copy half=B secs=0.001\n"},
		{"gnttab/Copy", twodom.HalfB, twodom.Result{Errors: []string{"first", "panic: p\nstack\n  more"}, Logs: []string{"l"}},
			"CONFORMANCE FAIL gnttab/Copy: half B: first; panic: p\n" +
				"CONFORMANCE   stack\n" +
				"CONFORMANCE     more\n" +
				"CONFORMANCE gnttab/Copy log: l\n"},
	} {
		var b bytes.Buffer
		conform.Console{W: &b}.Case(c.name, c.h, c.r)
		if b.String() != c.want {
			t.Errorf("%s %v:\n%s\nwant\n%s", c.name, c.r, b.String(), c.want)
		}
	}
	var b bytes.Buffer
	conform.Console{W: &b}.SetupFailed(errors.ErrUnsupported)
	if want := "CONFORMANCE FAIL setup: unsupported operation\nCONFORMANCE DONE pass=0 fail=1\n"; b.String() != want {
		t.Errorf("SetupFailed:\n%s\nwant\n%s", b.String(), want)
	}
}

func TestPlan(t *testing.T) {
	nev, ngnt := len(evtchntest.Cases()), len(gnttabtest.Cases())
	for _, c := range []struct {
		name              string
		half, suites, run string
		ok                bool
		total             int
		suiteList         []string
	}{
		{"all", "A", "evtchn,gnttab", "", true, nev + ngnt, []string{"evtchn", "gnttab"}},
		{"reversed", "a", "gnttab,evtchn", "", true, nev + ngnt, []string{"gnttab", "evtchn"}},
		{"one case", "b", "evtchn,gnttab", "^gnttab/Copy$", true, 1, []string{"evtchn", "gnttab"}},
		{"evtchn only", "A", "evtchn", "", true, nev, []string{"evtchn"}},
		{"selection across suites", "A", "evtchn", "Copy", true, 0, []string{"evtchn"}},
		{"bad half", "C", "evtchn", "", false, 0, nil},
		{"bad suite", "A", "evtchn,blk", "", false, 0, nil},
		{"empty suite", "A", "evtchn,", "", false, 0, nil},
		{"bad run", "A", "evtchn", "(", false, 0, nil},
	} {
		a := conform.Args{Half: c.half, Suites: c.suites, Run: c.run, PingPongs: 10, Timeout: time.Second, Limit: 2 * time.Second}
		p, err := a.Plan()
		if (err == nil) != c.ok {
			t.Errorf("%s: err = %v, want ok=%v", c.name, err, c.ok)
			continue
		}
		if !c.ok {
			continue
		}
		if p.Total != c.total || strings.Join(p.Suites, ",") != strings.Join(c.suiteList, ",") {
			t.Errorf("%s: %d cases of %q, want %d of %q", c.name, p.Total, p.Suites, c.total, c.suiteList)
		}
		if p.Timeout != time.Second || p.Limit != 2*time.Second {
			t.Errorf("%s: timeout %v, limit %v", c.name, p.Timeout, p.Limit)
		}
	}
}

func TestParseDomid(t *testing.T) {
	for _, c := range []struct {
		in   string
		want domid.ID
		ok   bool
	}{
		{"0", 0, true}, {" 7\n", 7, true}, {"32751", 32751, true},
		{"32752", 0, false}, {"65535", 0, false}, {"65536", 0, false}, {"-1", 0, false}, {"dom1", 0, false}, {"", 0, false},
	} {
		got, err := conform.ParseDomid(c.in)
		if (err == nil) != c.ok || got != c.want {
			t.Errorf("ParseDomid(%q) = %d, %v; want %d, ok=%v", c.in, got, err, c.want, c.ok)
		}
	}
}

// store returns a store in which domains 1 and 2 exist, and a client for
// each domain (index = domid) plus dom0's at index 0.
func store(t *testing.T) (*memstore.Store, []*xenbus.Client) {
	t.Helper()
	s := memstore.New()
	t.Cleanup(func() { s.Close() })
	clients := make([]*xenbus.Client, 3)
	for d := range domid.ID(3) {
		c, err := s.Connect(d)
		if err != nil {
			t.Fatal(err)
		}
		clients[d] = c
	}
	return s, clients
}

func TestPeerOf(t *testing.T) {
	s, cs := store(t)
	if p, err := conform.PeerOf(cs[1], "2", time.Second); err != nil || p != 2 {
		t.Errorf("PeerOf(2) = %d, %v", p, err)
	}
	if _, err := conform.PeerOf(cs[1], "x", time.Second); err == nil {
		t.Errorf("PeerOf(x) succeeded")
	}
	if _, err := conform.PeerOf(cs[1], "xs", 50*time.Millisecond); err == nil || !strings.Contains(err.Error(), conform.PeerNode) {
		t.Errorf("PeerOf(xs) with no node: %v", err)
	}
	got := make(chan error, 1)
	go func() {
		p, err := conform.PeerOf(cs[1], "xs", 30*time.Second)
		if err == nil && p != 2 {
			err = fmt.Errorf("peer %d, want 2", p)
		}
		got <- err
	}()
	if err := s.Write(wire.DomainPath(1)+"/"+conform.PeerNode, "2"); err != nil {
		t.Fatal(err)
	}
	if err := <-got; err != nil {
		t.Errorf("PeerOf(xs) after the toolstack wrote 2: %v", err)
	}
	if err := s.Write(wire.DomainPath(2)+"/"+conform.PeerNode, "32752"); err != nil {
		t.Fatal(err)
	}
	if _, err := conform.PeerOf(cs[2], "xs", time.Second); err == nil {
		t.Errorf("PeerOf(xs) of DOMID_SELF succeeded")
	}
}

// pair runs plans a and b in domains 1 and 2, over one store and in-heap
// services, and returns each domain's output and pass and fail counts.
func pair(t *testing.T, a, b *conform.Plan) (out [2]string, pass, fail [2]int) {
	t.Helper()
	_, cs := store(t)
	evs, gnts := evheap.NewHub(), gntheap.NewHub()
	var wg sync.WaitGroup
	for i, p := range []*conform.Plan{a, b} {
		self, peer := domid.ID(i+1), domid.ID(2-i)
		ev, err := evs.Domain(self)
		if err != nil {
			t.Fatal(err)
		}
		mem, err := gnts.Domain(self)
		if err != nil {
			t.Fatal(err)
		}
		wg.Go(func() {
			var buf bytes.Buffer
			var hooks []string
			d := &conform.Domain{Events: ev, Grants: mem, Store: cs[self], Self: self, Peer: peer, Console: conform.Console{W: &buf},
				Begin:    func() { hooks = append(hooks, "begin") },
				CaseDone: func(name string, r twodom.Result) { hooks = append(hooks, name) },
				End:      func() { hooks = append(hooks, "end") },
			}
			pass[i], fail[i] = p.Run(d)
			out[i] = buf.String() + "hooks: " + strings.Join(hooks, " ") + "\n"
		})
	}
	wg.Wait()
	return out, pass, fail
}

func plan(t *testing.T, half string) *conform.Plan {
	t.Helper()
	a := conform.Args{Half: half, Suites: "evtchn,gnttab", PingPongs: 200, Timeout: 30 * time.Second, Limit: time.Minute}
	p, err := a.Plan()
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// TestRun runs both suites in two domains as the guests do: every case
// passes on both sides, with the lines the rig's tests parse.
func TestRun(t *testing.T) {
	out, pass, fail := pair(t, plan(t, "A"), plan(t, "b"))
	var names []string
	for _, c := range evtchntest.Cases() {
		names = append(names, "evtchn/"+c.Name)
	}
	for _, c := range gnttabtest.Cases() {
		names = append(names, "gnttab/"+c.Name)
	}
	for i, h := range []string{"A", "B"} {
		if pass[i] != len(names)+1 || fail[i] != 0 {
			t.Errorf("half %s: pass=%d fail=%d, want %d and 0:\n%s", h, pass[i], fail[i], len(names)+1, out[i])
		}
		res := []string{
			`(?m)\ACONFORMANCE ready domid=` + strconv.Itoa(i+1) + ` half=` + h + ` peer=` + strconv.Itoa(2-i) + ` cases=` + strconv.Itoa(len(names)) + "\n",
			`(?m)^CONFORMANCE baseline ports=0 grants=0 shares=0 mappings=0$`,
			`(?m)^CONFORMANCE PASS leftovers ports=0 grants=0 shares=0 mappings=0, as before the first case$`,
			`(?m)^CONFORMANCE DONE pass=` + strconv.Itoa(len(names)+1) + ` fail=0$`,
			`(?m)^hooks: begin ` + regexp.QuoteMeta(strings.Join(names, " ")) + ` end$`,
		}
		for _, n := range names {
			res = append(res, `(?m)^CONFORMANCE PASS `+regexp.QuoteMeta(n)+` half=`+h+` secs=\d+\.\d{3}( \| .*)?$`)
		}
		for _, re := range res {
			if !regexp.MustCompile(re).MatchString(out[i]) {
				t.Errorf("half %s: output lacks %s:\n%s", h, re, out[i])
			}
		}
	}
}

// TestRunLeak: a case that leaves a port open fails, once, and so does
// the leftovers check; the other side passes.
func TestRunLeak(t *testing.T) {
	leaky := []twodom.Case[evtchn.Events]{
		{Name: "Leak",
			A: func(t twodom.T, s *evtchntest.Side) {
				if _, err := s.Svc.AllocUnbound(s.Peer); err != nil {
					t.Fatal(err)
				}
			},
			B: func(t twodom.T, s *evtchntest.Side) {}},
		{Name: "Next", A: func(t twodom.T, s *evtchntest.Side) {}, B: func(t twodom.T, s *evtchntest.Side) {}},
	}
	a, b := plan(t, "A"), plan(t, "B")
	for _, p := range []*conform.Plan{a, b} {
		p.Suites, p.Events, p.Total = []string{"evtchn"}, leaky, len(leaky)
	}
	out, pass, fail := pair(t, a, b)
	if pass[0] != 1 || fail[0] != 2 || pass[1] != 3 || fail[1] != 0 {
		t.Errorf("pass %v fail %v, want [1 3] [2 0]:\n%s\n%s", pass, fail, out[0], out[1])
	}
	for _, re := range []string{
		`(?m)^CONFORMANCE FAIL evtchn/Leak: half A: leftovers of half A \(domain 1\): ports=1 grants=0 shares=0 mappings=0, ports=0 grants=0 shares=0 mappings=0 before the case$`,
		`(?m)^CONFORMANCE PASS evtchn/Next half=A`,
		`(?m)^CONFORMANCE FAIL leftovers: ports=1 grants=0 shares=0 mappings=0, ports=0 grants=0 shares=0 mappings=0 before the first case$`,
		`(?m)^CONFORMANCE DONE pass=1 fail=2$`,
	} {
		if !regexp.MustCompile(re).MatchString(out[0]) {
			t.Errorf("half A: output lacks %s:\n%s", re, out[0])
		}
	}
}
