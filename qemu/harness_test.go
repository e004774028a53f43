package qemu

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/gozen-dev/gozen/qemu/rig"
)

// xentestRun returns the console of a xentest run that reported cases
// (one PASS line each, or FAIL for the names in fail), with the DONE line
// unless done is "", as Xen's serial line shows a domU's console.
func xentestRun(cases []string, fail map[string]bool, done string) []string {
	lines := []string{"(d1) XENTEST domid 1"}
	for _, c := range cases {
		if fail[c] {
			lines = append(lines, "(d1) XENTEST FAIL "+c+": it broke")
		} else {
			lines = append(lines, "(d1) XENTEST PASS "+c+" fine")
		}
		lines = append(lines, "(d1) XENTEST BENCH "+c+"-rate 1.000 ops/s")
	}
	if done != "" {
		lines = append(lines, "(d1) XENTEST DONE "+done)
	}
	return lines
}

func TestXentestProblems(t *testing.T) {
	all := xentestCases
	n := len(all)
	tests := []struct {
		name   string
		lines  []string
		reason string
		want   []string // substrings, one per expected problem; none means pass
		some   bool     // want names some of the problems, not all
	}{
		{"all pass", xentestRun(all, nil, fmt.Sprintf("pass=%d fail=0", n)), rig.ReasonPoweroff, nil, false},
		{"one fails", xentestRun(all, map[string]bool{"gnttab-copy": true}, fmt.Sprintf("pass=%d fail=1", n-1)), rig.ReasonPoweroff,
			[]string{"case gnttab-copy failed: it broke"}, false},
		{"case missing", xentestRun(all[1:], nil, fmt.Sprintf("pass=%d fail=0", n-1)), rig.ReasonPoweroff,
			[]string{"case evtchn-loopback did not report"}, false},
		{"extra case", xentestRun(append(append([]string(nil), all...), "new-case"), nil, fmt.Sprintf("pass=%d fail=0", n+1)), rig.ReasonPoweroff,
			[]string{"unexpected case new-case"}, false},
		{"case twice", xentestRun(append(append([]string(nil), all...), "virq-timer"), nil, fmt.Sprintf("pass=%d fail=0", n+1)), rig.ReasonPoweroff,
			[]string{"case virq-timer reported 2 times"}, false},
		{"only DONE", xentestRun(nil, nil, "pass=0 fail=0"), rig.ReasonPoweroff,
			[]string{"did not report"}, true},
		{"no DONE", xentestRun(all, nil, ""), rig.ReasonPoweroff,
			[]string{"no XENTEST DONE line"}, false},
		{"DONE disagrees", xentestRun(all, nil, fmt.Sprintf("pass=%d fail=0", n+3)), rig.ReasonPoweroff,
			[]string{"XENTEST DONE says"}, false},
		{"crashed after DONE", xentestRun(all, nil, fmt.Sprintf("pass=%d fail=0", n)), rig.ReasonCrash,
			[]string{"ended with crash"}, false},
		{"early domid failure", []string{"XENTEST FAIL domid: Xen's HVM CPUID leaf does not give the domid"}, rig.ReasonCrash,
			[]string{"case domid failed", "unexpected case domid", "no XENTEST DONE", "ended with crash"}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := xentestProblems(tt.lines, tt.reason)
			if len(tt.want) == 0 {
				if len(got) != 0 {
					t.Errorf("problems %q, want none", got)
				}
				return
			}
			for _, w := range tt.want {
				found := false
				for _, p := range got {
					found = found || strings.Contains(p, w)
				}
				if !found {
					t.Errorf("problems %q lack one containing %q", got, w)
				}
			}
			if !tt.some && len(got) != len(tt.want) {
				t.Errorf("problems %q, want %d", got, len(tt.want))
			}
		})
	}
}

