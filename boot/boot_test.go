package boot

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
)

func rawInfo(magic, version, flags uint32, nmem uint32) []byte {
	b := make([]byte, startInfoSize)
	le := binary.LittleEndian
	le.PutUint32(b[0:], magic)
	le.PutUint32(b[4:], version)
	le.PutUint32(b[8:], flags)
	le.PutUint64(b[40:], 0x1234000)
	le.PutUint32(b[48:], nmem)
	return b
}

func memmap(regions ...MemRegion) []byte {
	b := make([]byte, maxMemmap*memmapEntrySize)
	for i, r := range regions {
		e := b[i*memmapEntrySize:]
		binary.LittleEndian.PutUint64(e[0:], r.Addr)
		binary.LittleEndian.PutUint64(e[8:], r.Size)
		binary.LittleEndian.PutUint32(e[16:], r.Type)
	}
	return b
}

func TestParseStartInfo(t *testing.T) {
	ram := MemRegion{0, 48 << 20, MemRAM}
	special := MemRegion{0xfeff8000, 0x8000, MemReserved}
	tests := []struct {
		name     string
		raw      []byte
		mm       []byte
		n        uint32
		cmdline  string
		wantErr  error
		errText  string
		wantRAM  uint64
		wantN    int
		wantCmd  string
		wantDom0 bool
		trunc    bool
	}{
		{name: "domU", raw: rawInfo(StartInfoMagic, 1, 0, 2), mm: memmap(ram, special), n: 2,
			cmdline: "console=hvc0\x00junk", wantRAM: 48 << 20, wantN: 2, wantCmd: "console=hvc0"},
		{name: "dom0", raw: rawInfo(StartInfoMagic, 1, SIFInitDomain|SIFPrivileged, 1), mm: memmap(ram), n: 1,
			wantRAM: 48 << 20, wantN: 1, wantDom0: true},
		{name: "version 0 has no map", raw: rawInfo(StartInfoMagic, 0, 0, 5), mm: memmap(ram), n: 5, wantN: 0},
		{name: "bad magic", raw: rawInfo(0xdeadbeef, 1, 0, 1), mm: memmap(ram), n: 1, wantErr: ErrBadMagic},
		{name: "short", raw: make([]byte, 10), wantErr: ErrShortInfo},
		{name: "too many entries for buffer", raw: rawInfo(StartInfoMagic, 1, 0, 200), mm: memmap(ram), n: 200,
			wantRAM: 48 << 20, wantN: 1, trunc: true},
		{name: "wrapping entry", raw: rawInfo(StartInfoMagic, 1, 0, 1), mm: memmap(MemRegion{^uint64(0) - 5, 100, MemRAM}), n: 1,
			errText: "wraps"},
		{name: "overlapping RAM", raw: rawInfo(StartInfoMagic, 1, 0, 2), mm: memmap(ram, MemRegion{1 << 20, 1 << 20, MemRAM}), n: 2,
			errText: "overlap"},
		{name: "empty entries skipped", raw: rawInfo(StartInfoMagic, 1, 0, 2), mm: memmap(MemRegion{0, 0, MemRAM}, ram), n: 2,
			wantRAM: 48 << 20, wantN: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			stride := 24
			if tt.raw != nil && len(tt.raw) >= 8 && binary.LittleEndian.Uint32(tt.raw[4:]) == 0 {
				stride = 0
			}
			si, err := ParseStartInfo(tt.raw, tt.mm, tt.n, stride, []byte(tt.cmdline))
			switch {
			case tt.wantErr != nil:
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				return
			case tt.errText != "":
				if err == nil || !strings.Contains(err.Error(), tt.errText) {
					t.Fatalf("err = %v, want one containing %q", err, tt.errText)
				}
				return
			case err != nil:
				t.Fatal(err)
			}
			if got := si.RAMTotal(); got != tt.wantRAM {
				t.Errorf("RAMTotal = %d, want %d", got, tt.wantRAM)
			}
			if len(si.Memmap) != tt.wantN {
				t.Errorf("len(Memmap) = %d, want %d", len(si.Memmap), tt.wantN)
			}
			if si.Cmdline != tt.wantCmd {
				t.Errorf("Cmdline = %q, want %q", si.Cmdline, tt.wantCmd)
			}
			if si.IsInitDomain() != tt.wantDom0 {
				t.Errorf("IsInitDomain = %v", si.IsInitDomain())
			}
			if si.MemmapTruncated != tt.trunc {
				t.Errorf("MemmapTruncated = %v", si.MemmapTruncated)
			}
		})
	}
}

func TestSystemTimeAt(t *testing.T) {
	tests := []struct {
		name string
		ti   TimeInfo
		tsc  uint64
		want uint64
	}{
		// 2 GHz TSC: 0.5 ns per tick = mul 2^31, shift 0.
		{"2GHz", TimeInfo{TSCTimestamp: 1000, SystemTime: 5e9, Mul: 1 << 31}, 1000 + 2e9, 5e9 + 1e9},
		// 1 GHz TSC with shift -1 and mul 2^32-1 (Xen keeps mul in [2^31, 2^32)).
		{"1GHz shift", TimeInfo{TSCTimestamp: 0, SystemTime: 0, Mul: 0xffffffff, Shift: 1}, 1e9, 1999999999},
		{"negative shift", TimeInfo{SystemTime: 7, Mul: 1 << 31, Shift: -1}, 4e9, 7 + 1e9},
		{"tsc before timestamp", TimeInfo{TSCTimestamp: 500, SystemTime: 42, Mul: 1 << 31}, 400, 42},
	}
	for _, tt := range tests {
		if got := tt.ti.SystemTimeAt(tt.tsc); got != tt.want {
			t.Errorf("%s: SystemTimeAt = %d, want %d", tt.name, got, tt.want)
		}
	}
}

