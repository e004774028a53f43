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
const (
	// MinFree is what the domain's RAM must hold past the image's loaded
	// end (the last PT_LOAD's end): 8 MiB for the heap and the runtime's
	// 1 MiB stack area (amd64.ramStackOffset). A smaller domain stops at
	// entry with "gozen: domain memory too small". The runtime maps its
	// heap in 4 MiB-aligned arenas below the stack area's 64 KiB g0 stack,
	// so how many whole arenas fit depends on where the image ends (one
	// for hello, from 4 to 8 MiB, at its 13 MiB floor; see the README,
	// "Footprint").
	MinFree = 9 << 20

	// TrimSymbol is the linker name of the record: two little-endian
	// uint64s, TrimMagic and the heap start (0 in an untrimmed image).
	TrimSymbol = "github.com/gozen-dev/gozen/boot.imageTrim"
	// TrimMagic is the record's first word ("gozentrm" read as bytes).
	TrimMagic = 0x6d72746e657a6f67
)

// imageTrim is the image-trim record: TrimMagic, then 0, or, in an image
// `gozen-image trim` cut short before Go's FIPS entropy buffer, the
// page-aligned end of what the domain builder backs. There the entry code
// (entry_amd64.s) starts the Go heap and measures the image's end.
var imageTrim = [2]uint64{TrimMagic, 0}

// Trimmed reports whether the running image was trimmed of Go's FIPS
// entropy buffer, and if so where its Go heap starts (elftrim's tests
// trim host programs too; only GOOS=tamago images start the heap there).
func Trimmed() (heapStart uint64, ok bool) { return imageTrim[1], imageTrim[1] != 0 }
