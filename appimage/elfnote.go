package appimage

import (
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/gozen-dev/gozen/boot"
)

// ErrNotPVH: the file is not an ELF that Xen can start as a PVH domain.
var ErrNotPVH = errors.New("appimage: not a PVH ELF")

// xenElfnotePhys32Entry is XEN_ELFNOTE_PHYS32_ENTRY (xen/include/public/elfnote.h).
const xenElfnotePhys32Entry = 18

// maxNotes bounds the note bytes read from one segment.
const maxNotes = 1 << 20

// CheckPVH checks that the file is a 64-bit x86 ELF with a "Xen" note
// XEN_ELFNOTE_PHYS32_ENTRY, the note xl's PVH builder (and QEMU's -kernel)
// needs.
func CheckPVH(path string) error {
	f, err := elf.Open(path)
	if err != nil {
		return fmt.Errorf("%w: %s: %v", ErrNotPVH, path, err)
	}
	defer f.Close()
	if f.Class != elf.ELFCLASS64 || f.Machine != elf.EM_X86_64 {
		return fmt.Errorf("%w: %s is %v %v, want ELFCLASS64 EM_X86_64", ErrNotPVH, path, f.Class, f.Machine)
	}
	for _, p := range f.Progs {
		if p.Type != elf.PT_NOTE || p.Filesz > maxNotes {
			continue
		}
		data, err := io.ReadAll(p.Open())
		if err != nil {
			return fmt.Errorf("%w: %s: note segment: %v", ErrNotPVH, path, err)
		}
		if hasXenNote(data, f.ByteOrder, xenElfnotePhys32Entry) {
			return nil
		}
	}
	return fmt.Errorf("%w: %s has no Xen PHYS32_ENTRY note (was it built by make APP=...?)", ErrNotPVH, path)
}

// hasXenNote walks ELF notes (namesz, descsz, type, name, desc, each
// 4-aligned) looking for name "Xen" and the type.
func hasXenNote(data []byte, bo binary.ByteOrder, typ uint32) bool {
	align := func(n uint64) uint64 { return (n + 3) &^ 3 }
	for len(data) >= 12 {
		namesz, descsz, t := uint64(bo.Uint32(data)), uint64(bo.Uint32(data[4:])), bo.Uint32(data[8:])
		rest := uint64(len(data) - 12)
		if align(namesz) > rest || align(descsz) > rest-align(namesz) {
			return false
		}
		name := data[12 : 12+namesz]
		if t == typ && string(name) == "Xen\x00" {
			return true
		}
		data = data[12+align(namesz)+align(descsz):]
	}
	return false
}

// MemoryFloor returns the smallest xl memory= (MiB) the image at path boots
// in: its loaded end (the highest PT_LOAD end, after gozen-image trim)
// raised to boot.Floor (one aligned heap arena and the stack area past it),
// rounded up to a MiB.
func MemoryFloor(path string) (int, error) {
	f, err := elf.Open(path)
	if err != nil {
		return 0, fmt.Errorf("%w: %s: %v", ErrNotPVH, path, err)
	}
	defer f.Close()
	var end uint64
	for _, p := range f.Progs {
		if p.Type == elf.PT_LOAD && p.Paddr+p.Memsz > end {
			end = p.Paddr + p.Memsz
		}
	}
	if end == 0 || end > 1<<32 {
		return 0, fmt.Errorf("%w: %s: loaded end %#x (no segment, or above 4 GiB)", ErrNotPVH, path, end)
	}
	const mib = 1 << 20
	return int((boot.Floor(end) + mib - 1) / mib), nil
}
