// Package boot is Gozen's TamaGo board package for Xen PVH domains. Every
// Gozen app imports it for its side effects:
//
//	import _ "github.com/gozen-dev/gozen/boot"
//
// It provides the PVH entry point (entry_amd64.s), the runtime's RAM from
// the start-info memory map, the clock (Xen's vcpu_time_info and wall
// clock), the console (port 0xE9 early, then console_io for dom0 or the PV
// console ring for a domU), idling with SCHEDOP_poll, and exit through
// SCHEDOP_shutdown.
//
// The start-info parser and clock arithmetic in this file and clock.go are
// portable and tested on the host; the rest builds only for GOOS=tamago.
package boot

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// StartInfoMagic is XEN_HVM_START_MAGIC_VALUE.
const StartInfoMagic = 0x336ec578

const (
	startInfoSize   = 56
	memmapEntrySize = 24
	maxMemmap       = 128
)

// Start-info flags (SIF_* in xen.h).
const (
	SIFPrivileged = 1 << 0
	SIFInitDomain = 1 << 1
)

// Memory-map entry types (XEN_HVM_MEMMAP_TYPE_*, as in the E820).
const (
	MemRAM      = 1
	MemReserved = 2
	MemACPI     = 3
	MemNVS      = 4
	MemUnusable = 5
	MemDisabled = 6
	MemPMem     = 7
)

// MemRegion is one entry of the domain's memory map.
type MemRegion struct {
	Addr uint64
	Size uint64
	Type uint32
}

// End returns the first address past the region.
func (r MemRegion) End() uint64 { return r.Addr + r.Size }

// TypeName names the region type as the E820 does.
func (r MemRegion) TypeName() string {
	switch r.Type {
	case MemRAM:
		return "RAM"
	case MemReserved:
		return "reserved"
	case MemACPI:
		return "ACPI"
	case MemNVS:
		return "NVS"
	case MemUnusable:
		return "unusable"
	case MemDisabled:
		return "disabled"
	case MemPMem:
		return "PMEM"
	}
	return fmt.Sprintf("type %d", r.Type)
}

func (r MemRegion) String() string {
	return fmt.Sprintf("[%#010x-%#010x) %8d KiB %s", r.Addr, r.End(), r.Size>>10, r.TypeName())
}

// StartInfo is the decoded struct hvm_start_info a PVH domain starts with.
type StartInfo struct {
	Version   uint32
	Flags     uint32
	NrModules uint32
	ModList   uint64
	CmdlineAt uint64
	RSDP      uint64
	MemmapAt  uint64
	MemmapLen uint32
	Cmdline   string
	Memmap    []MemRegion
	// MemmapTruncated reports that Xen gave more entries than were kept.
	MemmapTruncated bool
}

// IsInitDomain reports whether this is the initial domain (dom0).
func (s *StartInfo) IsInitDomain() bool { return s.Flags&SIFInitDomain != 0 }

// Errors from ParseStartInfo.
var (
	ErrBadMagic  = errors.New("boot: bad hvm_start_info magic")
	ErrShortInfo = errors.New("boot: hvm_start_info truncated")
)

// ParseStartInfo decodes a copy of struct hvm_start_info (raw), the memory
// map records copied for it (memmap: nEntries records of stride bytes, 24
// for the start-info map, 20 for XENMEM_memory_map's packed e820 entries,
// stride 0 for none) and the command line (NUL-terminated, possibly
// truncated). Every field is checked: a bad magic, a wrapping region or
// overlapping RAM regions are errors; a longer map than kept is flagged.
func ParseStartInfo(raw, memmap []byte, nEntries uint32, stride int, cmdline []byte) (*StartInfo, error) {
	if len(raw) < startInfoSize {
		return nil, fmt.Errorf("%w: %d bytes", ErrShortInfo, len(raw))
	}
	le := binary.LittleEndian
	if m := le.Uint32(raw[0:]); m != StartInfoMagic {
		return nil, fmt.Errorf("%w: %#x", ErrBadMagic, m)
	}
	si := &StartInfo{
		Version:   le.Uint32(raw[4:]),
		Flags:     le.Uint32(raw[8:]),
		NrModules: le.Uint32(raw[12:]),
		ModList:   le.Uint64(raw[16:]),
		CmdlineAt: le.Uint64(raw[24:]),
		RSDP:      le.Uint64(raw[32:]),
	}
	for i, c := range cmdline {
		if c == 0 {
			cmdline = cmdline[:i]
			break
		}
	}
	si.Cmdline = string(cmdline)
	if si.Version >= 1 {
		si.MemmapAt = le.Uint64(raw[40:])
		si.MemmapLen = le.Uint32(raw[48:])
	}
	if stride != 24 && stride != 20 {
		return si, nil
	}
	n := int(nEntries)
	if n > len(memmap)/stride {
		n = len(memmap) / stride
		si.MemmapTruncated = true
	}
	for i := 0; i < n; i++ {
		e := memmap[i*stride:]
		r := MemRegion{Addr: le.Uint64(e[0:]), Size: le.Uint64(e[8:]), Type: le.Uint32(e[16:])}
		if r.Size == 0 {
			continue
		}
		if r.End() < r.Addr {
			return nil, fmt.Errorf("boot: memory map entry %d wraps: %v", i, r)
		}
		si.Memmap = append(si.Memmap, r)
	}
	for i, a := range si.Memmap {
		for _, b := range si.Memmap[i+1:] {
			if a.Type == MemRAM && b.Type == MemRAM && a.Addr < b.End() && b.Addr < a.End() {
				return nil, fmt.Errorf("boot: memory map RAM regions overlap: %v and %v", a, b)
			}
		}
	}
	return si, nil
}

// RAMTotal returns the bytes of RAM in the map.
func (s *StartInfo) RAMTotal() uint64 {
	var t uint64
	for _, r := range s.Memmap {
		if r.Type == MemRAM {
			t += r.Size
		}
	}
	return t
}
