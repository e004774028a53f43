// Package conform runs the conformance suites of package evtchn
// (evtchntest) and package gnttab (gnttabtest) as one domain of a pair,
// the halves of each case meeting through xenstore (twodom/xslink), and
// prints the results as CONFORMANCE lines. It is the runner shared by the
// Gozen guest qemu/guests/conformance (the Xen implementations) and the
// Linux tool cmd/xenconform (the /dev/xen implementations): the case
// selection, the flags both take, the peer's domid, the run with its leak
// checks and the line format live here; each program brings its services,
// its store and its own diagnostics.
//
// The lines, which the rig's tests parse (qemu/conformance_test.go,
// qemu/linuxconf_test.go):
//
//	CONFORMANCE ready domid=D half=H peer=P cases=N
//	CONFORMANCE baseline ports=N grants=N shares=N mappings=N
//	CONFORMANCE PASS evtchn/PingPong half=A secs=S [| log...]
//	CONFORMANCE FAIL gnttab/ReadOnly: half B: error; error...
//	CONFORMANCE PASS leftovers ports=N grants=N shares=N mappings=N, as before the first case
//	CONFORMANCE DONE pass=N fail=M
package conform

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/gozen-dev/gozen/domid"
	"github.com/gozen-dev/gozen/evtchn"
	"github.com/gozen-dev/gozen/evtchn/evtchntest"
	"github.com/gozen-dev/gozen/evtchn/evtchntest/twodom"
	"github.com/gozen-dev/gozen/evtchn/evtchntest/twodom/xslink"
	"github.com/gozen-dev/gozen/gnttab"
	"github.com/gozen-dev/gozen/gnttab/gnttabtest"
	"github.com/gozen-dev/gozen/xenbus"
)

// Tag starts every line of the runner and of the programs using it.
const Tag = "CONFORMANCE"

// PeerNode is the node, under the domain's home, to which the toolstack
// writes the peer's domid when the peer is given as "xs".
const PeerNode = "data/conformance-peer"

// Console prints Tag lines to W.
type Console struct {
	// W receives the lines (a program's standard output).
	W io.Writer
}

// Say prints one line: Tag, a space, then format expanded with args.
func (c Console) Say(format string, args ...any) {
	fmt.Fprintf(c.W, Tag+" "+format+"\n", args...)
}

// SetupFailed prints the lines of a run that failed before its first
// case: a FAIL line for err, then DONE with one failure.
func (c Console) SetupFailed(err error) {
	c.Say("FAIL setup: %v", err)
	c.Say("DONE pass=0 fail=1")
}

