package phys

import (
	"testing"
	"unsafe"
)

func TestPointer(t *testing.T) {
	var words [4]uint64
	tests := []struct {
		name string
		addr uintptr
	}{
		{"zero", 0},
		{"page", 0x1000},
		{"high", 0xfee00000},
		{"Go object", uintptr(unsafe.Pointer(&words[2]))},
	}
	for _, tt := range tests {
		if got := uintptr(Pointer(tt.addr)); got != tt.addr {
			t.Errorf("%s: Pointer(%#x) = %#x", tt.name, tt.addr, got)
		}
	}
	b := Bytes(uintptr(unsafe.Pointer(&words[0])), 32)
	b[8] = 0x5a
	if len(b) != 32 || words[1] != 0x5a {
		t.Errorf("Bytes does not alias the memory at the address: len %d, word %#x", len(b), words[1])
	}
}
