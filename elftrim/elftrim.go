// Package elftrim keeps Go's FIPS 140-3 entropy scratch buffer out of the
// memory Xen's domain builder must back for a Gozen image.
//
// Go 1.26 links crypto/internal/fips140/drbg.memory, a 32 MiB .noptrbss
// array, into every program that reaches crypto/internal/fips140/drbg
// (TamaGo's amd64 package does, through its RNG and crypto/aes). Only the
// FIPS 140-3 DRBG ever touches it (GODEBUG fips140=on/only/debug): on an OS
// it costs nothing until then, but a PVH domain builder allocates and
// zeroes every byte of each PT_LOAD segment's p_memsz, so the buffer alone
// needs 32 MiB of domain memory.
//
// The Go linker sorts a section's symbols by size, so the buffer, the
// largest, is the last thing of .noptrbss and of the last loadable
// segment. Trim cuts that segment (and .noptrbss) short where the buffer
// begins and writes the page-aligned new end into boot's image-trim
// record (boot.TrimSymbol), where the entry code starts the Go heap. The
// buffer's addresses then belong to the heap, which is why Trim refuses an
// image built with FIPS 140-3 mode on, and boot refuses to run a trimmed
// image in that mode.
package elftrim

import (
	"bytes"
	"debug/buildinfo"
	"debug/elf"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/gozen-dev/gozen/boot"
	"github.com/gozen-dev/gozen/internal/atomicfile"
)

// ScratchSymbol is the linker name of Go's FIPS entropy scratch buffer.
const ScratchSymbol = "crypto/internal/fips140/drbg.memory"

const pageSize = 4096

// Errors from Plan and Trim.
var (
	// ErrNotImage: the file is not a 64-bit x86 executable ELF with a
	// symbol table and boot's image-trim record.
	ErrNotImage = errors.New("elftrim: not a Gozen image")
	// ErrLayout: the buffer is not where trimming can cut it off (not
	// the last thing of the last loadable segment, or in file data).
	ErrLayout = errors.New("elftrim: unexpected layout")
	// ErrFIPS: the image was built with FIPS 140-3 mode on, which uses
	// the buffer.
	ErrFIPS = errors.New("elftrim: FIPS 140-3 mode uses the entropy buffer")
)

// Result describes a trim, planned or done.
type Result struct {
	// Trimmed reports that the image is (or, from Plan, would be)
	// trimmed; false when it has no scratch buffer.
	Trimmed bool
	// Already reports that the image was trimmed before.
	Already bool
	// Segment is the index of the trimmed program header.
	Segment int
	// OldEnd and NewEnd are the end of the loaded image before and after.
	OldEnd, NewEnd uint64
	// HeapStart is the record's value: NewEnd rounded up to a page.
	HeapStart uint64
	// Saved is the number of bytes the domain builder no longer backs.
	Saved uint64

	// where to patch
	memszOff, sectSizeOff, recordOff int64
	newSectSize                      uint64
}

func (r Result) String() string {
	switch {
	case !r.Trimmed:
		return "no FIPS entropy buffer: nothing to trim"
	case r.Already:
		return fmt.Sprintf("already trimmed: image ends at %#x, heap from %#x", r.NewEnd, r.HeapStart)
	}
	return fmt.Sprintf("image end %#x -> %#x (%d KiB less for the domain builder to back), heap from %#x",
		r.OldEnd, r.NewEnd, r.Saved>>10, r.HeapStart)
}

// Plan reads the ELF at path and works out its trim without changing it.
func Plan(path string) (Result, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Result{}, fmt.Errorf("elftrim: %w", err)
	}
	r, err := plan(data)
	if err != nil {
		return r, fmt.Errorf("%s: %w", path, err)
	}
	return r, nil
}

// Trim trims the ELF at path in place (a new file renamed over it) and
// reports what it did; trimming a trimmed image changes nothing.
func Trim(path string) (Result, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return Result{}, fmt.Errorf("elftrim: %w", err)
	}
	r, err := plan(data)
	if err != nil {
		return r, fmt.Errorf("%s: %w", path, err)
	}
	if !r.Trimmed || r.Already {
		return r, nil
	}
	apply(data, r)
	// the patched copy must read back as trimmed
	if again, err := plan(data); err != nil || !again.Already {
		return r, fmt.Errorf("elftrim: %s: the patched image does not read back as trimmed (%v)", path, err)
	}
	if err := atomicfile.Replace(path, data); err != nil {
		return r, fmt.Errorf("elftrim: %w", err)
	}
	return r, nil
}

