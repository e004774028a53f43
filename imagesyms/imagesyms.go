// Package imagesyms writes into a Gozen image the addresses of the Go
// runtime variables that package boot reads but cannot name, and the
// offsets of the runtime's fields that package smp reads.
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
//
// Package smp's runtime-offset record (smp.OffsetsSymbol) gets the
// offsets of the fields named by smp.RuntimeFields, read from the
// image's DWARF: with them a guest can host more Ms than it has vCPUs.
// An image without them keeps an empty record and runs one M per vCPU;
// Result.OffsetsMissing says why.
package imagesyms

import (
	"bytes"
	"debug/dwarf"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/gozen-dev/gozen/arch/amd64/smp"
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

	// Offsets are the runtime fields' offsets plus one, in the order of
	// smp.RuntimeFields (the runtime-offset record's words); all 0 when
	// OffsetsMissing is set.
	Offsets [len(smp.RuntimeFields)]uint64
	// OffsetsMissing names the first field the image's DWARF lacks or
	// has in another shape, and why; the record is then left empty.
	OffsetsMissing string
	// NoOffsets reports that the image has no runtime-offset record (it
	// does not link package smp).
	NoOffsets bool
	// Funcs are the address and size of each function of
	// smp.RuntimeFuncs; all 0 when OffsetsMissing is set.
	Funcs [len(smp.RuntimeFuncs)][2]uint64

	recordOff  int64 // where the record's first address is in the file
	offsetsOff int64 // where the runtime-offset record's first word is
}

func (r Result) String() string {
	s := r.symbolsString()
	switch {
	case r.NoOffsets:
	case r.OffsetsMissing != "":
		s += "; no runtime offsets (" + r.OffsetsMissing + "): one M per vCPU"
	default:
		s += "; runtime offsets"
		for i, f := range smp.RuntimeFields {
			s += fmt.Sprintf(" %s.%s %d", f.Type, f.Path, r.Offsets[i]-1)
		}
		for i, name := range smp.RuntimeFuncs {
			s += fmt.Sprintf(", %s at %#x (%d bytes)", name, r.Funcs[i][0], r.Funcs[i][1])
		}
	}
	return s
}

// symbolsString describes the runtime-symbol record.
func (r Result) symbolsString() string {
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
	r, err := plan(data, boot.RuntimeSymbols[:], smp.RuntimeFields[:], smp.RuntimeFuncs[:])
	if err != nil {
		return r, fmt.Errorf("%s: %w", path, err)
	}
	return r, nil
}

// Write writes the record into the ELF at path (a new file renamed over
// it) and reports what it wrote; writing it again changes nothing.
func Write(path string) (Result, error) {
	return write(path, boot.RuntimeSymbols[:], smp.RuntimeFields[:], smp.RuntimeFuncs[:])
}

// write is Write for the variables names, the struct fields fields and
// the functions funcs (the host tests use stand-ins).
func write(path string, names []string, fields []smp.Field, funcs []string) (Result, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Result{}, fmt.Errorf("imagesyms: %w", err)
	}
	r, err := plan(data, names, fields, funcs)
	if err != nil {
		return r, fmt.Errorf("%s: %w", path, err)
	}
	if r.Already {
		return r, nil
	}
	apply(data, r, len(names), len(fields))
	if err := atomicfile.Replace(path, data); err != nil {
		return r, fmt.Errorf("imagesyms: %w", err)
	}
	return r, nil
}

// apply writes the planned addresses of n variables and offsets of
// nfields fields into data.
func apply(data []byte, r Result, n, nfields int) {
	if !r.NoRecord {
		for i := 0; i < n; i++ {
			binary.LittleEndian.PutUint64(data[r.recordOff+int64(i)*8:], r.Addrs[i])
		}
	}
	if !r.NoOffsets {
		for i, w := range offsetWords(r) {
			binary.LittleEndian.PutUint64(data[r.offsetsOff+int64(i)*8:], w)
		}
	}
}

