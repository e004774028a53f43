//go:build linux

package main

import (
	"errors"
	"io"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/gozen-dev/gozen/evtchn/evlinux"
	"github.com/gozen-dev/gozen/evtchn/evtchntest/twodom"
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
		cfg, err := parse(c.half, c.peer, c.self, c.suites, c.run, 10, time.Second, time.Second, c.xs)
		if (err == nil) != c.ok {
			t.Errorf("%s: err = %v, want ok=%v", c.name, err, c.ok)
			continue
		}
		if c.ok && cfg.total != c.total {
			t.Errorf("%s: %d cases, want %d", c.name, cfg.total, c.total)
		}
	}
}

// capture returns what f prints on stdout.
func capture(t *testing.T, f func()) string {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	old := os.Stdout
	os.Stdout = w
	f()
	os.Stdout = old
	w.Close()
	b, _ := io.ReadAll(r)
	return string(b)
}

// TestReportLines: the lines have the guest's format, which the rig's
// tier-B tests parse.
func TestReportLines(t *testing.T) {
	out := capture(t, func() {
		reportCase("evtchn/PingPong", twodom.HalfA, twodom.Result{Logs: []string{"x"}, Elapsed: 1500 * time.Millisecond})
		reportCase("gnttab/Copy", twodom.HalfB, twodom.Result{Errors: []string{"first", "panic: p\nstack"}})
	})
	for _, re := range []string{
		`(?m)^CONFORMANCE PASS evtchn/PingPong half=A secs=1\.500 \| x$`,
		`(?m)^CONFORMANCE FAIL gnttab/Copy: half B: first; panic: p$`,
		`(?m)^CONFORMANCE   stack$`,
	} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("output lacks %s:\n%s", re, out)
		}
	}
}

// TestNoXen: without /dev/xen the run fails at setup, clearly.
func TestNoXen(t *testing.T) {
	if _, err := os.Stat(evlinux.DevicePath); err == nil {
		t.Skip("this is a Xen domain")
	}
	cfg, err := parse("A", "1", "0", "evtchn", "", 10, time.Second, time.Second, "auto")
	if err != nil {
		t.Fatal(err)
	}
	_, err = run(cfg)
	if err == nil || !strings.Contains(err.Error(), "event channels") || !errors.Is(err, os.ErrNotExist) {
		t.Errorf("run without Xen: %v", err)
	}
}
