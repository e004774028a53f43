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
		text string
		ok   bool
		want caseLine
	}{
		{"XENTEST PASS gnttab-copy GNTTABOP_copy moved the data", true, caseLine{pass: true, name: "gnttab-copy", detail: "GNTTABOP_copy moved the data"}},
		{"(d3) XENTEST FAIL virq-timer: no VIRQ_TIMER event", true, caseLine{name: "virq-timer", detail: "no VIRQ_TIMER event"}},
		{"XENTEST PASS evtchn-bad-port ", true, caseLine{pass: true, name: "evtchn-bad-port"}},
		{"XENTEST BENCH evtchn-roundtrip 3.2 us/roundtrip", false, caseLine{}},
		{"XENTEST DONE pass=1 fail=0", false, caseLine{}},
		{"XENTEST PASS", false, caseLine{}},
		{"xstest: PASS read", false, caseLine{}},
	}
	for _, tt := range tests {
		got, ok := parseCaseLine("XENTEST", tt.text)
		if ok != tt.ok || got != tt.want {
			t.Errorf("parseCaseLine(%q) = %+v, %v; want %+v, %v", tt.text, got, ok, tt.want, tt.ok)
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