// offsetWords returns the runtime-offset record's words after the magic.
func offsetWords(r Result) []uint64 {
	w := append([]uint64(nil), r.Offsets[:]...)
	for _, f := range r.Funcs {
		w = append(w, f[0], f[1])
	}
	return w
}

func plan(data []byte, names []string, fields []smp.Field, funcs []string) (Result, error) {
	r, f, err := planSymbols(data, names)
	if err != nil {
		return r, err
	}
	symbolsAlready := r.Already
	if err := planOffsets(data, f, fields, funcs, &r); err != nil {
		return r, err
	}
	r.Already = r.Already && symbolsAlready
	return r, nil
}

// planSymbols plans the runtime-symbol record; it returns the parsed ELF.
func planSymbols(data []byte, names []string) (Result, *elf.File, error) {
	var r Result
	if len(names) > len(r.Addrs) {
		return r, nil, fmt.Errorf("imagesyms: %d variables, the record holds %d", len(names), len(r.Addrs))
	}
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return r, nil, fmt.Errorf("%w: %v", ErrNotImage, err)
	}
	if f.Class != elf.ELFCLASS64 || f.Data != elf.ELFDATA2LSB || f.Machine != elf.EM_X86_64 || f.Type != elf.ET_EXEC {
		return r, nil, fmt.Errorf("%w: %v %v %v %v, want a little-endian 64-bit x86 executable", ErrNotImage, f.Class, f.Data, f.Machine, f.Type)
	}
	syms, err := f.Symbols()
	if err != nil {
		return r, nil, fmt.Errorf("%w: symbols: %v", ErrNotImage, err)
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
		return r, f, nil
	case rec == nil:
		return r, nil, fmt.Errorf("%w: neither %s nor %s (does it import github.com/gozen-dev/gozen/boot?)", ErrNotImage, boot.SymbolsSymbol, boot.TrimSymbol)
	case rec.Size != size:
		return r, nil, fmt.Errorf("%w: %s is %d bytes, want %d", ErrNotImage, boot.SymbolsSymbol, rec.Size, size)
	}
	off, err := fileOffset(f, uint64(len(data)), rec.Value, size)
	if err != nil {
		return r, nil, fmt.Errorf("%w: %s: %v", ErrNotImage, boot.SymbolsSymbol, err)
	}
	if m := binary.LittleEndian.Uint64(data[off:]); m != boot.SymbolsMagic {
		return r, nil, fmt.Errorf("%w: %s starts %#x, want %#x", ErrNotImage, boot.SymbolsSymbol, m, uint64(boot.SymbolsMagic))
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
	return r, f, nil
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

// planOffsets plans the runtime-offset record into r: r.Already stays
// true only if the record already holds what it plans.
func planOffsets(data []byte, f *elf.File, fields []smp.Field, funcs []string, r *Result) error {
	r.Already = true
	if len(fields) > len(r.Offsets) || len(funcs) > len(r.Funcs) {
		return fmt.Errorf("imagesyms: %d fields and %d functions, the runtime-offset record holds %d and %d", len(fields), len(funcs), len(r.Offsets), len(r.Funcs))
	}
	syms, err := f.Symbols()
	if err != nil {
		return fmt.Errorf("%w: symbols: %v", ErrNotImage, err)
	}
	var rec *elf.Symbol
	byName := make(map[string]*elf.Symbol, len(funcs))
	for _, name := range funcs {
		byName[name] = nil
	}
	for i := range syms {
		if syms[i].Name == smp.OffsetsSymbol {
			rec = &syms[i]
		}
		if s, ok := byName[syms[i].Name]; ok && s == nil {
			byName[syms[i].Name] = &syms[i]
		}
	}
	size := uint64(smp.OffsetsWords) * 8
	switch {
	case rec == nil:
		r.NoOffsets = true
		return nil
	case rec.Size != size:
		return fmt.Errorf("%w: %s is %d bytes, want %d", ErrNotImage, smp.OffsetsSymbol, rec.Size, size)
	}
	off, err := fileOffset(f, uint64(len(data)), rec.Value, size)
	if err != nil {
		return fmt.Errorf("%w: %s: %v", ErrNotImage, smp.OffsetsSymbol, err)
	}
	if m := binary.LittleEndian.Uint64(data[off:]); m != smp.OffsetsMagic {
		return fmt.Errorf("%w: %s starts %#x, want %#x", ErrNotImage, smp.OffsetsSymbol, m, uint64(smp.OffsetsMagic))
	}
	r.offsetsOff = off + 8
	offs, why := fieldOffsets(f, fields)
	for i, name := range funcs {
		if why != "" {
			break
		}
		s := byName[name]
		switch {
		case s == nil:
			why = "function " + name + " is not in the symbol table"
		case elf.ST_TYPE(s.Info) != elf.STT_FUNC || s.Size == 0:
			why = fmt.Sprintf("%s is a %v of %d bytes, not a function", name, elf.ST_TYPE(s.Info), s.Size)
		default:
			r.Funcs[i] = [2]uint64{s.Value, s.Size}
		}
	}
	if why != "" {
		r.OffsetsMissing = why
		r.Funcs = [len(r.Funcs)][2]uint64{}
	} else {
		for i, o := range offs {
			r.Offsets[i] = o + 1
		}
	}
	for i, w := range offsetWords(*r) {
		if binary.LittleEndian.Uint64(data[r.offsetsOff+int64(i)*8:]) != w {
			r.Already = false
		}
	}
	return nil
}

// fieldOffsets reads the offsets of fields from f's DWARF, or says why
// one cannot be had.
func fieldOffsets(f *elf.File, fields []smp.Field) ([]uint64, string) {
	d, err := f.DWARF()
	if err != nil {
		return nil, "no DWARF: " + err.Error()
	}
	want := make(map[string]dwarf.Offset, len(fields))
	for _, fl := range fields {
		want[fl.Type] = 0
	}
	found := 0
	rd := d.Reader()
	for found < len(want) {
		e, err := rd.Next()
		if err != nil {
			return nil, "DWARF: " + err.Error()
		}
		if e == nil {
			break
		}
		if e.Tag == dwarf.TagStructType {
			if n, _ := e.Val(dwarf.AttrName).(string); n != "" {
				if o, ok := want[n]; ok && o == 0 {
					want[n] = e.Offset
					found++
				}
			}
		}
		if e.Tag != dwarf.TagCompileUnit && e.Children {
			rd.SkipChildren()
		}
	}
	offs := make([]uint64, len(fields))
	for i, fl := range fields {
		o := want[fl.Type]
		if o == 0 {
			return nil, "type " + fl.Type + " is not in the DWARF"
		}
		t, err := d.Type(o)
		if err != nil {
			return nil, fl.Type + ": " + err.Error()
		}
		off, mt, why := member(t, fl.Path)
		switch {
		case why != "":
			return nil, fl.Type + "." + fl.Path + " " + why
		case off < 0:
			return nil, fl.Type + "." + fl.Path + " has no offset"
		case mt.Size() != fl.Size:
			return nil, fmt.Sprintf("%s.%s is %d bytes, want %d", fl.Type, fl.Path, mt.Size(), fl.Size)
		}
		offs[i] = uint64(off)
	}
	return offs, ""
}

// member finds the member at path (dot-separated) in t.
func member(t dwarf.Type, path string) (off int64, mt dwarf.Type, why string) {
	for _, name := range strings.Split(path, ".") {
		for {
			td, ok := t.(*dwarf.TypedefType)
			if !ok {
				break
			}
			t = td.Type
		}
		st, ok := t.(*dwarf.StructType)
		if !ok {
			return 0, nil, "is not inside a struct"
		}
		var sf *dwarf.StructField
		for _, c := range st.Field {
			if c.Name == name {
				sf = c
				break
			}
		}
		if sf == nil {
			return 0, nil, "is not in the DWARF (no member " + name + ")"
		}
		off += sf.ByteOffset
		t = sf.Type
	}
	return off, t, ""
}
