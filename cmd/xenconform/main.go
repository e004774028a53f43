//go:build linux

// Command xenconform runs the conformance suites of package evtchn
// (evtchntest) and package gnttab (gnttabtest) against the Linux-domain
// implementations (evlinux over /dev/xen/evtchn, gntlinux over
// /dev/xen/gntalloc and /dev/xen/gntdev), as one domain of a pair: it is
// the Linux counterpart of the Gozen guest qemu/guests/conformance, with
// the same halves, flags and output, so that the rig can pair it with
// that guest or with a second xenconform process. The halves meet through
// xenstore (twodom/xslink over package xslinux: xenstored's socket if
// present, else /dev/xen/xenbus).
//
//	xenconform -half A|B [-peer xs|DOMID] [-self DOMID] [-suites evtchn,gnttab]
//	           [-run REGEXP] [-pingpongs N] [-timeout D] [-limit D] [-xenstore auto|socket|device]
//
// The peer is a domid, or "xs": wait until the toolstack writes the peer's
// domid to this domain's node data/conformance-peer. When the peer is this
// very domain (two processes of one domain, e.g. both in dom0), each
// process's link nodes are told apart by its half. Both sides must be
// given the same suites, -run and -pingpongs.
//
// Output lines, as the guest's:
//
//	CONFORMANCE ready domid=D half=H peer=P cases=N
//	CONFORMANCE baseline ports=N grants=N shares=N mappings=N
//	CONFORMANCE PASS evtchn/PingPong half=A secs=S [| log...]
//	CONFORMANCE FAIL gnttab/ReadOnly: half B: error; error...
//	CONFORMANCE PASS leftovers ports=N grants=N shares=N mappings=N, as before the first case
//	CONFORMANCE DONE pass=N fail=M
//
// The exit status is 0 when every case passed, 1 otherwise.
//
// gntlinux cannot refuse Unshare while the peer maps (Linux does not tell
// user space; see package gntlinux), so with this program as half A (the
// granter) gnttab/UnshareWhileMapped, gnttab/ReadOnlyMultiPageUnshareRefused
// and gnttab/UnshareRace are expected to fail; leave them out of -run on
// both sides, or run this program as half B.
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

	"github.com/gozen-dev/gozen/domid"
	"github.com/gozen-dev/gozen/evtchn"
	"github.com/gozen-dev/gozen/evtchn/evlinux"
	"github.com/gozen-dev/gozen/evtchn/evtchntest"
	"github.com/gozen-dev/gozen/evtchn/evtchntest/twodom"
	"github.com/gozen-dev/gozen/evtchn/evtchntest/twodom/xslink"
	"github.com/gozen-dev/gozen/gnttab"
	"github.com/gozen-dev/gozen/gnttab/gntlinux"
	"github.com/gozen-dev/gozen/gnttab/gnttabtest"
	"github.com/gozen-dev/gozen/xenbus"
	"github.com/gozen-dev/gozen/xenbus/xslinux"
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

// config is the parsed command line.
type config struct {
	half           twodom.Half
	peer, self     string
	suites         []string
	sel            *regexp.Regexp
	pingPongs      int
	timeout, limit time.Duration
	xenstore       string
	evCases        []twodom.Case[evtchn.Events]
	gntCases       []twodom.Case[gnttab.SharedMemory]
	total          int
}

func main() {
	flag.CommandLine.SetOutput(os.Stdout)
	halfFlag := flag.String("half", "", "the half of every case this domain runs: A or B")
	peerFlag := flag.String("peer", "xs", "the other domain's id, or xs (read data/conformance-peer)")
	selfFlag := flag.String("self", "", "this domain's id (default: read domid from the store)")
	suitesFlag := flag.String("suites", "evtchn,gnttab", "suites to run, in order")
	runFlag := flag.String("run", "", "run only the cases whose name suite/Case matches this regexp")
	pingPongs := flag.Int("pingpongs", evtchntest.PingPongs, "round trips of evtchn/PingPong")
	timeout := flag.Duration("timeout", 2*time.Minute, "bound of each wait on the xenstore link")
	limit := flag.Duration("limit", 5*time.Minute, "bound of each half")
	xsFlag := flag.String("xenstore", "auto", "how to reach xenstore: auto (socket if present), socket or device")
	flag.Parse()
	cfg, err := parse(*halfFlag, *peerFlag, *selfFlag, *suitesFlag, *runFlag, *pingPongs, *timeout, *limit, *xsFlag)
	if err == nil {
		var fail int
		fail, err = run(cfg)
		if err == nil {
			if fail > 0 {
				os.Exit(1)
			}
			return
		}
	}
	say("FAIL setup: %v", err)
	say("DONE pass=0 fail=1")
	os.Exit(1)
}

