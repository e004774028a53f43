package rig

import (
	"bytes"
	"compress/gzip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestLinuxInitArchive unpacks the archive added to a Linux guest with
// Init: its /init runs the prelude, the script and poweroff, and it
// carries the modules and the vchan peer.
func TestLinuxInitArchive(t *testing.T) {
	if _, err := kernelVersion(); err != nil {
		t.Skipf("rig not set up: %v", err)
	}
	if _, err := exec.LookPath("cpio"); err != nil {
		t.Skip("cpio not installed")
	}
	gz, err := linuxInitArchive("echo GOZEN-SCRIPT", nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(gz))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cmd := exec.Command("cpio", "-idm", "--quiet")
	cmd.Dir = dir
	cmd.Stdin = zr
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cpio -i: %v: %s", err, out)
	}
	init, err := os.ReadFile(filepath.Join(dir, "init"))
	if err != nil {
		t.Fatal(err)
	}
	s := string(init)
	ins, scr, off := strings.Index(s, "insmod"), strings.Index(s, "echo GOZEN-SCRIPT"), strings.Index(s, "poweroff -f")
	if !strings.HasPrefix(s, "#!/bin/sh\n") || ins < 0 || scr < ins || off < scr {
		t.Errorf("init does not load the modules, run the script, then power off:\n%s", s)
	}
	for _, m := range linuxDomUModules {
		if !strings.Contains(s, m) {
			t.Errorf("init does not load %s", m)
		}
		if st, err := os.Stat(filepath.Join(dir, "lib", "modules", m+".ko")); err != nil || st.Size() == 0 {
			t.Errorf("module %s: %v", m, err)
		}
	}
	if st, err := os.Stat(filepath.Join(dir, "gozen", "vchanpeer")); err != nil || st.Mode().Perm() != 0o755 {
		t.Errorf("gozen/vchanpeer: %v %v", st, err)
	}
}
