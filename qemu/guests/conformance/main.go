//go:build tamago

// Command conformance is the guest program of qemu/conformance_test.go: it
// runs the conformance suites of package evtchn (evtchntest) and package
// gnttab (gnttabtest) against the Xen implementations (the platform's
// event channels and grant table), as one domain of a pair. Two domains run it, one with
// -half A and one with -half B; each runs its half of every case, the two
// meeting through a xenstore link per case (twodom/xslink), as the host
// runs the suites' halves in two goroutines or two processes.
//
//	conformance -half A|B [-peer xs|DOMID] [-suites evtchn,gnttab] [-run REGEXP]
//	            [-pingpongs N] [-timeout D] [-limit D]
//
// The peer is a domid, or "xs": wait until the toolstack writes the peer's
// domid to this domain's xenstore node data/conformance-peer. Both domains
// must be given the same suites, -run and -pingpongs.
//
// Output, in the guest tests' case-line format (see qemu/guest_test.go),
// one PASS or FAIL line per case named suite/Case, then the leftovers case
// (the ports and grants this domain holds must be back to what it held
// before the first case) and the DONE line:
//
//	CONFORMANCE ready domid=D half=H peer=P cases=N
//	CONFORMANCE baseline ports=N grants=N shares=N mappings=N
//	CONFORMANCE PASS evtchn/PingPong half=A secs=S [| log...]
//	CONFORMANCE FAIL gnttab/ReadOnly: half B: error; error...
//	CONFORMANCE PASS leftovers ports=N grants=N shares=N mappings=N, as before the first case
//	CONFORMANCE DONE pass=N fail=M
//
// The program returns from main (the domain powers off) whatever the
// results, so that the other domain is not cut short.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/gozen-dev/gozen/arch/amd64/irq"
	"github.com/gozen-dev/gozen/boot"
	"github.com/gozen-dev/gozen/domid"
	"github.com/gozen-dev/gozen/evtchn"
	"github.com/gozen-dev/gozen/evtchn/evtchntest"
	"github.com/gozen-dev/gozen/evtchn/evtchntest/twodom"
	"github.com/gozen-dev/gozen/evtchn/evtchntest/twodom/xslink"
	"github.com/gozen-dev/gozen/evtchn/evxen"
	"github.com/gozen-dev/gozen/gnttab"
	"github.com/gozen-dev/gozen/gnttab/gnttabtest"
	"github.com/gozen-dev/gozen/gnttab/gntxen"
	"github.com/gozen-dev/gozen/platform"
	"github.com/gozen-dev/gozen/xenbus"
)

// tag starts every line of this program.
const tag = "CONFORMANCE"

func say(format string, args ...any) { fmt.Printf(tag+" "+format+"\n", args...) }

// counts are the resources a leak check compares.
type counts struct {
	ports                    int
	grants, shares, mappings int
}

func (c counts) String() string {
	return fmt.Sprintf("ports=%d grants=%d shares=%d mappings=%d", c.ports, c.grants, c.shares, c.mappings)
}

var (
	ev  *evxen.Events
	mem *gntxen.Grants
)

func now() counts {
	st := mem.Stats()
	return counts{ports: ev.Stats().Ports, grants: st.Grants, shares: st.Shares, mappings: st.Mappings}
}

// leftovers describes how now differs from base, or returns "".
func leftovers(base counts, when string) string {
	if c := now(); c != base {
		return fmt.Sprintf("%s, %s %s", c, base, when)
	}
	return ""
}

// events are the event-channel counters printed with a failure.
type events struct{ upcalls, delivered, dropped uint64 }

func eventCounts() events {
	return events{ev.Upcalls.Load(), ev.Delivered.Load(), ev.Dropped()}
}

func main() {
	halfFlag := flag.String("half", "", "the half of every case this domain runs: A or B")
	peerFlag := flag.String("peer", "xs", "the other domain's id, or xs (read data/conformance-peer)")
	suitesFlag := flag.String("suites", "evtchn,gnttab", "suites to run, in order")
	runFlag := flag.String("run", "", "run only the cases whose name suite/Case matches this regexp")
	pingPongs := flag.Int("pingpongs", evtchntest.PingPongs, "round trips of evtchn/PingPong")
	timeout := flag.Duration("timeout", 2*time.Minute, "bound of each wait on the xenstore link")
	limit := flag.Duration("limit", 5*time.Minute, "bound of each half")
	flag.Parse()
	if err := run(*halfFlag, *peerFlag, *suitesFlag, *runFlag, *pingPongs, *timeout, *limit); err != nil {
		say("FAIL setup: %v", err)
		say("DONE pass=0 fail=1")
	}
}

