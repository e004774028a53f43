package qemu

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gozen-dev/gozen/qemu/rig"
)

// TestWhyNoGuest checks the reason every guest test skips with, in a
// made-up home: each missing piece (compiler, rig cache files, QEMU, the
// vchan peer's gcc and headers) is named, and nothing is when all are there.
func TestWhyNoGuest(t *testing.T) {
	tests := []struct {
		name     string
		guest    string // GOZEN_GUEST
		compiler bool
		rigFiles []string
		tools    []string // executables on PATH
		headers  bool     // libxen-dev unpacked
		extra    needs
		want     string // substring of the reason; "" means no skip
	}{
		{name: "GOZEN_GUEST=0 wins", guest: "0", compiler: true, rigFiles: rigFiles, tools: []string{"qemu-system-x86_64", "gcc"}, headers: true, want: "GOZEN_GUEST=0"},
		{name: "empty home", want: "TamaGo compiler " + rig.TamaGoVersion + " not installed"},
		{name: "empty home, peer test", extra: needPeer, want: "TamaGo compiler " + rig.TamaGoVersion + " not installed"},
		{name: "compiler, no rig", compiler: true, tools: []string{"qemu-system-x86_64"}, want: "rig not set up: kernel-version, xen, dom0.cpio.gz, debs.done missing"},
		{name: "compiler, half a rig", compiler: true, rigFiles: []string{"kernel-version", "xen"}, tools: []string{"qemu-system-x86_64"}, want: "dom0.cpio.gz, debs.done missing"},
		{name: "no QEMU", compiler: true, rigFiles: rigFiles, want: "qemu-system-x86_64 is not installed"},
		{name: "ready", compiler: true, rigFiles: rigFiles, tools: []string{"qemu-system-x86_64"}},
		{name: "peer without headers", compiler: true, rigFiles: rigFiles, tools: []string{"qemu-system-x86_64", "gcc"}, extra: needPeer, want: "libxen-dev not unpacked"},
		{name: "peer without gcc", compiler: true, rigFiles: rigFiles, tools: []string{"qemu-system-x86_64"}, headers: true, extra: needPeer, want: "needs gcc"},
		{name: "peer ready", compiler: true, rigFiles: rigFiles, tools: []string{"qemu-system-x86_64", "gcc"}, headers: true, extra: needPeer},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			home := t.TempDir()
			write := func(path string, mode os.FileMode) {
				t.Helper()
				if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(path, []byte("#!/bin/sh\n"), mode); err != nil {
					t.Fatal(err)
				}
			}
			t.Setenv("HOME", home)
			t.Setenv("XDG_CACHE_HOME", filepath.Join(home, ".cache"))
			t.Setenv("GOZEN_RIG_CACHE", filepath.Join(home, "rig"))
			t.Setenv("PATH", filepath.Join(home, "bin"))
			t.Setenv("GOZEN_GUEST", tt.guest)
			if tt.compiler {
				write(filepath.Join(home, ".cache", "tamago-go", rig.TamaGoVersion, "bin", "go"), 0o755)
			}
			for _, f := range tt.rigFiles {
				write(filepath.Join(home, "rig", f), 0o644)
			}
			for _, tool := range tt.tools {
				write(filepath.Join(home, "bin", tool), 0o755)
			}
			if tt.headers {
				write(filepath.Join(home, "rig", "x", "usr", "include", "libxenvchan.h"), 0o644)
			}
			got := whyNoGuest(tt.extra)
			switch {
			case tt.want == "" && got != "":
				t.Errorf("whyNoGuest = %q, want no reason", got)
			case tt.want != "" && !strings.Contains(got, tt.want):
				t.Errorf("whyNoGuest = %q, want a reason containing %q", got, tt.want)
			}
		})
	}
}
