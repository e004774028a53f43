package domid

import "testing"

func TestReserved(t *testing.T) {
	for _, c := range []struct {
		id  ID
		rsv bool
	}{
		{0, false},
		{7, false},
		{FirstReserved - 1, false},
		{Self, true},
		{IO, true},
		{Xen, true},
		{COW, true},
		{Any, true},
		{0x7ff5, true},
		{Idle, true},
	} {
		if got := c.id.Reserved(); got != c.rsv {
			t.Errorf("ID(%#x).Reserved() = %v, want %v", uint16(c.id), got, c.rsv)
		}
	}
}
