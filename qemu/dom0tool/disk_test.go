//go:build linux

package main

import (
	"bytes"
	"fmt"
	"hash/crc32"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/filesystem/fat32"
)

// dosfstool finds a dosfstools binary in the rig cache (Debian's, as
// tier B uses) or PATH; "" if none.
func dosfstool(name string) string {
	var dirs []string
	if c := os.Getenv("GOZEN_RIG_CACHE"); c != "" {
		dirs = append(dirs, c)
	}
	if c := os.Getenv("XDG_CACHE_HOME"); c != "" {
		dirs = append(dirs, filepath.Join(c, "gozen", "rig"))
	}
	if h, err := os.UserHomeDir(); err == nil {
		dirs = append(dirs, filepath.Join(h, ".cache", "gozen", "rig"))
	}
	for _, d := range dirs {
		if p := filepath.Join(d, "x", "sbin", name); fileExists(p) {
			return p
		}
	}
	p, _ := exec.LookPath(name)
	return p
}

func fileExists(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.Mode().IsRegular()
}

// fatImage makes a 64 MiB FAT32 image as tier B's dom0 does (mkfs.fat
// -F 32) or, without mkfs.fat, with go-diskfs.
func fatImage(t *testing.T) string {
	t.Helper()
	img := filepath.Join(t.TempDir(), "fat.img")
	if err := os.WriteFile(img, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(img, 64<<20); err != nil {
		t.Fatal(err)
	}
	if mkfs := dosfstool("mkfs.fat"); mkfs != "" {
		cmd := exec.Command(mkfs, "-F", "32", "-n", "GOZEN", img)
		cmd.Env = append(os.Environ(), "LANG=C", "LC_ALL=C")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", mkfs, err, out)
		}
		return img
	}
	f, err := os.OpenFile(img, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := fat32.Create(file.New(f, false), 64<<20, 0, 512, "GOZEN", false); err != nil {
		t.Fatal(err)
	}
	return img
}

// TestFAT runs fatput, fatcat and fatcrc as tier B does and checks their
// output lines and, with fsck.fat, that fatput leaves the image clean.
func TestFAT(t *testing.T) {
	img := fatImage(t)
	if err := fatPut([]string{img, "config.txt", "greeting=hello from dom0"}); err != nil {
		t.Fatal(err)
	}
	if err := fatPut([]string{img, "/notes.txt", "one\ntwo"}); err != nil {
		t.Fatal(err)
	}
	if err := fatPut([]string{img, "no/such/dir.txt", "x"}); err == nil {
		t.Error("fatput into a missing directory worked")
	}
	if err := fatPut([]string{img, "x"}); err == nil {
		t.Error("fatput with two arguments worked")
	}
	crc := crc32.ChecksumIEEE([]byte("greeting=hello from dom0\n"))
	for _, tc := range []struct {
		run  func(*bytes.Buffer) error
		want string
	}{
		{func(w *bytes.Buffer) error { return fatCat(w, []string{img, "config.txt"}) }, "GOZEN-FAT config.txt| greeting=hello from dom0\n"},
		{func(w *bytes.Buffer) error { return fatCat(w, []string{img, "notes.txt"}) }, "GOZEN-FAT notes.txt| one\nGOZEN-FAT notes.txt| two\n"},
		{func(w *bytes.Buffer) error { return fatCat(w, []string{img, "nope.txt"}) }, `^GOZEN-FAT FAIL nope.txt: .*file does not exist\n$`},
		{func(w *bytes.Buffer) error { return fatCRC(w, []string{img, "config.txt"}) }, fmt.Sprintf("GOZEN-FATCRC config.txt 25 %08x\n", crc)},
		{func(w *bytes.Buffer) error { return fatCRC(w, []string{img, "d/nope.bin"}) }, `^GOZEN-FATCRC FAIL d/nope.bin: .+\n$`},
	} {
		var out bytes.Buffer
		if err := tc.run(&out); err != nil {
			t.Errorf("%q: %v", tc.want, err)
		}
		if strings.HasPrefix(tc.want, "^") {
			if !regexp.MustCompile(tc.want).MatchString(out.String()) {
				t.Errorf("output %q, want %s", out.String(), tc.want)
			}
		} else if out.String() != tc.want {
			t.Errorf("output %q, want %q", out.String(), tc.want)
		}
	}
	fsck := dosfstool("fsck.fat")
	if fsck == "" {
		t.Skip("no fsck.fat in the rig cache (~/.cache/gozen/rig/x/sbin) or PATH: the image is not checked with it")
	}
	cmd := exec.Command(fsck, "-n", img)
	cmd.Env = append(os.Environ(), "LANG=C", "LC_ALL=C")
	out, err := cmd.CombinedOutput()
	if err != nil || strings.Count(strings.TrimSpace(string(out)), "\n") != 1 {
		t.Errorf("%s -n: %v\n%s", fsck, err, out)
	}
}
