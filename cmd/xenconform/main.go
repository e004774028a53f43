//go:build linux

// Command xenconform runs the conformance suites of package evtchn
// (evtchntest) and package gnttab (gnttabtest) against the Linux-domain
// implementations (evlinux over /dev/xen/evtchn, gntlinux over
// /dev/xen/gntalloc and /dev/xen/gntdev), as one domain of a pair: it is
// the Linux counterpart of the Gozen guest qemu/guests/conformance, with
// the same halves, flags and output (both run package twodom/conform), so
// that the rig can pair it with that guest or with a second xenconform
// process. The halves meet through
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
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/gozen-dev/gozen/domid"
	"github.com/gozen-dev/gozen/evtchn/evlinux"
	"github.com/gozen-dev/gozen/evtchn/evtchntest/twodom"
	"github.com/gozen-dev/gozen/evtchn/evtchntest/twodom/conform"
	"github.com/gozen-dev/gozen/gnttab/gntlinux"
	"github.com/gozen-dev/gozen/xenbus"
	"github.com/gozen-dev/gozen/xenbus/xslinux"
)

// con prints this program's lines.
var con = conform.Console{W: os.Stdout}

// config is the parsed command line.
type config struct {
	*conform.Plan
	peer, self string
	xenstore   string
}

func main() {
	flag.CommandLine.SetOutput(os.Stdout)
	var args conform.Args
	args.Register(flag.CommandLine)
	selfFlag := flag.String("self", "", "this domain's id (default: read domid from the store)")
	xsFlag := flag.String("xenstore", "auto", "how to reach xenstore: auto (socket if present), socket or device")
	flag.Parse()
	cfg, err := parse(args, *selfFlag, *xsFlag)
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
	con.SetupFailed(err)
	os.Exit(1)
}

// parse checks the command line before any device is opened.
func parse(a conform.Args, self, xs string) (*config, error) {
	plan, err := a.Plan()
	if err != nil {
		return nil, err
	}
	switch xs {
	case "auto", "socket", "device":
	default:
		return nil, fmt.Errorf("-xenstore: %q is not auto, socket or device", xs)
	}
	if a.Peer != "xs" {
		if _, err := conform.ParseDomid(a.Peer); err != nil {
			return nil, fmt.Errorf("-peer: %w", err)
		}
	}
	if self != "" {
		if _, err := conform.ParseDomid(self); err != nil {
			return nil, fmt.Errorf("-self: %w", err)
		}
	}
	return &config{Plan: plan, peer: a.Peer, self: self, xenstore: xs}, nil
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
		id, _ := conform.ParseDomid(self)
		return xenbus.NewTransport(conn, id), nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return xenbus.DialTransport(ctx, conn)
}

// selfID is the domid of the client's home.
func selfID(xs *xenbus.Client) (domid.ID, error) {
	return conform.ParseDomid(strings.TrimPrefix(xs.Home(), "/local/domain/"))
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
	xs, err := connect(c.xenstore, c.self, c.Timeout)
	if err != nil {
		return 0, fmt.Errorf("xenstore: %w", err)
	}
	defer xs.Close()
	self, err := selfID(xs)
	if err != nil {
		return 0, fmt.Errorf("xenstore home %q: %w", xs.Home(), err)
	}
	peer, err := conform.PeerOf(xs, c.peer, c.Timeout)
	if err != nil {
		return 0, err
	}
	var lastDropped uint64
	_, fail = c.Run(&conform.Domain{
		Events: ev, Grants: mem, Store: xs, Self: self, Peer: peer, Console: con,
		Begin: func() { lastDropped = ev.Dropped() },
		CaseDone: func(name string, r twodom.Result) {
			if d := ev.Dropped(); r.Failed() {
				con.Say("%s events during the case: dropped=%d (notifications for ports not bound); device: %v",
					name, d-lastDropped, ev.Err())
			}
			lastDropped = ev.Dropped()
		},
		End: func() {
			con.Say("events reads=%d delivered=%d dropped=%d overflows=%d", ev.Reads.Load(), ev.Delivered.Load(), ev.Dropped(), ev.Overflows.Load())
		},
	})
	return fail, nil
}