// Case prints the PASS or FAIL line of the case named name (suite/Case)
// that half h ran with result r; a failure's messages that span lines (a
// panic's stack) follow it, indented, then its log lines.
func (c Console) Case(name string, h twodom.Half, r twodom.Result) {
	if !r.Failed() {
		line := fmt.Sprintf("PASS %s half=%s secs=%.3f", name, h, r.Elapsed.Seconds())
		for _, l := range r.Logs {
			line += " | " + l
		}
		c.Say("%s", line)
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
	c.Say("FAIL %s: half %s: %s", name, h, strings.Join(first, "; "))
	for _, m := range more {
		for _, l := range strings.Split(m, "\n") {
			fmt.Fprintf(c.W, "%s   %s\n", Tag, l)
		}
	}
	for _, l := range r.Logs {
		c.Say("%s log: %s", name, l)
	}
}

// Args are the command-line arguments both programs take.
type Args struct {
	// Half is the half of every case this domain runs: A or B.
	Half string
	// Peer is the other domain's id, or "xs": read it from PeerNode.
	Peer string
	// Suites are the suites to run, in order, separated by commas.
	Suites string
	// Run selects the cases whose name suite/Case it matches.
	Run string
	// PingPongs is the number of round trips of evtchn/PingPong.
	PingPongs int
	// Timeout bounds each wait on the xenstore link.
	Timeout time.Duration
	// Limit bounds each half.
	Limit time.Duration
}

// Register defines the flags -half, -peer, -suites, -run, -pingpongs,
// -timeout and -limit in set, stored in a.
func (a *Args) Register(set *flag.FlagSet) {
	set.StringVar(&a.Half, "half", "", "the half of every case this domain runs: A or B")
	set.StringVar(&a.Peer, "peer", "xs", "the other domain's id, or xs (read "+PeerNode+")")
	set.StringVar(&a.Suites, "suites", "evtchn,gnttab", "suites to run, in order")
	set.StringVar(&a.Run, "run", "", "run only the cases whose name suite/Case matches this regexp")
	set.IntVar(&a.PingPongs, "pingpongs", evtchntest.PingPongs, "round trips of evtchn/PingPong")
	set.DurationVar(&a.Timeout, "timeout", 2*time.Minute, "bound of each wait on the xenstore link")
	set.DurationVar(&a.Limit, "limit", 5*time.Minute, "bound of each half")
}

// Plan is what one domain runs: its half of the selected cases of each
// suite, in order.
type Plan struct {
	// Half is the half of every case this domain runs.
	Half twodom.Half
	// Suites are the suites to run, in order: "evtchn" or "gnttab".
	Suites []string
	// Events are the selected cases of suite evtchn.
	Events []twodom.Case[evtchn.Events]
	// Grants are the selected cases of suite gnttab.
	Grants []twodom.Case[gnttab.SharedMemory]
	// Total is the number of cases run, the leftovers check aside.
	Total int
	// Timeout bounds each wait on the xenstore link.
	Timeout time.Duration
	// Limit bounds each half.
	Limit time.Duration
}

// Plan checks a's half, case selection and suites and returns the plan
// they make. It opens nothing; a.Peer is not checked (see PeerOf).
func (a *Args) Plan() (*Plan, error) {
	h, err := twodom.ParseHalf(a.Half)
	if err != nil {
		return nil, err
	}
	sel, err := regexp.Compile(a.Run)
	if err != nil {
		return nil, fmt.Errorf("-run: %w", err)
	}
	p := &Plan{Half: h, Timeout: a.Timeout, Limit: a.Limit}
	p.Events = pick("evtchn", evtchntest.CasesWith(evtchntest.Options{PingPongs: a.PingPongs}), sel)
	p.Grants = pick("gnttab", gnttabtest.Cases(), sel)
	for _, s := range strings.Split(a.Suites, ",") {
		switch s {
		case "evtchn":
			p.Total += len(p.Events)
		case "gnttab":
			p.Total += len(p.Grants)
		default:
			return nil, fmt.Errorf("-suites: unknown suite %q", s)
		}
		p.Suites = append(p.Suites, s)
	}
	return p, nil
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

// ParseDomid parses a domain id in decimal; the ids from DOMID_SELF up
// (domid.Self) name no domain and are refused.
func ParseDomid(s string) (domid.ID, error) {
	n, err := strconv.ParseUint(strings.TrimSpace(s), 10, 16)
	if err != nil || domid.ID(n) >= domid.Self {
		return 0, fmt.Errorf("bad domid %q", s)
	}
	return domid.ID(n), nil
}

// PeerOf resolves the peer argument p: a domid, or "xs": wait, at most
// timeout, until the toolstack writes the peer's domid to PeerNode under
// xs's home.
func PeerOf(xs *xenbus.Client, p string, timeout time.Duration) (domid.ID, error) {
	v := p
	if p == "xs" {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		err := xs.WaitFor(ctx, PeerNode, func() (bool, error) {
			s, err := xs.ReadString(ctx, PeerNode)
			if errors.Is(err, fs.ErrNotExist) {
				return false, nil
			}
			v = s
			return err == nil, err
		})
		if err != nil {
			return 0, fmt.Errorf("waiting for %s: %w", PeerNode, err)
		}
	}
	return ParseDomid(v)
}

// Events is an event-channel service that counts its ports.
type Events interface {
	evtchn.Events
	// Stats counts the ports the service holds.
	Stats() evtchn.Stats
}

// Grants is a grant service that counts its grants, shares and mappings.
type Grants interface {
	gnttab.SharedMemory
	// Stats counts the grant objects the service holds.
	Stats() gnttab.Stats
}

// Counts are the resources a leak check compares.
type Counts struct {
	// Ports are the event-channel ports held.
	Ports int
	// Grants, Shares and Mappings are the grant objects held.
	Grants, Shares, Mappings int
}

// String formats c as the baseline and leftovers lines show it.
func (c Counts) String() string {
	return fmt.Sprintf("ports=%d grants=%d shares=%d mappings=%d", c.Ports, c.Grants, c.Shares, c.Mappings)
}

// Domain is the domain a Plan runs in, with the program's hooks.
type Domain struct {
	// Events and Grants are the services under test.
	Events Events
	Grants Grants
	// Store reaches xenstore, where the links of the cases live.
	Store *xenbus.Client
	// Self is this domain's id, Peer the other domain's. When they are
	// the same (two processes of one domain, dom0 say), the two ends of
	// a link are told apart by their halves.
	Self, Peer domid.ID
	// Console receives the lines.
	Console Console
	// Begin, if set, is called after the baseline line, before the
	// first case.
	Begin func()
	// CaseDone, if set, is called after each case's lines with the
	// case's name (suite/Case) and result, for the program's own
	// diagnostics.
	CaseDone func(name string, r twodom.Result)
	// End, if set, is called after the leftovers line, before the DONE
	// line.
	End func()
}

// Counts returns what d holds now.
func (d *Domain) Counts() Counts {
	st := d.Grants.Stats()
	return Counts{Ports: d.Events.Stats().Ports, Grants: st.Grants, Shares: st.Shares, Mappings: st.Mappings}
}

// leftovers describes how what d holds differs from base, or returns "".
func (d *Domain) leftovers(base Counts, when string) string {
	if n := d.Counts(); n != base {
		return fmt.Sprintf("%s, %s %s", n, base, when)
	}
	return ""
}

// Run runs p in d: the ready and baseline lines, this domain's half of
// every selected case with its line, a leftovers check (what d holds must
// be back to the baseline) and the DONE line. Each case must also give
// back what it took; a leak is reported once, against the case that made
// it. Run returns the number of passes and failures, the leftovers check
// counted.
func (p *Plan) Run(d *Domain) (pass, fail int) {
	con := d.Console
	con.Say("ready domid=%d half=%s peer=%d cases=%d", d.Self, p.Half, d.Peer, p.Total)
	base := d.Counts()
	con.Say("baseline %s", base)
	last := base
	left := func() string {
		l := d.leftovers(last, "before the case")
		last = d.Counts()
		return l
	}
	opts := xslink.Options{Timeout: p.Timeout}
	if d.Peer == d.Self {
		opts.Tags = [2]string{string(p.Half), string(p.Half.Other())}
	}
	if d.Begin != nil {
		d.Begin()
	}
	for _, s := range p.Suites {
		open := func(name string) (twodom.LinkCloser, error) {
			return xslink.Open(d.Store, d.Self, d.Peer, s+"/"+name, opts)
		}
		report := func(name string, r twodom.Result) {
			con.Case(s+"/"+name, p.Half, r)
			if d.CaseDone != nil {
				d.CaseDone(s+"/"+name, r)
			}
		}
		var np, nf int
		switch s {
		case "evtchn":
			np, nf = twodom.RunSide(p.Events, twodom.SideConfig[evtchn.Events]{Half: p.Half, Peer: d.Peer, Open: open,
				Limit: p.Limit, Report: report, Domain: evtchntest.Domain{Svc: d.Events, ID: d.Self, Leftovers: left}})
		case "gnttab":
			np, nf = twodom.RunSide(p.Grants, twodom.SideConfig[gnttab.SharedMemory]{Half: p.Half, Peer: d.Peer, Open: open,
				Limit: p.Limit, Report: report, Domain: gnttabtest.Domain{Svc: d.Grants, ID: d.Self, Leftovers: left}})
		}
		pass, fail = pass+np, fail+nf
	}
	if l := d.leftovers(base, "before the first case"); l != "" {
		fail++
		con.Say("FAIL leftovers: %s", l)
	} else {
		pass++
		con.Say("PASS leftovers %s, as before the first case", d.Counts())
	}
	if d.End != nil {
		d.End()
	}
	con.Say("DONE pass=%d fail=%d", pass, fail)
	return pass, fail
}
