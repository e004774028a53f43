package trap

import (
	"strings"
	"testing"
)

func TestAppendHeader(t *testing.T) {
	tests := []struct {
		f    Frame
		cr2  uint64
		want []string
	}{
		{Frame{Vector: PageFault, ErrorCode: 2, RIP: 0x1234, RSP: 0x1000}, 8,
			[]string{"FAULT #PF page fault (vector 14) error 0x0000000000000002 not-present write",
				"rip 0x0000000000001234 rsp 0x0000000000001000 cr2 0x0000000000000008"}},
		{Frame{Vector: PageFault, ErrorCode: 0x11}, 0, []string{"protection read ifetch"}},
		{Frame{Vector: GeneralProtect, ErrorCode: 0}, 0, []string{"#GP general protection (vector 13)"}},
		{Frame{Vector: DoubleFault}, 0, []string{"#DF double fault (vector 8)"}},
		{Frame{Vector: 40}, 0, []string{"vector 40 (vector 40)"}},
	}
	for _, tt := range tests {
		got := string(AppendHeader(nil, &tt.f, tt.cr2))
		for _, w := range tt.want {
			if !strings.Contains(got, w) {
				t.Errorf("AppendHeader(vector %d) = %q, want it to contain %q", tt.f.Vector, got, w)
			}
		}
	}
}

func TestAppendRegisters(t *testing.T) {
	f := Frame{RAX: 1, R15: 0xffffffffffffffff, CS: 8}
	got := string(AppendRegisters(nil, &f))
	if strings.Count(got, "\n") != 4 {
		t.Errorf("want 4 lines, got %q", got)
	}
	for _, w := range []string{"rax 0x0000000000000001", "r15 0xffffffffffffffff", "cs  0x0000000000000008"} {
		if !strings.Contains(got, w) {
			t.Errorf("registers lack %q: %q", w, got)
		}
	}
}

func TestHasErrorCode(t *testing.T) {
	for v := uint64(0); v < 32; v++ {
		want := v == 8 || (v >= 10 && v <= 14) || v == 17 || v == 21 || v == 29 || v == 30
		if HasErrorCode(v) != want {
			t.Errorf("HasErrorCode(%d) = %v", v, !want)
		}
	}
}

func TestBacktrace(t *testing.T) {
	mem := map[uint64]uint64{
		0x1000: 0x2000, 0x1008: 0xaaa, // frame 1
		0x2000: 0x3000, 0x2008: 0xbbb, // frame 2
		0x3000: 0x2000, 0x3008: 0xccc, // loops back: stop
		0x5000: 0x4000, 0x5008: 0xddd, // goes down: stop
	}
	read := func(a uint64) (uint64, bool) { v, ok := mem[a]; return v, ok }
	tests := []struct {
		rbp  uint64
		max  int
		want []uint64
	}{
		{0x1000, 8, []uint64{0xaaa, 0xbbb, 0xccc}},
		{0x1000, 2, []uint64{0xaaa, 0xbbb}},
		{0x5000, 8, []uint64{0xddd}},
		{0x9000, 8, nil},
		{0, 8, nil},
	}
	for _, tt := range tests {
		pcs := make([]uint64, tt.max)
		n := Backtrace(tt.rbp, read, pcs)
		if n != len(tt.want) {
			t.Errorf("Backtrace(%#x) = %d frames %x, want %x", tt.rbp, n, pcs[:n], tt.want)
			continue
		}
		for i := range tt.want {
			if pcs[i] != tt.want[i] {
				t.Errorf("Backtrace(%#x)[%d] = %#x, want %#x", tt.rbp, i, pcs[i], tt.want[i])
			}
		}
	}
}
