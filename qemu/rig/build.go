package rig

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
)

// TamaGoVersion is the TamaGo compiler paired with the pinned tamago module.
const TamaGoVersion = "tamago-go1.26.0"

// GuestTags and GuestLDFlags are the build settings of every Gozen image
// (see boot/layout_tamago.go for the memory layout they select).
const (
	GuestTags    = "linkcpuinit,linkramstart"
	GuestLDFlags = "-T 0x110000 -R 0x1000"
)

// ErrNoCompiler means the TamaGo compiler is not installed in the cache.
var ErrNoCompiler = errors.New("TamaGo compiler " + TamaGoVersion + " not installed")

// CompilerPath returns the TamaGo go binary in the user cache, where
// `go tool tamago` looks for it, or ErrNoCompiler with what to do.
func CompilerPath() (string, error) {
	cache := os.Getenv("XDG_CACHE_HOME")
	if cache == "" {
		home, _ := os.UserHomeDir()
		cache = filepath.Join(home, ".cache")
	}
	p := filepath.Join(cache, "tamago-go", TamaGoVersion, "bin", "go")
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("%w at %s: run make where GitHub is reachable "+
			"(it builds %s there through go tool tamago), or put a built %s tree into %s",
			ErrNoCompiler, p, TamaGoVersion, TamaGoVersion, filepath.Dir(filepath.Dir(p)))
	}
	return p, nil
}

var buildMu sync.Mutex

// BuildApp builds ./apps/<app> (or any package path relative to the module
// root) into build/<name>.elf and returns the ELF's path.
func BuildApp(pkg string) (string, error) {
	buildMu.Lock()
	defer buildMu.Unlock()
	if _, err := CompilerPath(); err != nil {
		return "", err
	}
	root := repoRoot()
	if !strings.Contains(pkg, "/") {
		pkg = "./apps/" + pkg
	}
	out := filepath.Join(root, "build", filepath.Base(pkg)+".elf")
	cmd := exec.Command("make", "-s", "-C", root, "elf", "PKG="+pkg, "OUT="+out)
	var b bytes.Buffer
	cmd.Stdout = &b
	cmd.Stderr = &b
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("building %s: %v\n%s", pkg, err, b.String())
	}
	return out, nil
}

// buildDom0Tool builds qemu/dom0tool as a static Linux binary for dom0.
// BuildDom0Tool builds qemu/dom0tool, the static Linux helper of dom0
// (and of the Linux reference guests of the benchmarks), and returns it.
func BuildDom0Tool() ([]byte, error) { return buildDom0Tool() }

func buildDom0Tool() ([]byte, error) { return BuildLinuxTool("dom0tool", "./qemu/dom0tool") }

// BuildLinuxTool builds the package pkg as a static linux/amd64 program
// build/name and returns it: for dom0 or a Linux domU's initramfs.
func BuildLinuxTool(name, pkg string) ([]byte, error) {
	buildMu.Lock()
	defer buildMu.Unlock()
	root := repoRoot()
	out := filepath.Join(root, "build", name)
	cmd := exec.Command("go", "build", "-o", out, pkg)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64")
	if b, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("building %s: %v\n%s", name, err, b)
	}
	return os.ReadFile(out)
}

// ArgoHypervisor builds (once, cached) a Xen hypervisor with CONFIG_ARGO
// from Debian's Xen source package (qemu/argo-xen.sh) and returns its path.
// Boot it with ArgoXenArgs.
func ArgoHypervisor() (string, error) {
	if err := Setup(); err != nil {
		return "", err
	}
	buildMu.Lock()
	defer buildMu.Unlock()
	cmd := exec.Command(filepath.Join(repoRoot(), "qemu", "argo-xen.sh"))
	cmd.Env = append(os.Environ(), "GOZEN_RIG_CACHE="+Cache())
	var out, errb bytes.Buffer
	cmd.Stdout = &out
	cmd.Stderr = &errb
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("building the Argo hypervisor (qemu/argo-xen.sh): %v\n%s", err, errb.String())
	}
	p := strings.TrimSpace(out.String())
	if i := strings.LastIndexByte(p, '\n'); i >= 0 {
		p = p[i+1:]
	}
	if _, err := os.Stat(p); err != nil {
		return "", fmt.Errorf("argo-xen.sh printed %q: %w", p, err)
	}
	return p, nil
}

// ArgoXenArgs enable Argo on the Xen command line, allowing rings whose
// partner is any domain.
const ArgoXenArgs = "argo=1,mac-permissive=1"