// apply writes the planned trim into data.
func apply(data []byte, r Result) {
	le := binary.LittleEndian
	le.PutUint64(data[r.memszOff:], r.NewEnd-segStart(data, r))
	if r.sectSizeOff >= 0 {
		le.PutUint64(data[r.sectSizeOff:], r.newSectSize)
	}
	le.PutUint64(data[r.recordOff+8:], r.HeapStart)
}

// segStart returns the p_vaddr of the planned segment (read back from
// data, so that apply needs no other state).
func segStart(data []byte, r Result) uint64 {
	// p_memsz is at offset 40 of a 56-byte Elf64_Phdr, p_vaddr at 16
	return binary.LittleEndian.Uint64(data[r.memszOff-40+16:])
}

func plan(data []byte) (Result, error) {
	var r Result
	f, err := elf.NewFile(bytes.NewReader(data))
	if err != nil {
		return r, fmt.Errorf("%w: %v", ErrNotImage, err)
	}
	if f.Class != elf.ELFCLASS64 || f.Data != elf.ELFDATA2LSB || f.Machine != elf.EM_X86_64 || f.Type != elf.ET_EXEC {
		return r, fmt.Errorf("%w: %v %v %v %v, want a little-endian 64-bit x86 executable", ErrNotImage, f.Class, f.Data, f.Machine, f.Type)
	}
	le := binary.LittleEndian
	if le.Uint16(data[54:]) != 56 || le.Uint16(data[58:]) != 64 {
		return r, fmt.Errorf("%w: program/section header sizes %d/%d, want 56/64", ErrNotImage, le.Uint16(data[54:]), le.Uint16(data[58:]))
	}
	syms, err := f.Symbols()
	if err != nil {
		return r, fmt.Errorf("%w: symbols: %v", ErrNotImage, err)
	}
	var scratch, record *elf.Symbol
	for i := range syms {
		switch syms[i].Name {
		case ScratchSymbol:
			scratch = &syms[i]
		case boot.TrimSymbol:
			record = &syms[i]
		}
	}
	if record == nil {
		return r, fmt.Errorf("%w: no %s (does it import github.com/gozen-dev/gozen/boot?)", ErrNotImage, boot.TrimSymbol)
	}
	if record.Size != 16 {
		return r, fmt.Errorf("%w: %s is %d bytes, want 16", ErrNotImage, boot.TrimSymbol, record.Size)
	}
	recOff, err := fileOffset(f, uint64(len(data)), record.Value, 16)
	if err != nil {
		return r, fmt.Errorf("%w: %s: %v", ErrNotImage, boot.TrimSymbol, err)
	}
	if m := le.Uint64(data[recOff:]); m != boot.TrimMagic {
		return r, fmt.Errorf("%w: %s starts %#x, want %#x", ErrNotImage, boot.TrimSymbol, m, uint64(boot.TrimMagic))
	}
	heapStart := le.Uint64(data[recOff+8:])
	r.recordOff = recOff
	if scratch == nil {
		if heapStart != 0 {
			return r, fmt.Errorf("%w: the trim record says %#x but there is no %s", ErrLayout, heapStart, ScratchSymbol)
		}
		return r, nil
	}
	if err := checkFIPS(data); err != nil {
		return r, err
	}
	r.Trimmed = true

	// the last loadable segment (highest address) must hold the buffer
	last := -1
	for i, p := range f.Progs {
		if p.Type == elf.PT_LOAD && (last < 0 || p.Vaddr > f.Progs[last].Vaddr) {
			last = i
		}
	}
	if last < 0 {
		return r, fmt.Errorf("%w: no loadable segment", ErrLayout)
	}
	p := f.Progs[last]
	r.Segment = last
	r.memszOff = phdrOffset(data) + int64(last)*56 + 40
	end := p.Vaddr + p.Memsz
	begin := scratch.Value
	switch {
	case heapStart != 0:
		// trimmed before: the segment must end where the buffer begins
		if end != begin || heapStart != alignUp(begin, pageSize) {
			return r, fmt.Errorf("%w: trim record %#x, segment end %#x, buffer at %#x: not what elftrim writes", ErrLayout, heapStart, end, begin)
		}
		r.Already = true
		r.NewEnd, r.HeapStart = end, heapStart
		r.OldEnd = begin + scratch.Size
		r.Saved = r.OldEnd - r.NewEnd
		return r, nil
	case begin < p.Vaddr+p.Filesz || begin+scratch.Size != end:
		return r, fmt.Errorf("%w: %s [%#x, %#x) is not the zero-filled end of the last loadable segment [%#x, %#x) (file part to %#x)",
			ErrLayout, ScratchSymbol, begin, begin+scratch.Size, p.Vaddr, end, p.Vaddr+p.Filesz)
	}
	// nothing else with a size may lie in the cut-off part
	for _, s := range syms {
		if s.Size == 0 || s.Name == ScratchSymbol || elf.ST_TYPE(s.Info) == elf.STT_SECTION {
			continue
		}
		if s.Value < end && s.Value+s.Size > begin {
			return r, fmt.Errorf("%w: %s [%#x, %#x) shares the cut-off part with %s", ErrLayout, s.Name, s.Value, s.Value+s.Size, ScratchSymbol)
		}
	}
	// the section holding the buffer (.noptrbss) ends with it too
	r.sectSizeOff = -1
	for i, s := range f.Sections {
		if s.Flags&elf.SHF_ALLOC == 0 || s.Type != elf.SHT_NOBITS || begin < s.Addr || begin >= s.Addr+s.Size {
			continue
		}
		if s.Addr+s.Size != end {
			return r, fmt.Errorf("%w: section %s [%#x, %#x) does not end with the segment at %#x", ErrLayout, s.Name, s.Addr, s.Addr+s.Size, end)
		}
		r.sectSizeOff = shdrOffset(data) + int64(i)*64 + 32 // sh_size
		r.newSectSize = begin - s.Addr
	}
	if r.sectSizeOff < 0 {
		return r, fmt.Errorf("%w: no NOBITS section holds %s", ErrLayout, ScratchSymbol)
	}
	r.OldEnd, r.NewEnd = end, begin
	r.HeapStart = alignUp(begin, pageSize)
	r.Saved = end - begin
	return r, nil
}

