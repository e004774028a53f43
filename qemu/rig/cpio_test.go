package rig

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

func TestWriteCPIO(t *testing.T) {
	var buf bytes.Buffer
	files := []CPIOFile{
		{Name: "gozen/run.sh", Mode: 0o755, Data: []byte("#!/bin/sh\necho hi\n")},
		{Name: "gozen/a/b.elf", Mode: 0o644, Data: []byte{1, 2, 3}},
	}
	if err := WriteCPIO(&buf, files); err != nil {
		t.Fatal(err)
	}
	if !bytes.HasPrefix(buf.Bytes(), []byte("070701")) || buf.Len()%4 != 0 {
		t.Fatalf("not a padded newc archive: %q...", buf.Bytes()[:16])
	}
	if _, err := exec.LookPath("cpio"); err != nil {
		t.Skip("cpio not installed: only the format header was checked")
	}
	dir := t.TempDir()
	cmd := exec.Command("cpio", "-idm", "--quiet")
	cmd.Dir = dir
	cmd.Stdin = &buf
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("cpio -i: %v: %s", err, out)
	}
	for _, f := range files {
		got, err := os.ReadFile(filepath.Join(dir, f.Name))
		if err != nil || !bytes.Equal(got, f.Data) {
			t.Errorf("%s: %q, %v", f.Name, got, err)
		}
		st, _ := os.Stat(filepath.Join(dir, f.Name))
		if st != nil && st.Mode().Perm() != os.FileMode(f.Mode) {
			t.Errorf("%s: mode %v, want %o", f.Name, st.Mode().Perm(), f.Mode)
		}
	}
}
