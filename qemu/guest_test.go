// Package qemu holds Gozen's guest tests: tier A boots images as Xen's PVH
// dom0, tier B starts them with xl create from a Linux dom0, all under QEMU.
// Every guest test starts with [needGuest] (or [buildGuest], which calls
// it): it skips loudly, with the reason, when GOZEN_GUEST=0, the TamaGo
// compiler is missing or the rig is not set up (run `make setup` or
// qemu/setup.sh).
package qemu

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/gozen-dev/gozen/qemu/rig"
)

// skipPrefix starts every guest test's skip message; .ci/run's summary
// greps for it.
const skipPrefix = "SKIP guest test: "

// needs are what a guest test needs beyond the TamaGo compiler and the
// rig, which every guest test needs.
type needs uint

const (
	// needPeer is the dom0 libxenvchan peer (qemu/vchanpeer): gcc and the
	// libxen-dev headers and libraries unpacked in the rig cache.
	needPeer needs = 1 << iota
)

// rigFiles are what qemu/setup.sh leaves in the rig cache, as paths
// relative to it.
var rigFiles = []string{"kernel-version", "xen", "dom0.cpio.gz", "debs.done"}

// whyNoGuest returns why guest tests cannot run here, or "" if they can:
// GOZEN_GUEST=0, no TamaGo compiler, the rig not set up (cache files or
// QEMU missing), or a missing extra need.
func whyNoGuest(extra needs) string {
	if os.Getenv("GOZEN_GUEST") == "0" {
		return "GOZEN_GUEST=0"
	}
	if _, err := rig.CompilerPath(); err != nil {
		return err.Error()
	}
	var missing []string
	for _, f := range rigFiles {
		if _, err := os.Stat(filepath.Join(rig.Cache(), f)); err != nil {
			missing = append(missing, f)
		}
	}
	if len(missing) > 0 {
		return fmt.Sprintf("rig not set up: %s missing in %s (run `make setup` or qemu/setup.sh)",
			strings.Join(missing, ", "), rig.Cache())
	}
	if _, err := exec.LookPath("qemu-system-x86_64"); err != nil {
		return "rig not set up: qemu-system-x86_64 is not installed (run `make setup` or qemu/setup.sh)"
	}
	if extra&needPeer != 0 {
		if _, err := exec.LookPath("gcc"); err != nil {
			return "the dom0 vchan peer needs gcc, which is not installed"
		}
		h := filepath.Join(rig.Cache(), "x", "usr", "include", "libxenvchan.h")
		if _, err := os.Stat(h); err != nil {
			return fmt.Sprintf("rig not set up: libxen-dev not unpacked (no %s; run `make setup` or qemu/setup.sh)", h)
		}
	}
	return ""
}

// needGuest skips the test, loudly and with the reason, unless guest tests
// can run here and have the extra needs.
func needGuest(t testing.TB, extra needs) {
	t.Helper()
	if why := whyNoGuest(extra); why != "" {
		t.Skip(skipPrefix + why)
	}
}

// buildGuest builds an app for a guest test, or skips the test with a loud
// reason when guest tests cannot run here (see needGuest).
func buildGuest(t testing.TB, app string) string {
	t.Helper()
	needGuest(t, 0)
	elf, err := rig.BuildApp(app)
	if errors.Is(err, rig.ErrNoCompiler) {
		t.Skip(skipPrefix + err.Error())
	}
	if err != nil {
		t.Fatal(err)
	}
	return elf
}

// saveSerial keeps a rig run's whole serial console in build/<test>.serial.log
// for reading after a failure.
func saveSerial(t testing.TB, run *rig.Run) {
	if run == nil {
		return
	}
	name := filepath.Join("..", "build", strings.ReplaceAll(t.Name(), "/", "_")+".serial.log")
	os.MkdirAll(filepath.Dir(name), 0o755)
	if err := os.WriteFile(name, []byte(run.SerialText()), 0o644); err == nil {
		t.Logf("serial console saved in %s", name)
	}
}

