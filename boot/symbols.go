package boot

// The runtime-symbol record. The zero-page release around a suspend
// (release_tamago.go) needs to know how far the Go runtime has raised its
// break: the runtime's sbrk clears memory as it first hands it out and
// never reads memory above its high-water mark (runtime.blocMax), so the
// frames above it need no scan before a suspend and no clearing after it.
// The Go linker refuses a //go:linkname pull of a runtime variable, so
// `gozen-image symbols` (package imagesyms, run by the Makefile on every
// guest ELF) writes the addresses of the variables named by
// RuntimeSymbols, read from the ELF's symbol table, into this record in
// the image's data. An image without them (built another way, or from a
// runtime whose variables differ) still suspends: every released frame is
// then scanned before and cleared after.
const (
	// SymbolsSymbol is the linker name of the record: SymbolsMagic, then
	// the address of each variable of RuntimeSymbols in order (0 when not
	// written), as little-endian uint64s.
	SymbolsSymbol = "github.com/gozen-dev/gozen/boot.imageSymbols"
	// SymbolsMagic is the record's first word ("gozensym" read as bytes).
	SymbolsMagic = 0x6d79736e657a6f67
)

// RuntimeSymbols names the runtime variables whose addresses the record
// holds, in order: the runtime's break (runtime.bloc), its high-water mark
// (runtime.blocMax) and the lock held while either changes
// (runtime.memlock). Each is one 8-byte word.
var RuntimeSymbols = [...]string{"runtime.bloc", "runtime.blocMax", "runtime.memlock"}

// imageSymbols is the runtime-symbol record (see SymbolsSymbol).
var imageSymbols = [1 + len(RuntimeSymbols)]uint64{SymbolsMagic}

// SymbolRecord returns the addresses the runtime-symbol record holds, in
// the order of RuntimeSymbols: all 0 in an image that gozen-image symbols
// did not write, or whose runtime lacks one of them.
func SymbolRecord() (addrs [len(RuntimeSymbols)]uint64) {
	if imageSymbols[0] == SymbolsMagic {
		copy(addrs[:], imageSymbols[1:])
	}
	return addrs
}

// runtimeBreak checks what the record's variables read and returns the
// runtime's break high-water mark. bloc, blocMax and lock are their
// values; heapBase is where the runtime's heap starts, stackLo the lowest
// address of the boot stack above it, inUse the end of memory the runtime
// is known to have handed out (which must lie below its break). ok is
// false when the values are not what a consistent break reads as: the
// lock held (another vCPU may be in the middle of raising the break,
// with memory above blocMax half cleared), a break not page-aligned, out
// of order or outside [heapBase, stackLo].
//
//go:nosplit
func runtimeBreak(bloc, blocMax, lock, heapBase, stackLo, inUse uint64) (uint64, bool) {
	switch {
	case lock != 0,
		bloc&0xfff != 0 || blocMax&0xfff != 0,
		bloc < heapBase || bloc > blocMax || blocMax > stackLo,
		inUse > bloc:
		return 0, false
	}
	return blocMax, true
}