func TestParseCaseLine(t *testing.T) {
	tests := []struct {
		tag  string
		text string
		ok   bool
		want caseLine
	}{
		{"XENTEST", "XENTEST PASS gnttab-copy GNTTABOP_copy moved the data", true, caseLine{pass: true, name: "gnttab-copy", detail: "GNTTABOP_copy moved the data"}},
		{"XENTEST", "(d3) XENTEST FAIL virq-timer: no VIRQ_TIMER event", true, caseLine{name: "virq-timer", detail: "no VIRQ_TIMER event"}},
		{"XENTEST", "XENTEST PASS evtchn-bad-port ", true, caseLine{pass: true, name: "evtchn-bad-port"}},
		{"XENTEST", "XENTEST BENCH evtchn-roundtrip 3.2 us/roundtrip", false, caseLine{}},
		{"XENTEST", "XENTEST DONE pass=1 fail=0", false, caseLine{}},
		{"XENTEST", "XENTEST PASS", false, caseLine{}},
		{"XENTEST", "xstest: PASS read", false, caseLine{}},
		{"xstest:", "xstest: PASS round-trips write/read of 5 nodes", true, caseLine{pass: true, name: "round-trips", detail: "write/read of 5 nodes"}},
		{"xstest:", "xstest: FAIL watch: no event for data/w/x within 60 s (0 events)", true, caseLine{name: "watch", detail: "no event for data/w/x within 60 s (0 events)"}},
		{"xstest:", "xstest: BENCH xenstore READ round trip: mean 1ms", false, caseLine{}},
		{"VCHAN", "VCHAN PASS session=2 role=server sent=4194304 recv=4194304 echoed=0 rings=1024/2048", true,
			caseLine{pass: true, name: "session=2", detail: "role=server sent=4194304 recv=4194304 echoed=0 rings=1024/2048"}},
		{"VCHAN", "VCHAN FAIL session=1 server data: vchan: protocol violation by peer", true,
			caseLine{name: "session=1", detail: "server data: vchan: protocol violation by peer"}},
		{"VCHAN", "VCHAN session=1 recv=67108864 crc=0x1 expect=0x1 ok=1", false, caseLine{}},
		{"VCHAN", "VCHANPEER sent=1 crc=0x1", false, caseLine{}},
		{"v4v-ping:", "v4v-ping: PASS flood of 500 messages: ring full 137 times", true, caseLine{pass: true, name: "flood", detail: "of 500 messages: ring full 137 times"}},
		{"v4v-ping:", "v4v-ping: FAIL pingpong: pong 3: v4v: closed", true, caseLine{name: "pingpong", detail: "pong 3: v4v: closed"}},
		{"v4v-ping:", "v4v-ping: BENCH pingpong 714 msgs/s 2.73 MB/s", false, caseLine{}},
		{"v4v-ping:", "v4v-ping: serving on ports 7000 7001 7002", false, caseLine{}},
	}
	for _, tt := range tests {
		got, ok := parseCaseLine(tt.tag, tt.text)
		if ok != tt.ok || got != tt.want {
			t.Errorf("parseCaseLine(%q, %q) = %+v, %v; want %+v, %v", tt.tag, tt.text, got, ok, tt.want, tt.ok)
		}
	}
}

// TestGuestCaseFormats holds each guest test program's console, as it
// prints it, to the shared case-line parser and the program's case list.
func TestGuestCaseFormats(t *testing.T) {
	tests := []struct {
		program string
		tag     string
		cases   []string
		lines   []string
	}{
		{"conformance", conformanceTag, conformanceCases(), conformanceConsole()},
		{"xstest", "xstest:", xstestCases, []string{
			"xstest: connected, home /local/domain/1",
			"xstest: PASS round-trips write/read of 5 nodes (binary, empty, 1 KiB), absolute path, directory, mkdir, rm, get perms [n1]",
			"xstest: PASS watch fired for dom0's xenstore-write of data/w/x (2 events, 120ms after signalling)",
			"xstest: PASS transaction conflicting dom0 write made the commit fail with EAGAIN; retried and committed after 2 attempts, x = \"dom0+guest\"",
			"xstest: PASS permissions writes outside our domain and reads of dom0's private node fail with EACCES (permission denied)",
			"xstest: PASS concurrent 1000 reads from 50 goroutines all got their own answers in 1.2s (800 requests/s)",
			"xstest: BENCH xenstore READ round trip: mean 1ms, min 900µs, median 1ms, p99 2ms over 500 reads",
			"xstest: PASS latency 520 READs answered",
			"xstest: PASS anomalies none tolerated by the client",
			"xstest: DONE pass=7 fail=0",
		}},
		{"vchansession", "VCHAN", sessionCases(2), []string{
			"vchan-echo: ready domid=1 sessions=2",
			"VCHAN session=1 connected role=server peer=2 path=/local/domain/1/data/vchan/2/gz1 read_ring=65536 write_ring=65536 secs=0.5",
			"VCHAN session=1 teardown refused=0 wait_ms=0 background=0 xs_gone=1 grants=0 shares=0 mappings=0 ports=0 eof=1",
			"VCHAN PASS session=1 role=server sent=67108864 recv=67108864 echoed=0 rings=65536/65536",
			"VCHAN session=2 error=setup protocol=1 msg=\"vchan: protocol violation by peer\"",
			"VCHAN PASS session=2 hostile peer refused at set-up, nothing left over: vchan: protocol violation by peer",
			"VCHAN DONE pass=2 fail=0",
		}},
		{"v4vsession", "v4v-ping:", v4vClientCases, []string{
			"v4v-ping: Argo ready in domain 2",
			"v4v-ping: PASS no-ring send to a port with no ring: v4v: no such ring (ECONNREFUSED)",
			"v4v-ping: rtt min 1ms median 1.8ms p99 13ms max 91ms",
			"v4v-ping: BENCH pingpong 714 msgs/s 2.73 MB/s",
			"v4v-ping: PASS pingpong 10000 ping-pongs of 1 B to 8 KiB, all checksummed, source 1:7000 as Xen reported it",
			"v4v-ping: PASS flood of 2000 messages: ring full 615 times, each recovered through the space notification, none lost or duplicated",
			"v4v-ping: BENCH stream size=64 5809 msgs/s 0.37 MB/s",
			"v4v-ping: BENCH stream size=8192 4037 msgs/s 33.07 MB/s",
			"v4v-ping: PASS bench every message of the 64 B and 8 KiB streams arrived",
			"v4v-ping: DONE pass=4 fail=0",
		}},
	}
	for _, tt := range tests {
		if p := caseProblems(tt.tag, tt.cases, tt.lines, rig.ReasonPoweroff); len(p) > 0 {
			t.Errorf("%s: %q", tt.program, p)
		}
		// the same console with the last case failing instead
		var failed []string
		for _, l := range tt.lines {
			if c, ok := parseCaseLine(tt.tag, l); ok && c.name == tt.cases[len(tt.cases)-1] {
				l = tt.tag + " FAIL " + c.name + ": broken"
			}
			if strings.Contains(l, tt.tag+" DONE") {
				l = fmt.Sprintf("%s DONE pass=%d fail=1", tt.tag, len(tt.cases)-1)
			}
			failed = append(failed, l)
		}
		p := caseProblems(tt.tag, tt.cases, failed, rig.ReasonPoweroff)
		if want := "case " + tt.cases[len(tt.cases)-1] + " failed: broken"; len(p) != 1 || p[0] != want {
			t.Errorf("%s with its last case failing: problems %q, want [%q]", tt.program, p, want)
		}
	}
}

