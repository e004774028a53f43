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