// parse checks the command line before any device is opened.
func parse(half, peer, self, suites, runArg string, pingPongs int, timeout, limit time.Duration, xs string) (*config, error) {
	h, err := twodom.ParseHalf(half)
	if err != nil {
		return nil, err
	}
	sel, err := regexp.Compile(runArg)
	if err != nil {
		return nil, fmt.Errorf("-run: %w", err)
	}
	switch xs {
	case "auto", "socket", "device":
	default:
		return nil, fmt.Errorf("-xenstore: %q is not auto, socket or device", xs)
	}
	if peer != "xs" {
		if _, err := parseDomid(peer); err != nil {
			return nil, fmt.Errorf("-peer: %w", err)
		}
	}
	if self != "" {
		if _, err := parseDomid(self); err != nil {
			return nil, fmt.Errorf("-self: %w", err)
		}
	}
	c := &config{half: h, peer: peer, self: self, sel: sel, pingPongs: pingPongs, timeout: timeout, limit: limit, xenstore: xs}
	c.evCases = pick("evtchn", evtchntest.CasesWith(evtchntest.Options{PingPongs: pingPongs}), sel)
	c.gntCases = pick("gnttab", gnttabtest.Cases(), sel)
	for _, s := range strings.Split(suites, ",") {
		switch s {
		case "evtchn":
			c.total += len(c.evCases)
		case "gnttab":
			c.total += len(c.gntCases)
		default:
			return nil, fmt.Errorf("-suites: unknown suite %q", s)
		}
		c.suites = append(c.suites, s)
	}
	return c, nil
}

func parseDomid(s string) (domid.ID, error) {
	n, err := strconv.ParseUint(strings.TrimSpace(s), 10, 16)
	if err != nil || domid.ID(n) >= domid.Self {
		return 0, fmt.Errorf("bad domid %q", s)
	}
	return domid.ID(n), nil
}

// connect opens the store as -xenstore says.
func connect(how string, self string, timeout time.Duration) (*xenbus.Client, error) {
	var conn *xslinux.Conn
	var err error
	switch how {
	case "socket":
		conn, err = xslinux.DialSocket(xslinux.SocketPath)
	case "device":
		conn, err = xslinux.OpenDevice(xslinux.DevicePath)
	default:
		conn, err = xslinux.Open()
	}
	if err != nil {
		return nil, err
	}
	if self != "" {
		id, _ := parseDomid(self)
		return xenbus.NewTransport(conn, id), nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return xenbus.DialTransport(ctx, conn)
}

// selfID is the domid of the client's home.
func selfID(xs *xenbus.Client) (domid.ID, error) {
	return parseDomid(strings.TrimPrefix(xs.Home(), "/local/domain/"))
}

func run(c *config) (fail int, err error) {
	ev, err := evlinux.Open()
	if err != nil {
		return 0, fmt.Errorf("event channels: %w", err)
	}
	defer ev.Shutdown()
	mem, err := gntlinux.Open()
	if err != nil {
		return 0, fmt.Errorf("grants: %w", err)
	}
	defer mem.Shutdown()
	xs, err := connect(c.xenstore, c.self, c.timeout)
	if err != nil {
		return 0, fmt.Errorf("xenstore: %w", err)
	}
	defer xs.Close()
	self, err := selfID(xs)
	if err != nil {
		return 0, fmt.Errorf("xenstore home %q: %w", xs.Home(), err)
	}
	peer, err := peerOf(xs, c.peer, c.timeout)
	if err != nil {
		return 0, err
	}
	now := func() counts {
		st := mem.Stats()
		return counts{ports: ev.Stats().Ports, grants: st.Grants, shares: st.Shares, mappings: st.Mappings}
	}
	leftovers := func(base counts, when string) string {
		if n := now(); n != base {
			return fmt.Sprintf("%s, %s %s", n, base, when)
		}
		return ""
	}
	say("ready domid=%d half=%s peer=%d cases=%d", self, c.half, peer, c.total)
	base := now()
	say("baseline %s", base)
	last := base
	left := func() string {
		l := leftovers(last, "before the case")
		last = now()
		return l
	}
	opts := xslink.Options{Timeout: c.timeout}
	if peer == self {
		opts.Tags = [2]string{string(c.half), string(c.half.Other())}
	}
	lastDropped := ev.Dropped()
	pass := 0
	for _, s := range c.suites {
		open := func(name string) (twodom.LinkCloser, error) {
			return xslink.Open(xs, self, peer, s+"/"+name, opts)
		}
		report := func(name string, r twodom.Result) {
			reportCase(s+"/"+name, c.half, r)
			if d := ev.Dropped(); r.Failed() {
				say("%s/%s events during the case: dropped=%d (notifications for ports not bound); device: %v",
					s, name, d-lastDropped, ev.Err())
			}
			lastDropped = ev.Dropped()
		}
		var p, f int
		switch s {
		case "evtchn":
			p, f = twodom.RunSide(c.evCases, twodom.SideConfig[evtchn.Events]{Half: c.half, Peer: peer, Open: open,
				Limit: c.limit, Report: report, Domain: evtchntest.Domain{Svc: ev, ID: self, Leftovers: left}})
		case "gnttab":
			p, f = twodom.RunSide(c.gntCases, twodom.SideConfig[gnttab.SharedMemory]{Half: c.half, Peer: peer, Open: open,
				Limit: c.limit, Report: report, Domain: gnttabtest.Domain{Svc: mem, ID: self, Leftovers: left}})
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
	say("events reads=%d delivered=%d dropped=%d overflows=%d", ev.Reads.Load(), ev.Delivered.Load(), ev.Dropped(), ev.Overflows.Load())
	say("DONE pass=%d fail=%d", pass, fail)
	return fail, nil
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
	var first, more []string
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
	return parseDomid(v)
}