// checkFIPS refuses images whose build settings turn FIPS 140-3 mode on:
// a default GODEBUG fips140=on/only/debug (go.mod godebug, //go:debug) or
// a frozen module (GOFIPS140), which defaults to it.
func checkFIPS(data []byte) error {
	info, err := buildinfo.Read(bytes.NewReader(data))
	if err != nil {
		return fmt.Errorf("%w: build info: %v", ErrNotImage, err)
	}
	for _, s := range info.Settings {
		switch s.Key {
		case "DefaultGODEBUG":
			for _, kv := range strings.Split(s.Value, ",") {
				if k, v, _ := strings.Cut(kv, "="); k == "fips140" && v != "off" {
					return fmt.Errorf("%w: built with GODEBUG fips140=%s", ErrFIPS, v)
				}
			}
		case "GOFIPS140":
			if s.Value != "off" && s.Value != "" {
				return fmt.Errorf("%w: built with GOFIPS140=%s", ErrFIPS, s.Value)
			}
		}
	}
	return nil
}

// fileOffset returns where n bytes at address addr are in the file.
func fileOffset(f *elf.File, size, addr, n uint64) (int64, error) {
	for _, s := range f.Sections {
		if s.Type == elf.SHT_NOBITS || s.Flags&elf.SHF_ALLOC == 0 {
			continue
		}
		if addr >= s.Addr && addr+n <= s.Addr+s.Size {
			off := s.Offset + addr - s.Addr
			if off+n > size || off+n < off {
				break
			}
			return int64(off), nil
		}
	}
	return 0, fmt.Errorf("%#x is not in the file's data", addr)
}

// phdrOffset and shdrOffset read e_phoff and e_shoff of an Elf64_Ehdr.
func phdrOffset(data []byte) int64 { return int64(binary.LittleEndian.Uint64(data[32:])) }
func shdrOffset(data []byte) int64 { return int64(binary.LittleEndian.Uint64(data[40:])) }

func alignUp(v, a uint64) uint64 { return (v + a - 1) &^ (a - 1) }
