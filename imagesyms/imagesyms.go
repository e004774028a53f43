// Package imagesyms writes into a Gozen image the addresses of the Go
// runtime variables that package boot reads but cannot name.
//
// Around a suspend, boot gives the heap's unused pages back to Xen and
// needs the runtime's break high-water mark for it (see boot's
// symbols.go): frames above it need no scan and no clearing. The Go
// linker refuses a //go:linkname pull of a runtime variable (Go 1.23's
// -checklinkname), so Write looks the variables named by
// boot.RuntimeSymbols up in the ELF's symbol table and writes their
// addresses into boot's runtime-symbol record (boot.SymbolsSymbol), which
// the linker put in the image's file data. `gozen-image symbols` runs it;
// the Makefile does on every guest ELF.
//
// An image whose runtime lacks one of the variables, or has it in another
// shape (not an 8-byte data object), keeps an empty record: the guest
// then reads and clears every page it gives back, which is correct, only
// slower. Write reports that in Result.Missing rather than failing.
package imagesyms

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"os"

	"github.com/gozen-dev/gozen/boot"
	"github.com/gozen-dev/gozen/internal/atomicfile"
)

// ErrNotImage means the file is not a little-endian 64-bit x86 executable
// ELF with a symbol table and boot's records (the image-trim record, which
// every image links, and the runtime-symbol record if it has one).
var ErrNotImage = errors.New("imagesyms: not a Gozen image")

// Result describes a record written, or to be written.
type Result struct {
	// Addrs are the variables' addresses, in the order of
	// boot.RuntimeSymbols; all 0 when Missing is set.
	Addrs [len(boot.RuntimeSymbols)]uint64
	// Missing names the first variable the image lacks or has in
	// another shape, and why; the record is then left empty.
	Missing string
	// Already reports that the record held these addresses before.
	Already bool
	// NoRecord reports that the image has no record: nothing in it
	// suspends the domain (the linker keeps the record only with the
	// zero-page release), so there is nothing to write.
	NoRecord bool

	recordOff int64 // where the record's first address is in the file
}

func (r Result) String() string {
	if r.NoRecord {
		return "no runtime-symbol record (the image never suspends): nothing to write"
	}
	if r.Missing != "" {
		return "no runtime break for the zero-page release (" + r.Missing + "): every released page is read and cleared"
	}
	s := ""
	for i, name := range boot.RuntimeSymbols {
		if i > 0 {
			s += ", "
		}
		s += fmt.Sprintf("%s at %#x", name, r.Addrs[i])
	}
	if r.Already {
		return "already recorded: " + s
	}
	return "recorded " + s
}

// Plan reads the ELF at path and works out the record without changing
// the file.
func Plan(path string) (Result, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Result{}, fmt.Errorf("imagesyms: %w", err)
	}
	r, err := plan(data, boot.RuntimeSymbols[:])
	if err != nil {
		return r, fmt.Errorf("%s: %w", path, err)
	}
	return r, nil
}

// Write writes the record into the ELF at path (a new file renamed over
// it) and reports what it wrote; writing it again changes nothing.
func Write(path string) (Result, error) {
	return write(path, boot.RuntimeSymbols[:])
}

// write is Write for the variables names (the host tests use stand-ins).
func write(path string, names []string) (Result, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Result{}, fmt.Errorf("imagesyms: %w", err)
	}
	r, err := plan(data, names)
	if err != nil {
		return r, fmt.Errorf("%s: %w", path, err)
	}
	if r.Already {
		return r, nil
	}
	apply(data, r, len(names))
	if err := atomicfile.Replace(path, data); err != nil {
		return r, fmt.Errorf("imagesyms: %w", err)
	}
	return r, nil
}

// apply writes the planned addresses of n variables into data.
func apply(data []byte, r Result, n int) {
	for i := 0; i < n; i++ {
		binary.LittleEndian.PutUint64(data[r.recordOff+int64(i)*8:], r.Addrs[i])
	}
}

