package boot

// The image-trim record. Every Gozen image links Go's FIPS 140-3 entropy
// scratch buffer (crypto/internal/fips140/drbg.memory, 32 MiB of .noptrbss)
// as the last thing of its last loadable segment. Nothing touches it unless
// FIPS 140-3 mode is on, but Xen's domain builder backs every byte of a
// segment's p_memsz, so `gozen-image trim` (run by the Makefile on every
// guest ELF, package elftrim) cuts the segment short before the buffer and
// writes the first page past what is left into this record, in the image's
// data. The entry code then starts the Go heap there (runtime/goos.Bloc)
// instead of at the end of the whole image, and boot refuses to run a
// trimmed image in FIPS 140-3 mode.
// The memory floor. The runtime maps its heap in HeapArena-sized,
// HeapArena-aligned arenas, the first after what it takes from the heap's
// start at boot (EarlyHeap at most), and the arenas must end below the
// stack area at the top of RAM (StackArea). A domain whose RAM ends below
// Floor(the image's end) stops at entry with "gozen: domain memory too
// small" (it would otherwise run out of memory before main).
const (
	// HeapArena is the size and alignment of the runtime's heap arenas
	// on GOOS=tamago (its heapArenaBytes, 4 MiB).
	HeapArena = 4 << 20
	// EarlyHeap bounds what the runtime takes from the heap's start
	// before its first arena (the page allocator's summaries and the
	// like, a few hundred KiB), with room to spare.
	EarlyHeap = 1 << 20
	// StackArea is what the runtime keeps at the top of RAM: the 1 MiB
	// stack area (amd64.ramStackOffset) and the 64 KiB g0 stack below it.
	StackArea = 1<<20 + 64<<10

	// TrimSymbol is the linker name of the record: two little-endian
	// uint64s, TrimMagic and the heap start (0 in an untrimmed image).
	TrimSymbol = "github.com/gozen-dev/gozen/boot.imageTrim"
	// TrimMagic is the record's first word ("gozentrm" read as bytes).
	TrimMagic = 0x6d72746e657a6f67
)

// Floor returns the lowest end of RAM (a guest-physical address) that an
// image whose loaded part ends at end boots in: one heap arena, aligned
// past what the runtime takes first, below the stack area. See the README,
// "Footprint".
func Floor(end uint64) uint64 {
	first := (end + EarlyHeap + HeapArena - 1) &^ (HeapArena - 1)
	return first + HeapArena + StackArea
}

// imageTrim is the image-trim record: TrimMagic, then 0, or, in an image
// `gozen-image trim` cut short before Go's FIPS entropy buffer, the
// page-aligned end of what the domain builder backs. There the entry code
// (entry_amd64.s) starts the Go heap and measures the image's end.
var imageTrim = [2]uint64{TrimMagic, 0}

// Trimmed reports whether the running image was trimmed of Go's FIPS
// entropy buffer, and if so where its Go heap starts (elftrim's tests
// trim host programs too; only GOOS=tamago images start the heap there).
func Trimmed() (heapStart uint64, ok bool) { return imageTrim[1], imageTrim[1] != 0 }