func run(halfArg, peerArg, suites, runArg string, pingPongs int, timeout, limit time.Duration) error {
	half, err := twodom.ParseHalf(halfArg)
	if err != nil {
		return err
	}
	sel, err := regexp.Compile(runArg)
	if err != nil {
		return fmt.Errorf("-run: %w", err)
	}
	id, ok := boot.DomID()
	if !ok {
		return errors.New("domid unknown")
	}
	self := domid.ID(id)
	p := platform.Domain()
	ev = p.Events()
	if mem, err = p.Grants(); err != nil {
		return fmt.Errorf("grant tables: %w", err)
	}
	xs, err := p.Store()
	if err != nil {
		return fmt.Errorf("xenstore: %w", err)
	}
	peer, err := peerOf(xs, peerArg, timeout)
	if err != nil {
		return err
	}

	evCases := pick("evtchn", evtchntest.CasesWith(evtchntest.Options{PingPongs: pingPongs}), sel)
	gntCases := pick("gnttab", gnttabtest.Cases(), sel)
	total := 0
	for _, s := range strings.Split(suites, ",") {
		switch s {
		case "evtchn":
			total += len(evCases)
		case "gnttab":
			total += len(gntCases)
		default:
			return fmt.Errorf("-suites: unknown suite %q", s)
		}
	}
	say("ready domid=%d half=%s peer=%d cases=%d", self, half, peer, total)
	base := now()
	say("baseline %s", base)
	// each case must give back what it took; a leak is reported once,
	// against the case that made it
	last := base
	left := func() string {
		l := leftovers(last, "before the case")
		last = now()
		return l
	}
	evLast := eventCounts()
	go stallWatch()

	pass, fail := 0, 0
	for _, s := range strings.Split(suites, ",") {
		open := func(name string) (twodom.LinkCloser, error) {
			return xslink.Open(xs, self, peer, s+"/"+name, xslink.Options{Timeout: timeout})
		}
		report := func(name string, r twodom.Result) {
			reportCase(s+"/"+name, half, r)
			e := eventCounts()
			if r.Failed() {
				say("%s/%s events during the case: upcalls=%d delivered=%d dropped=%d (notifications for ports not bound)",
					s, name, e.upcalls-evLast.upcalls, e.delivered-evLast.delivered, e.dropped-evLast.dropped)
			}
			evLast = e
		}
		var p, f int
		switch s {
		case "evtchn":
			p, f = twodom.RunSide(evCases, twodom.SideConfig[evtchn.Events]{Half: half, Peer: peer, Open: open,
				Limit: limit, Report: report, Domain: evtchntest.Domain{Svc: ev, ID: self, Leftovers: left}})
		case "gnttab":
			p, f = twodom.RunSide(gntCases, twodom.SideConfig[gnttab.SharedMemory]{Half: half, Peer: peer, Open: open,
				Limit: limit, Report: report, Domain: gnttabtest.Domain{Svc: mem, ID: self, Leftovers: left}})
		}
		pass, fail = pass+p, fail+f
	}
	if l := leftovers(base, "before the first case"); l != "" {
		fail++
		say("FAIL leftovers: %s", l)
	} else {
		pass++
		say("PASS leftovers %s, as before the first case", now())
	}
	e := eventCounts()
	i := irq.ReadStats()
	say("events upcalls=%d delivered=%d dropped=%d; interrupts=%d direct=%d deferred=%d retries=%d kicks=%d calls=%d",
		e.upcalls, e.delivered, e.dropped, i.Interrupts, i.Direct, i.Deferred, i.Retries, i.Kicks, i.Calls)
	say("DONE pass=%d fail=%d", pass, fail)
	return nil
}

// pick returns the cases of suite whose name suite/Case sel matches.
func pick[S any](suite string, cases []twodom.Case[S], sel *regexp.Regexp) []twodom.Case[S] {
	var out []twodom.Case[S]
	for _, c := range cases {
		if sel.MatchString(suite + "/" + c.Name) {
			out = append(out, c)
		}
	}
	return out
}

// reportCase prints a case's PASS or FAIL line; a failure's messages that
// span lines (a panic's stack) follow it, indented.
func reportCase(name string, h twodom.Half, r twodom.Result) {
	if !r.Failed() {
		line := fmt.Sprintf("PASS %s half=%s secs=%.3f", name, h, r.Elapsed.Seconds())
		for _, l := range r.Logs {
			line += " | " + l
		}
		say("%s", line)
		return
	}
	var first []string
	var more []string
	for _, e := range r.Errors {
		f, rest, _ := strings.Cut(e, "\n")
		first = append(first, f)
		if rest != "" {
			more = append(more, rest)
		}
	}
	say("FAIL %s: half %s: %s", name, h, strings.Join(first, "; "))
	for _, m := range more {
		for _, l := range strings.Split(m, "\n") {
			fmt.Printf("%s   %s\n", tag, l)
		}
	}
	for _, l := range r.Logs {
		say("%s log: %s", name, l)
	}
}

// peerOf resolves -peer: a domid, or xs (wait for data/conformance-peer).
func peerOf(xs *xenbus.Client, p string, timeout time.Duration) (domid.ID, error) {
	v := p
	if p == "xs" {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		err := xs.WaitFor(ctx, "data/conformance-peer", func() (bool, error) {
			s, err := xs.ReadString(ctx, "data/conformance-peer")
			if errors.Is(err, fs.ErrNotExist) {
				return false, nil
			}
			v = s
			return err == nil, err
		})
		if err != nil {
			return 0, fmt.Errorf("waiting for data/conformance-peer: %w", err)
		}
	}
	n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 16)
	if err != nil {
		return 0, fmt.Errorf("bad peer domid %q", v)
	}
	return domid.ID(n), nil
}

func init() {
	// The halves print nothing themselves; keep the flag package's usage
	// on the console.
	flag.CommandLine.SetOutput(os.Stdout)
}

// stallWatch prints the raw event state when no notification was
// delivered for 5 s (diagnosis of lost wake-ups).
func stallWatch() {
	last := ev.Delivered.Load()
	quiet := 0
	for {
		time.Sleep(time.Second)
		d := ev.Delivered.Load()
		if d != last {
			last, quiet = d, 0
			continue
		}
		quiet++
		if quiet == 5 || quiet == 20 {
			i := irq.ReadStats()
			say("STALL %ds: %s; irq %+v; lapic %s", quiet, ev.Debug(4), i, irq.LAPICState())
		}
	}
}
