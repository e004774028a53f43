//go:build tamago

// Command conformance is the guest program of qemu/conformance_test.go: it
// runs the conformance suites of package evtchn (evtchntest) and package
// gnttab (gnttabtest) against the Xen implementations (the platform's
// event channels and grant table), as one domain of a pair. Two domains run it, one with
// -half A and one with -half B; each runs its half of every case, the two
// meeting through a xenstore link per case (twodom/xslink), as the host
// runs the suites' halves in two goroutines or two processes. The runner
// and its lines are package twodom/conform, shared with cmd/xenconform.
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
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/gozen-dev/gozen/arch/amd64/irq"
	"github.com/gozen-dev/gozen/boot"
	"github.com/gozen-dev/gozen/domid"
	"github.com/gozen-dev/gozen/evtchn/evtchntest/twodom"
	"github.com/gozen-dev/gozen/evtchn/evtchntest/twodom/conform"
	"github.com/gozen-dev/gozen/evtchn/evxen"
	"github.com/gozen-dev/gozen/gnttab/gntxen"
	"github.com/gozen-dev/gozen/platform"
)

// con prints this program's lines.
var con = conform.Console{W: os.Stdout}

var (
	ev  *evxen.Events
	mem *gntxen.Grants
)

// events are the event-channel counters printed with a failure.
type events struct{ upcalls, delivered, dropped uint64 }

func eventCounts() events {
	return events{ev.Upcalls.Load(), ev.Delivered.Load(), ev.Dropped()}
}

func main() {
	var args conform.Args
	args.Register(flag.CommandLine)
	flag.Parse()
	if err := run(args); err != nil {
		con.SetupFailed(err)
	}
}

func run(args conform.Args) error {
	plan, err := args.Plan()
	if err != nil {
		return err
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
	peer, err := conform.PeerOf(xs, args.Peer, args.Timeout)
	if err != nil {
		return err
	}

	var evLast events
	plan.Run(&conform.Domain{
		Events: ev, Grants: mem, Store: xs, Self: self, Peer: peer, Console: con,
		Begin: func() {
			evLast = eventCounts()
			go stallWatch()
		},
		CaseDone: func(name string, r twodom.Result) {
			e := eventCounts()
			if r.Failed() {
				con.Say("%s events during the case: upcalls=%d delivered=%d dropped=%d (notifications for ports not bound)",
					name, e.upcalls-evLast.upcalls, e.delivered-evLast.delivered, e.dropped-evLast.dropped)
			}
			evLast = e
		},
		End: func() {
			e := eventCounts()
			i := irq.ReadStats()
			con.Say("events upcalls=%d delivered=%d dropped=%d; interrupts=%d direct=%d deferred=%d retries=%d kicks=%d calls=%d",
				e.upcalls, e.delivered, e.dropped, i.Interrupts, i.Direct, i.Deferred, i.Retries, i.Kicks, i.Calls)
		},
	})
	return nil
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
			con.Say("STALL %ds: %s; irq %+v; lapic %s", quiet, ev.Debug(4), i, irq.LAPICState())
		}
	}
}