func TestNanos(t *testing.T) {
	tests := []struct {
		name  string
		ti    TimeInfo
		ticks uint64
		want  uint64
	}{
		{"2GHz", TimeInfo{Mul: 1 << 31}, 2e9, 1e9},
		{"shift 1", TimeInfo{Mul: 1 << 31, Shift: 1}, 3e9, 3e9},
		{"shift -2", TimeInfo{Mul: 1 << 31, Shift: -2}, 8e9, 1e9},
		{"zero", TimeInfo{Mul: 0xffffffff}, 0, 0},
		// the scale ignores the timestamp: a duration, not a point in time
		{"timestamp ignored", TimeInfo{TSCTimestamp: 1 << 40, SystemTime: 9, Mul: 1 << 31}, 1000, 500},
	}
	for _, tt := range tests {
		if got := tt.ti.Nanos(tt.ticks); got != tt.want {
			t.Errorf("%s: Nanos(%d) = %d, want %d", tt.name, tt.ticks, got, tt.want)
		}
	}
}

func TestTSCHz(t *testing.T) {
	ti := TimeInfo{Mul: 1 << 31} // 0.5 ns per tick
	if got := ti.TSCHz(); got != 2e9 {
		t.Errorf("TSCHz = %d, want 2e9", got)
	}
	ti = TimeInfo{Mul: 1 << 31, Shift: 1} // 1 ns per tick
	if got := ti.TSCHz(); got != 1e9 {
		t.Errorf("TSCHz = %d, want 1e9", got)
	}
}

func TestWallClock(t *testing.T) {
	if got := WallClock(0, 1700000000, 5); got != 1700000000*1e9+5 {
		t.Errorf("WallClock = %d", got)
	}
	if got := WallClock(1, 0, 0); got != (1<<32)*1e9 {
		t.Errorf("WallClock with hi = %d", got)
	}
}

func TestParseE820Stride(t *testing.T) {
	// XENMEM_memory_map's packed 20-byte e820 entries (start info v0, dom0).
	mm := make([]byte, 40)
	binary.LittleEndian.PutUint64(mm[0:], 0)
	binary.LittleEndian.PutUint64(mm[8:], 0x9f000)
	binary.LittleEndian.PutUint32(mm[16:], MemRAM)
	binary.LittleEndian.PutUint64(mm[20:], 0x100000)
	binary.LittleEndian.PutUint64(mm[28:], 0x7f00000)
	binary.LittleEndian.PutUint32(mm[36:], MemRAM)
	si, err := ParseStartInfo(rawInfo(StartInfoMagic, 0, SIFInitDomain, 0), mm, 2, 20, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(si.Memmap) != 2 || si.Memmap[1].Addr != 0x100000 || si.RAMTotal() != 0x9f000+0x7f00000 {
		t.Fatalf("memmap = %v", si.Memmap)
	}
}

func TestResumeCorrection(t *testing.T) {
	for _, c := range []struct {
		name          string
		before, after int64
		want          int64
	}{
		{"clock went on", 1000, 1500, 0},
		{"clock unchanged", 1000, 1000, 0},
		{"new host's clock is behind", 5_000_000, 2_000_000, 3_000_000},
	} {
		if got := resumeCorrection(c.before, c.after); got != c.want {
			t.Errorf("%s: resumeCorrection(%d, %d) = %d, want %d", c.name, c.before, c.after, got, c.want)
		}
		if got := c.after + resumeCorrection(c.before, c.after); got < c.before {
			t.Errorf("%s: corrected clock %d is behind %d", c.name, got, c.before)
		}
	}
}

func TestClampMono(t *testing.T) {
	var last atomic.Int64
	for _, c := range []struct {
		in, want int64
		raised   bool
	}{
		{100, 100, false},
		{150, 150, false},
		{120, 150, true}, // another reader's record is behind: no going back
		{150, 150, false},
		{151, 151, false},
	} {
		got, raised := clampMono(&last, c.in)
		if got != c.want || raised != c.raised {
			t.Errorf("clampMono(%d) = %d, %v; want %d, %v", c.in, got, raised, c.want, c.raised)
		}
	}
}

// TestClampMonoConcurrent has readers with clocks that disagree (each
// offset by up to 50 ticks) publish through one clampMono: each reader's
// results never go back, and none is below a value any reader got before
// it started its call.
func TestClampMonoConcurrent(t *testing.T) {
	var last, published atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan string, 8)
	for r := 0; r < 8; r++ {
		wg.Add(1)
		go func(skew int64) {
			defer wg.Done()
			var mine int64
			for i := int64(0); i < 20000; i++ {
				before := published.Load()
				v, _ := clampMono(&last, i*10-skew)
				if v < before || v < mine {
					errs <- fmt.Sprintf("reader %d: %d after %d (own %d)", skew, v, before, mine)
					return
				}
				mine = v
				for {
					p := published.Load()
					if v <= p || published.CompareAndSwap(p, v) {
						break
					}
				}
			}
		}(int64(r * 7))
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}
