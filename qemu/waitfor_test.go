package qemu

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gozen-dev/gozen/qemu/rig"
)

// waitTimeoutPrefix starts the line qemu/dom0/wait-for prints when a wait
// runs out of time.
const waitTimeoutPrefix = "GOZEN-WAIT-TIMEOUT"

// checkWaits fails the test for every wait of the dom0 script that timed
// out, so the first thing that did not happen is named.
func checkWaits(t testing.TB, run *rig.Run) {
	t.Helper()
	for _, l := range run.Serial {
		if strings.HasPrefix(l.Text, waitTimeoutPrefix) {
			t.Errorf("FAIL dom0 gave up waiting: %s", l.Text)
		}
	}
}

// fakeDom0 is a directory standing in for dom0 on the host: console logs,
// and xl and xenstore-read commands answering from files.
func fakeDom0(t *testing.T) (dir string, env []string) {
	t.Helper()
	dir = t.TempDir()
	bin := filepath.Join(dir, "bin")
	os.MkdirAll(bin, 0o755)
	// xl domid NAME / xl list NAME: domain NAME exists while dom-NAME does
	xl := `#!/bin/sh
[ -f "` + dir + `/dom-$2" ] || exit 1
[ "$1" = domid ] && cat "` + dir + `/dom-$2"
exit 0
`
	xsRead := `#!/bin/sh
f="` + dir + `/xs$(echo "$1" | tr / _)"
[ -f "$f" ] && cat "$f"
`
	for name, text := range map[string]string{"xl": xl, "xenstore-read": xsRead} {
		if err := os.WriteFile(filepath.Join(bin, name), []byte(text), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir, append(os.Environ(), "PATH="+bin+":"+os.Getenv("PATH"), "GOZEN_CONSOLE_DIR="+dir)
}

// waitForShells are the shells TestWaitFor runs qemu/dom0/wait-for with:
// the host's sh, and dom0's own busybox sh when the rig cache has it.
func waitForShells() map[string][]string {
	shells := map[string][]string{}
	if sh, err := exec.LookPath("sh"); err == nil {
		shells["sh"] = []string{sh}
	}
	bb := filepath.Join(rig.Cache(), "x", "bin", "busybox")
	if exec.Command(bb, "true").Run() == nil {
		shells["busybox"] = []string{bb, "sh"}
	}
	return shells
}

// waitForCase is one run of wait-for against a fake dom0.
type waitForCase struct {
	name   string
	before map[string]string // files present at the start
	later  map[string]string // files written 0.3 s in
	args   []string
	rc     int
	stdout string
	stderr string // a substring of stderr
}

// TestWaitFor runs qemu/dom0/wait-for on the host against a fake dom0:
// each kind of wait succeeds when its condition holds or comes to hold,
// and a timeout prints the GOZEN-WAIT-TIMEOUT line and exits 1.
func TestWaitFor(t *testing.T) {
	shells := waitForShells()
	if len(shells) == 0 {
		t.Skip("no sh on this host")
	}
	tests := []waitForCase{
		{"log present", map[string]string{"guest-g.log": "boot\nvchan-echo: ready domid=3\n"}, nil,
			[]string{"log", "g", "vchan-echo: ready", "5"}, 0, "", ""},
		{"log appears", nil, map[string]string{"guest-g.log": "v4v-ping: serving on ports 7000\n"},
			[]string{"log", "g", "v4v-ping: serving", "5"}, 0, "", ""},
		{"log anchored pattern", map[string]string{"guest-g.log": "gozen> echo hi\nhi\n"}, nil,
			[]string{"log", "g", "^hi", "5"}, 0, "", ""},
		{"log count reached", map[string]string{"guest-g.log": "ready\nx\nready\n"}, nil,
			[]string{"log", "g", "ready", "5", "2"}, 0, "", ""},
		{"log count short", map[string]string{"guest-g.log": "ready\n"}, nil,
			[]string{"log", "g", "ready", "1", "2"}, 1, "", "GOZEN-WAIT-TIMEOUT log g 'ready' count=2 after 1s"},
		{"log missing", nil, nil,
			[]string{"log", "nolog", "ready", "1"}, 1, "", "GOZEN-WAIT-TIMEOUT log nolog 'ready' count=1 after 1s"},
		{"domid present", map[string]string{"dom-vga": "4\n"}, nil,
			[]string{"domid", "vga", "5"}, 0, "4\n", ""},
		{"domid appears", nil, map[string]string{"dom-vgb": "5\n"},
			[]string{"domid", "vgb", "5"}, 0, "5\n", ""},
		{"domid never", nil, nil,
			[]string{"domid", "vgc", "1"}, 1, "", "GOZEN-WAIT-TIMEOUT domid vgc after 1s"},
		{"gone already", nil, nil, []string{"gone", "life", "5"}, 0, "", ""},
		{"gone never", map[string]string{"dom-life": "1\n"}, nil,
			[]string{"gone", "life", "1"}, 1, "", "GOZEN-WAIT-TIMEOUT gone life after 1s"},
		{"xs value", map[string]string{"xs_d_ready": "tx"}, nil,
			[]string{"xs", "/d/ready", "tx", "5"}, 0, "", ""},
		{"xs value later", map[string]string{"xs_d_ready": "watch"}, map[string]string{"xs_d_ready": "tx"},
			[]string{"xs", "/d/ready", "tx", "5"}, 0, "", ""},
		{"unknown kind", nil, nil, []string{"soon", "x"}, 2, "", "GOZEN-WAIT-USAGE"},
		{"bad seconds", nil, nil, []string{"domid", "x", "ten"}, 2, "", "GOZEN-WAIT-USAGE"},
		{"too few words", nil, nil, []string{"log", "g"}, 2, "", "GOZEN-WAIT-USAGE"},
	}
	script, err := filepath.Abs(filepath.Join("dom0", "wait-for"))
	if err != nil {
		t.Fatal(err)
	}
	for shName, sh := range shells {
		for _, tt := range tests {
			t.Run(shName+"/"+tt.name, func(t *testing.T) {
				t.Parallel()
				runWaitFor(t, sh, script, tt)
			})
		}
	}
}

// runWaitFor runs the script with shell sh in a fake dom0 and checks how
// it ended.
func runWaitFor(t *testing.T, sh []string, script string, tt waitForCase) {
	dir, env := fakeDom0(t)
	write := func(files map[string]string) {
		for name, text := range files {
			if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
				t.Error(err)
			}
		}
	}
	write(tt.before)
	cmd := exec.Command(sh[0], append(append(sh[1:len(sh):len(sh)], script), tt.args...)...)
	cmd.Env = env
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	if tt.later != nil {
		time.Sleep(300 * time.Millisecond)
		write(tt.later)
	}
	err := cmd.Wait()
	rc := 0
	if ee, ok := err.(*exec.ExitError); ok {
		rc = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	if rc != tt.rc || stdout.String() != tt.stdout || !strings.Contains(stderr.String(), tt.stderr) {
		t.Errorf("wait-for %q: exit %d, stdout %q, stderr %q; want exit %d, stdout %q, stderr containing %q",
			tt.args, rc, stdout.String(), stderr.String(), tt.rc, tt.stdout, tt.stderr)
	}
}
