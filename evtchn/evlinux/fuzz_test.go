//go:build linux

package evlinux

import (
	"testing"
)

// FuzzDeliver feeds arbitrary bytes as the ports read from the device:
// only bound ports count notifications, never a panic.
func FuzzDeliver(f *testing.F) {
	f.Add([]byte{1, 0, 0, 0, 2, 0, 0, 0})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0, 0, 2, 0})
	f.Add([]byte{1, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		e := &Events{}
		e.tab = newTable()
		if err := e.tab.Add(1, nil); err != nil {
			t.Fatal(err)
		}
		e.deliver(b)
		n := uint64(len(b) / 4)
		if e.Delivered.Load() != n {
			t.Fatalf("delivered %d of %d ports", e.Delivered.Load(), n)
		}
		if e.Stats().Ports != 1 {
			t.Fatalf("ports changed: %d", e.Stats().Ports)
		}
	})
}