// A guest test program reports each case on one console line, in one
// format shared by all of them:
//
//	TAG PASS name detail...
//	TAG FAIL name: reason...
//	TAG DONE pass=N fail=M
//
// where TAG names the program and may follow other text on the line
// (Xen's "(d1) " prefix, say), and name is one word. The programs in
// qemu/guests and their tags:
//
//	xentest       XENTEST     the case names in xentestCases
//	xstest        xstest:     round-trips, watch, ... (xenstore_test.go)
//	vchansession  VCHAN       session=1, session=2, ... one per session
//	v4vsession    v4v-ping:   no-ring, pingpong, flood, bench (client)
//	stress        STRESS      one PASS line whose name is its first count
//	conformance   CONFORMANCE suite/Case for each case of evtchntest and gnttabtest, then leftovers
//
// checkCases (or caseProblems) holds a run to its exact list of cases.

// guestLines returns the text of a guest's console lines.
func guestLines(g *rig.GuestResult) []string {
	lines := make([]string, len(g.Lines))
	for i, l := range g.Lines {
		lines[i] = l.Text
	}
	return lines
}

// caseLine is one parsed PASS or FAIL line.
type caseLine struct {
	pass   bool
	name   string
	detail string
}

// parseCaseLine parses text as a PASS or FAIL line of the given tag.
func parseCaseLine(tag, text string) (caseLine, bool) {
	i := strings.Index(text, tag+" ")
	if i < 0 {
		return caseLine{}, false
	}
	verdict, rest, _ := strings.Cut(text[i+len(tag)+1:], " ")
	if verdict != "PASS" && verdict != "FAIL" {
		return caseLine{}, false
	}
	name, detail, _ := strings.Cut(strings.TrimSpace(rest), " ")
	name = strings.TrimSuffix(name, ":")
	if name == "" {
		return caseLine{}, false
	}
	return caseLine{pass: verdict == "PASS", name: name, detail: strings.TrimSpace(detail)}, true
}

// checkCases turns a guest test program's case lines into test results:
// it logs every PASS line and fails the test for every problem
// caseProblems finds in the lines against the exact list of cases want.
func checkCases(t *testing.T, g *rig.GuestResult, tag string, want []string) {
	t.Helper()
	lines := guestLines(g)
	for _, l := range lines {
		if c, ok := parseCaseLine(tag, l); ok && c.pass {
			t.Logf("PASS %s %s", c.name, c.detail)
		}
	}
	problems := caseProblems(tag, want, lines, g.Reason)
	for _, p := range problems {
		t.Errorf("FAIL %s %s", tag, p)
	}
	if len(problems) > 0 {
		t.Logf("%s output:\n%s", tag, g.Text())
	}
}

// caseProblems checks a guest test program's lines against the exact list
// of cases it must run (see parseCaseLine for the format): every case in
// want must PASS exactly once, no case may FAIL, no other case may appear,
// the TAG DONE line must be there with counts matching the case lines, and
// the guest must have powered off. It returns each problem found.
func caseProblems(tag string, want []string, lines []string, reason string) []string {
	var problems []string
	seen := map[string]int{}
	passed, failed := 0, 0
	done := ""
	for _, l := range lines {
		if c, ok := parseCaseLine(tag, l); ok {
			seen[c.name]++
			if c.pass {
				passed++
			} else {
				failed++
				problems = append(problems, fmt.Sprintf("case %s failed: %s", c.name, c.detail))
			}
			continue
		}
		if i := strings.Index(l, tag+" DONE"); i >= 0 && done == "" {
			done = strings.TrimSpace(l[i+len(tag)+len(" DONE"):])
		}
	}
	expected := map[string]bool{}
	for _, name := range want {
		expected[name] = true
		switch n := seen[name]; {
		case n == 0:
			problems = append(problems, fmt.Sprintf("case %s did not report", name))
		case n > 1:
			problems = append(problems, fmt.Sprintf("case %s reported %d times", name, n))
		}
	}
	var extra []string
	for name := range seen {
		if !expected[name] {
			extra = append(extra, name)
		}
	}
	sort.Strings(extra)
	for _, name := range extra {
		problems = append(problems, fmt.Sprintf("unexpected case %s (not in the list of %d)", name, len(want)))
	}
	switch {
	case done == "":
		problems = append(problems, fmt.Sprintf("no %s DONE line: the program did not finish", tag))
	case done != fmt.Sprintf("pass=%d fail=%d", passed, failed):
		problems = append(problems, fmt.Sprintf("%s DONE says %q, the case lines pass=%d fail=%d", tag, done, passed, failed))
	}
	if reason != rig.ReasonPoweroff {
		problems = append(problems, fmt.Sprintf("ended with %s, want %s", reason, rig.ReasonPoweroff))
	}
	return problems
}
