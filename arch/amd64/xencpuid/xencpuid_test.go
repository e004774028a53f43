package xencpuid

import (
	"errors"
	"testing"
)

// fakeCPU answers CPUID from a table.
type fakeCPU map[[2]uint32][4]uint32

func (f fakeCPU) cpuid(leaf, sub uint32) (a, b, c, d uint32) {
	r := f[[2]uint32{leaf, sub}]
	return r[0], r[1], r[2], r[3]
}

// Xen's signature "XenVMMXenVMM" as EBX, ECX, EDX.
const sigB, sigC, sigD = 0x566e6558, 0x65584d4d, 0x4d4d566e

func xenAt(base uint32) fakeCPU {
	return fakeCPU{
		{base, 0}:     {base + 5, sigB, sigC, sigD},
		{base + 1, 0}: {4<<16 | 17, 0, 0, 0},
		{base + 2, 0}: {1, 0x40000000, 0, 0},
		{base + 3, 0}: {0, 0, 2000000, 0},
		{base + 3, 1}: {0, 0, 1 << 31, 0},
		{base + 4, 0}: {HVMFeatureVCPUID | HVMFeatureDomID, 0, 7, 0},
	}
}

func TestDetect(t *testing.T) {
	viridian := xenAt(0x40000100)
	viridian[[2]uint32{0x40000000, 0}] = [4]uint32{0x40000006, 0x7263694d, 0x666f736f, 0x76482074} // "Microsoft Hv"
	tests := []struct {
		name     string
		cpu      fakeCPU
		wantBase uint32
		wantErr  error
	}{
		{"at 0x40000000", xenAt(0x40000000), 0x40000000, nil},
		{"shifted after Viridian", viridian, 0x40000100, nil},
		{"no hypervisor", fakeCPU{}, 0, ErrNotXen},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			l, err := DetectWith(tt.cpu.cpuid)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			if l.Base != tt.wantBase || l.Major != 4 || l.Minor != 17 || l.HypercallMSR != 0x40000000 {
				t.Errorf("leaves = %+v", l)
			}
			tl, err := l.Time()
			if err != nil || tl.GuestTSCkHz != 2000000 || tl.Mul != 1<<31 {
				t.Errorf("Time() = %+v, %v", tl, err)
			}
			h, err := l.HVMInfo()
			if err != nil || h.DomID != 7 {
				t.Errorf("HVMInfo() = %+v, %v", h, err)
			}
		})
	}
}

func TestDetectTruncatedLeaves(t *testing.T) {
	cpu := xenAt(0x40000000)
	cpu[[2]uint32{0x40000000, 0}] = [4]uint32{0x40000001, sigB, sigC, sigD}
	if _, err := DetectWith(cpu.cpuid); err == nil {
		t.Fatal("want an error for leaves without the hypercall leaf")
	}
}

func TestDetectOnHost(t *testing.T) {
	// The host running the tests is normally not a Xen guest; either way
	// Detect must not fail in any other manner.
	l, err := Detect()
	if err != nil && !errors.Is(err, ErrNotXen) {
		t.Fatalf("Detect() on host: %v", err)
	}
	if err == nil {
		t.Logf("running under Xen %d.%d at %#x", l.Major, l.Minor, l.Base)
	}
}