func plan(data []byte, names []string) (Result, error) {
	var r Result
	if len(names) > len(r.Addrs) {
		return r, fmt.Errorf("imagesyms: %d variables, the record holds %d", len(names), len(r.Addrs))
	}
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return r, fmt.Errorf("%w: %v", ErrNotImage, err)
	}
	if f.Class != elf.ELFCLASS64 || f.Data != elf.ELFDATA2LSB || f.Machine != elf.EM_X86_64 || f.Type != elf.ET_EXEC {
		return r, fmt.Errorf("%w: %v %v %v %v, want a little-endian 64-bit x86 executable", ErrNotImage, f.Class, f.Data, f.Machine, f.Type)
	}
	syms, err := f.Symbols()
	if err != nil {
		return r, fmt.Errorf("%w: symbols: %v", ErrNotImage, err)
	}
	byName := make(map[string]*elf.Symbol, len(names)+1)
	for i := range syms {
		byName[syms[i].Name] = &syms[i]
	}
	size := uint64(1+len(names)) * 8
	rec := byName[boot.SymbolsSymbol]
	switch {
	case rec == nil && byName[boot.TrimSymbol] != nil:
		r.NoRecord, r.Already = true, true
		return r, nil
	case rec == nil:
		return r, fmt.Errorf("%w: neither %s nor %s (does it import github.com/gozen-dev/gozen/boot?)", ErrNotImage, boot.SymbolsSymbol, boot.TrimSymbol)
	case rec.Size != size:
		return r, fmt.Errorf("%w: %s is %d bytes, want %d", ErrNotImage, boot.SymbolsSymbol, rec.Size, size)
	}
	off, err := fileOffset(f, uint64(len(data)), rec.Value, size)
	if err != nil {
		return r, fmt.Errorf("%w: %s: %v", ErrNotImage, boot.SymbolsSymbol, err)
	}
	if m := binary.LittleEndian.Uint64(data[off:]); m != boot.SymbolsMagic {
		return r, fmt.Errorf("%w: %s starts %#x, want %#x", ErrNotImage, boot.SymbolsSymbol, m, uint64(boot.SymbolsMagic))
	}
	r.recordOff = off + 8
	for i, name := range names {
		s := byName[name]
		if why := checkVariable(f, s); why != "" {
			r.Addrs = [len(r.Addrs)]uint64{}
			r.Missing = name + " " + why
			break
		}
		r.Addrs[i] = s.Value
	}
	r.Already = true
	for i := range names {
		if binary.LittleEndian.Uint64(data[r.recordOff+int64(i)*8:]) != r.Addrs[i] {
			r.Already = false
		}
	}
	return r, nil
}

// checkVariable says why s is not an 8-byte, 8-aligned data object in a
// writable allocated section, or returns "".
func checkVariable(f *elf.File, s *elf.Symbol) string {
	switch {
	case s == nil:
		return "is not in the symbol table"
	case elf.ST_TYPE(s.Info) != elf.STT_OBJECT:
		return fmt.Sprintf("is a %v, not a data object", elf.ST_TYPE(s.Info))
	case s.Size != 8:
		return fmt.Sprintf("is %d bytes, want 8", s.Size)
	case s.Value%8 != 0:
		return fmt.Sprintf("at %#x is not 8-byte aligned", s.Value)
	case int(s.Section) >= len(f.Sections):
		return "is in no section"
	}
	sec := f.Sections[s.Section]
	if sec.Flags&(elf.SHF_ALLOC|elf.SHF_WRITE) != elf.SHF_ALLOC|elf.SHF_WRITE || s.Value < sec.Addr || s.Value+8 > sec.Addr+sec.Size {
		return fmt.Sprintf("at %#x is not in a writable loaded section (%s)", s.Value, sec.Name)
	}
	return ""
}

// fileOffset returns where n bytes at address addr are in the file.
func fileOffset(f *elf.File, size, addr, n uint64) (int64, error) {
	for _, s := range f.Sections {
		if s.Type == elf.SHT_NOBITS || s.Flags&elf.SHF_ALLOC == 0 {
			continue
		}
		if addr >= s.Addr && addr+n <= s.Addr+s.Size && addr+n > addr {
			off := s.Offset + addr - s.Addr
			if off+n > size || off+n < off {
				break
			}
			return int64(off), nil
		}
	}
	return 0, fmt.Errorf("%#x is not in the file's data", addr)
}
