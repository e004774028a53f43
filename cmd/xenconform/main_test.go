//go:build linux

package main

import (
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/gozen-dev/gozen/evtchn/evlinux"
	"github.com/gozen-dev/gozen/evtchn/evtchntest/twodom/conform"
)

func TestParse(t *testing.T) {
	for _, c := range []struct {
		name                          string
		half, peer, self, suites, run string
		xs                            string
		ok                            bool
		total                         int
	}{
		{"all", "A", "xs", "", "evtchn,gnttab", "", "auto", true, 10 + 9},
		{"one case", "b", "3", "0", "evtchn,gnttab", "^gnttab/Copy$", "device", true, 1},
		{"evtchn only", "A", "0", "", "evtchn", "", "socket", true, 10},
		{"bad half", "C", "xs", "", "evtchn", "", "auto", false, 0},
		{"bad peer", "A", "dom1", "", "evtchn", "", "auto", false, 0},
		{"peer DOMID_SELF", "A", "32752", "", "evtchn", "", "auto", false, 0},
		{"bad self", "A", "1", "-1", "evtchn", "", "auto", false, 0},
		{"bad suite", "A", "1", "", "evtchn,blk", "", "auto", false, 0},
		{"bad run", "A", "1", "", "evtchn", "(", "auto", false, 0},
		{"bad xenstore", "A", "1", "", "evtchn", "", "ring", false, 0},
	} {
		a := conform.Args{Half: c.half, Peer: c.peer, Suites: c.suites, Run: c.run, PingPongs: 10, Timeout: time.Second, Limit: time.Second}
		cfg, err := parse(a, c.self, c.xs)
		if (err == nil) != c.ok {
			t.Errorf("%s: err = %v, want ok=%v", c.name, err, c.ok)
			continue
		}
		if c.ok && cfg.Total != c.total {
			t.Errorf("%s: %d cases, want %d", c.name, cfg.Total, c.total)
		}
	}
}

// TestNoXen: without /dev/xen the run fails at setup, clearly.
func TestNoXen(t *testing.T) {
	if _, err := os.Stat(evlinux.DevicePath); err == nil {
		t.Skip("this is a Xen domain")
	}
	a := conform.Args{Half: "A", Peer: "1", Suites: "evtchn", PingPongs: 10, Timeout: time.Second, Limit: time.Second}
	cfg, err := parse(a, "0", "auto")
	if err != nil {
		t.Fatal(err)
	}
	_, err = run(cfg)
	if err == nil || !strings.Contains(err.Error(), "event channels") || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("run without Xen: %v", err)
	}
}
