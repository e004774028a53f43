package smp

// The runtime-offset record. Hosting more Ms than vCPUs
// (hosting_tamago.go) needs three offsets inside the runtime's
// structures that no API gives: where an M keeps its P (runtime.m.p),
// its semaphore count (runtime.m.mOS.waitsemacount, raised by
// semawakeup) and a P's status (runtime.p.status), and the code of
// runtime.notesleep, which it mends (notesleep.go). `gozen-image
// symbols` (package imagesyms) reads the offsets from the image's DWARF
// and the function from its symbol table, and writes them into this
// record in the image's data, as it writes boot's runtime-symbol record.
// An image without them (built another way, or from a runtime whose
// structures differ) runs as before: one M per vCPU, and a clear stop
// when the runtime asks for more.
const (
	// OffsetsSymbol is the linker name of the record: OffsetsMagic, then
	// the offset of each field of RuntimeFields in order, plus one (0:
	// not written), then the address and size of each function of
	// RuntimeFuncs, as little-endian uint64s.
	OffsetsSymbol = "github.com/gozen-dev/gozen/arch/amd64/smp.runtimeOffsets"
	// OffsetsMagic is the record's first word ("gozenoff" read as bytes).
	OffsetsMagic = 0x66666f6e657a6f67
)

// Field names a member of a Go struct type as DWARF names them: Type is
// the type's linker name, Path the member, with dots through embedded
// or nested structs.
type Field struct {
	Type, Path string
	// Size is the member's size in bytes.
	Size int64
}

// RuntimeFields are the fields whose offsets the record holds, in order.
var RuntimeFields = [...]Field{
	{Type: "runtime.m", Path: "p", Size: 8},
	{Type: "runtime.m", Path: "mOS.waitsemacount", Size: 4},
	{Type: "runtime.p", Path: "status", Size: 4},
}

// RuntimeFuncs are the functions whose address and size the record
// holds, in order.
var RuntimeFuncs = [...]string{"runtime.notesleep"}

// OffsetsWords is the record's length in 8-byte words.
const OffsetsWords = 1 + len(RuntimeFields) + 2*len(RuntimeFuncs)

// runtimeOffsets is the runtime-offset record (see OffsetsSymbol).
var runtimeOffsets = [OffsetsWords]uint64{OffsetsMagic}

// FuncRecord returns the address and size of function i of RuntimeFuncs
// as the record holds them (0, 0: not written).
func FuncRecord(i int) (addr, size uintptr) {
	if runtimeOffsets[0] != OffsetsMagic || i < 0 || i >= len(RuntimeFuncs) {
		return 0, 0
	}
	w := 1 + len(RuntimeFields) + 2*i
	return uintptr(runtimeOffsets[w]), uintptr(runtimeOffsets[w+1])
}

// OffsetRecord returns the offsets the record holds, in the order of
// RuntimeFields, and whether all of them were written.
func OffsetRecord() (offs [len(RuntimeFields)]uintptr, ok bool) {
	if runtimeOffsets[0] != OffsetsMagic {
		return offs, false
	}
	for i := range offs {
		v := runtimeOffsets[1+i]
		if v == 0 || v > 1<<20 {
			return [len(RuntimeFields)]uintptr{}, false
		}
		offs[i] = uintptr(v - 1)
	}
	return offs, true
}
