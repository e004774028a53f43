package qemu

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/gozen-dev/gozen/qemu/rig"
)

func TestTierBFootprintProbe(t *testing.T) {
	hello := buildGuest(t, "hello")
	var guests []rig.Guest
	for _, m := range []int{16, 15, 14, 13, 12, 11, 10, 9, 8} {
		guests = append(guests, rig.Guest{Name: fmt.Sprintf("h%d", m), ELF: hello, Memory: m, ExpectCrash: true, Timeout: 40 * time.Second})
	}
	run, err := rig.BootDomUs(context.Background(), guests, "", rig.Options{Timeout: 9 * time.Minute})
	saveSerial(t, run)
	if err != nil {
		t.Fatalf("FAIL tier B run: %v\n%s", err, run.SerialText())
	}
	for _, g := range guests {
		r := run.Guests[g.Name]
		if r == nil {
			t.Logf("%s: never started", g.Name)
			continue
		}
		t.Logf("%s: reason %s\n%s", g.Name, r.Reason, r.Text())
	}
}
