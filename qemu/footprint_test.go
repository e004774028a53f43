package qemu

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gozen-dev/gozen/appimage"
	"github.com/gozen-dev/gozen/qemu/rig"
)

// TestTierBFootprint boots apps/hello, trimmed of Go's FIPS entropy buffer
// by make (gozen-image trim), as xl-created domUs: with the memory its
// gozen.json declares (16 MiB), at its floor (appimage.MemoryFloor:
// boot.Floor of its loaded end, one aligned heap arena and the stack
// area), and one MiB under the floor, where it must stop at entry with
// boot's too-small message and crash cleanly.
func TestTierBFootprint(t *testing.T) {
	hello := buildGuest(t, "hello")
	m, err := appimage.LoadManifest(filepath.Join("..", "apps", "hello", appimage.ManifestFile))
	if err != nil {
		t.Fatal(err)
	}
	if m.Memory > 16 {
		t.Errorf("FAIL apps/hello declares memory = %d, want at most 16", m.Memory)
	}
	floor, err := appimage.MemoryFloor(hello)
	if err != nil {
		t.Fatal(err)
	}
	if floor > m.Memory {
		t.Fatalf("FAIL hello's floor is %d MiB, above the %d it declares (was it trimmed?)", floor, m.Memory)
	}
	t.Logf("hello declares %d MiB; its floor is %d MiB", m.Memory, floor)
	guests := []rig.Guest{
		{Name: "declared", ELF: hello, Memory: m.Memory},
		{Name: "floor", ELF: hello, Memory: floor},
		{Name: "small", ELF: hello, Memory: floor - 1, ExpectCrash: true, Timeout: 30 * time.Second},
	}
	run, err := rig.BootDomUs(context.Background(), guests, "", rig.Options{Timeout: 6 * time.Minute})
	saveSerial(t, run)
	if err != nil {
		t.Fatalf("FAIL tier B run: %v\n%s", err, run.SerialText())
	}
	g := run.Guests["declared"]
	if g == nil {
		t.Fatalf("FAIL hello never started\n%s", run.SerialText())
	}
	checkHello(t, g, "domU")
	if want := fmt.Sprintf("hello: RAM %d MiB,", m.Memory); !g.Has(want) {
		t.Errorf("FAIL hello did not report %q:\n%s", want, g.Text())
	} else {
		t.Logf("PASS hello ran with memory = %d", m.Memory)
	}
	if g := run.Guests["floor"]; g == nil || g.Reason != rig.ReasonPoweroff || !g.Has("slept") {
		t.Errorf("FAIL hello did not run at its memory floor of %d MiB: %+v", floor, g)
	} else {
		t.Logf("PASS hello runs with memory = %d, its floor", floor)
	}
	var small string
	for _, l := range run.Serial {
		if strings.Contains(l.Text, "gozen: domain memory too small") {
			small = l.Text
		}
	}
	if small == "" {
		t.Errorf("FAIL a %d MiB domain did not get the too-small message", floor-1)
	} else if g := run.Guests["small"]; g == nil || g.Reason != rig.ReasonCrash {
		t.Errorf("FAIL the too-small domain did not crash cleanly: %+v", g)
	} else {
		t.Logf("PASS a %d MiB domain printed %q and crashed", floor-1, small)
	}
}
