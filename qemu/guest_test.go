// Package qemu holds Gozen's guest tests: tier A boots images as Xen's PVH
// dom0, tier B starts them with xl create from a Linux dom0, all under QEMU.
// They skip loudly when the TamaGo compiler is missing or GOZEN_GUEST=0.
package qemu

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gozen-dev/gozen/qemu/rig"
)

// buildGuest builds an app for a guest test, or skips the test with a loud
// reason when guest tests cannot run here.
func buildGuest(t testing.TB, app string) string {
	t.Helper()
	if os.Getenv("GOZEN_GUEST") == "0" {
		t.Skip("SKIP guest test: GOZEN_GUEST=0")
	}
	elf, err := rig.BuildApp(app)
	if errors.Is(err, rig.ErrNoCompiler) {
		t.Skipf("SKIP guest test (no TamaGo compiler): %v", err)
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