func TestGuestClockOffset(t *testing.T) {
	host := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	line := func(off time.Duration) rig.Line {
		return rig.Line{Wall: host, Text: fmt.Sprintf("hello: unix-ns %d", host.Add(off).UnixNano())}
	}
	other := rig.Line{Wall: host, Text: "hello: Gozen on Xen 4.17"}
	tests := []struct {
		name    string
		lines   []rig.Line
		want    time.Duration
		wantErr string
	}{
		{"in range", []rig.Line{other, line(300 * time.Millisecond)}, 300 * time.Millisecond, ""},
		{"behind, in range", []rig.Line{line(-time.Second)}, -time.Second, ""},
		{"too far ahead", []rig.Line{line(2 * time.Second)}, 2 * time.Second, "off the host's"},
		{"line missing", []rig.Line{other}, 0, "no 'hello: unix-ns' line"},
		{"no lines", nil, 0, "no 'hello: unix-ns' line"},
		{"twice", []rig.Line{line(0), line(0)}, 0, "want one"},
		{"unreadable", []rig.Line{{Wall: host, Text: "hello: unix-ns 99999999999999999999"}}, 0, "out of range"},
	}
	for _, tt := range tests {
		got, err := guestClockOffset(tt.lines, 1500*time.Millisecond)
		switch {
		case tt.wantErr == "" && err != nil:
			t.Errorf("%s: err = %v", tt.name, err)
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("%s: err = %v, want one containing %q", tt.name, err, tt.wantErr)
		case got != tt.want:
			t.Errorf("%s: offset %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestPrimitivesRunError(t *testing.T) {
	n := len(xentestCases)
	noBench := func(lines []string) []string {
		var out []string
		for _, l := range lines {
			if !strings.Contains(l, " BENCH ") {
				out = append(out, l)
			}
		}
		return out
	}
	tests := []struct {
		name    string
		lines   []string
		reason  string
		wantErr string
	}{
		{"clean run", xentestRun(xentestCases, nil, fmt.Sprintf("pass=%d fail=0", n)), rig.ReasonPoweroff, ""},
		{"a case failed", xentestRun(xentestCases, map[string]bool{"sleep-precision": true}, fmt.Sprintf("pass=%d fail=1", n-1)), rig.ReasonPoweroff, "case sleep-precision failed"},
		{"crashed", xentestRun(xentestCases[:3], nil, ""), rig.ReasonCrash, "no figures reported"},
		{"no BENCH lines", noBench(xentestRun(xentestCases, nil, fmt.Sprintf("pass=%d fail=0", n))), rig.ReasonPoweroff, "no BENCH lines"},
	}
	for _, tt := range tests {
		err := primitivesRunError(tt.lines, tt.reason)
		switch {
		case tt.wantErr == "" && err != nil:
			t.Errorf("%s: %v", tt.name, err)
		case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
			t.Errorf("%s: err = %v, want one containing %q", tt.name, err, tt.wantErr)
		}
	}
}
