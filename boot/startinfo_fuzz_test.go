package boot

import (
	"bytes"
	"encoding/binary"
	"errors"
	"strings"
	"testing"
)

// fuzzStrides are the memory-map record strides ParseStartInfo is called
// with: the start-info map, XENMEM_memory_map's packed e820 entries, and
// none (start info version 0 before the e820 map is fetched).
var fuzzStrides = []int{memmapEntrySize, 20, 0}

// FuzzParseStartInfo feeds ParseStartInfo hostile start info, memory maps
// and command lines (the seed corpus is in testdata/fuzz/FuzzParseStartInfo).
// Whatever it accepts must be a consistent map: every record of the buffer
// decoded in order, no empty, wrapping or overlapping RAM regions, the
// truncation flag exactly when the buffer holds fewer records than claimed,
// and a command line without NUL that prefixes the bytes given.
func FuzzParseStartInfo(f *testing.F) {
	ram := MemRegion{0, 48 << 20, MemRAM}
	special := MemRegion{0xfeff8000, 0x8000, MemReserved}
	e820 := make([]byte, 40)
	binary.LittleEndian.PutUint64(e820[8:], 0x9f000)
	binary.LittleEndian.PutUint32(e820[16:], MemRAM)
	binary.LittleEndian.PutUint64(e820[20:], 0x100000)
	binary.LittleEndian.PutUint64(e820[28:], 0x7f00000)
	binary.LittleEndian.PutUint32(e820[36:], MemRAM)
	f.Add(rawInfo(StartInfoMagic, 1, 0, 2), memmap(ram, special)[:2*memmapEntrySize], uint32(2), uint8(0), []byte("console=hvc0\x00junk"))
	f.Add(rawInfo(StartInfoMagic, 1, SIFInitDomain|SIFPrivileged, 1), memmap(ram)[:memmapEntrySize], uint32(1), uint8(0), []byte(""))
	f.Add(rawInfo(StartInfoMagic, 0, SIFInitDomain, 0), e820, uint32(2), uint8(1), []byte("dom0_mem=256M"))
	f.Add(rawInfo(StartInfoMagic, 0, 0, 5), []byte(nil), uint32(5), uint8(2), []byte("a b c"))
	f.Add(rawInfo(StartInfoMagic, 1, 0, 200), memmap(ram)[:memmapEntrySize], uint32(200), uint8(0), []byte(nil))
	f.Add(rawInfo(StartInfoMagic, 1, 0, 2), memmap(ram, MemRegion{1 << 20, 1 << 20, MemRAM})[:2*memmapEntrySize], uint32(2), uint8(0), []byte(nil))
	f.Add(rawInfo(StartInfoMagic, 1, 0, 1), memmap(MemRegion{^uint64(0) - 5, 100, MemRAM})[:memmapEntrySize], uint32(1), uint8(0), []byte(nil))
	f.Add(rawInfo(0xdeadbeef, 1, 0, 1), memmap(ram)[:memmapEntrySize], uint32(1), uint8(0), []byte(nil))
	f.Add(make([]byte, 10), []byte(nil), uint32(0), uint8(0), []byte(nil))
	f.Fuzz(func(t *testing.T, raw, mm []byte, n uint32, sel uint8, cmdline []byte) {
		stride := fuzzStrides[int(sel)%len(fuzzStrides)]
		rawCopy, mmCopy, cmdCopy := bytes.Clone(raw), bytes.Clone(mm), bytes.Clone(cmdline)
		si, err := ParseStartInfo(raw, mm, n, stride, cmdline)
		if !bytes.Equal(raw, rawCopy) || !bytes.Equal(mm, mmCopy) || !bytes.Equal(cmdline, cmdCopy) {
			t.Fatal("ParseStartInfo modified its input")
		}
		if err != nil {
			if si != nil {
				t.Fatalf("error %v with a non-nil result", err)
			}
			if !strings.HasPrefix(err.Error(), "boot: ") {
				t.Fatalf("error %q does not name the package", err)
			}
			if len(raw) < startInfoSize && !errors.Is(err, ErrShortInfo) {
				t.Fatalf("short start info (%d bytes): err = %v, want ErrShortInfo", len(raw), err)
			}
			return
		}
		if len(raw) < startInfoSize {
			t.Fatalf("accepted start info of %d bytes", len(raw))
		}
		le := binary.LittleEndian
		if m := le.Uint32(raw); m != StartInfoMagic {
			t.Fatalf("accepted start info with magic %#x", m)
		}
		if si.Version != le.Uint32(raw[4:]) || si.Flags != le.Uint32(raw[8:]) || si.RSDP != le.Uint64(raw[32:]) {
			t.Fatalf("header fields not decoded: %+v", si)
		}
		if si.IsInitDomain() != (si.Flags&SIFInitDomain != 0) {
			t.Fatalf("IsInitDomain = %v for flags %#x", si.IsInitDomain(), si.Flags)
		}
		if strings.IndexByte(si.Cmdline, 0) >= 0 || !bytes.HasPrefix(cmdline, []byte(si.Cmdline)) {
			t.Fatalf("command line %q from %q", si.Cmdline, cmdline)
		}
		if i := bytes.IndexByte(cmdline, 0); i >= 0 && len(si.Cmdline) != i || i < 0 && len(si.Cmdline) != len(cmdline) {
			t.Fatalf("command line %q cut at the wrong place in %q", si.Cmdline, cmdline)
		}
		if stride == 0 {
			if len(si.Memmap) != 0 || si.MemmapTruncated {
				t.Fatalf("memory map decoded without a stride: %v", si.Memmap)
			}
			return
		}
		// every non-empty record the buffer holds, in order
		var want []MemRegion
		held := len(mm) / stride
		for i := 0; i < int(n) && i < held; i++ {
			e := mm[i*stride:]
			r := MemRegion{Addr: le.Uint64(e), Size: le.Uint64(e[8:]), Type: le.Uint32(e[16:])}
			if r.Size != 0 {
				want = append(want, r)
			}
		}
		if len(si.Memmap) != len(want) {
			t.Fatalf("decoded %d regions, the buffer holds %d non-empty ones", len(si.Memmap), len(want))
		}
		for i, r := range si.Memmap {
			if r != want[i] {
				t.Fatalf("region %d = %v, want %v", i, r, want[i])
			}
			if r.Size == 0 || r.End() < r.Addr {
				t.Fatalf("accepted empty or wrapping region %v", r)
			}
			_ = r.String()
		}
		if si.MemmapTruncated != (int(n) > held) {
			t.Fatalf("MemmapTruncated = %v with %d entries claimed and %d held", si.MemmapTruncated, n, held)
		}
		var total uint64
		for i, a := range si.Memmap {
			if a.Type != MemRAM {
				continue
			}
			total += a.Size
			for _, b := range si.Memmap[i+1:] {
				if b.Type == MemRAM && a.Addr < b.End() && b.Addr < a.End() {
					t.Fatalf("accepted overlapping RAM regions %v and %v", a, b)
				}
			}
		}
		if got := si.RAMTotal(); got != total {
			t.Fatalf("RAMTotal = %d, want %d", got, total)
		}
	})
}
