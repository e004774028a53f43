//go:build tamago

package boot

import _ "unsafe"

// Memory layout. The image is linked with its text at 0x110000
// (Makefile: -T 0x110000 -R 0x1000, build tags linkcpuinit,linkramstart);
// the runtime's RAM starts at 1 MiB and ends where the memory-map RAM entry
// holding it ends (at most 0xfee00000). The entry code (entry_amd64.s) keeps
// its page tables, GDT and boot stack in 0x1000-0x9fff.

//go:linkname ramStart runtime/goos.RamStart
var ramStart uint64 = 0x100000

//go:linkname ramSize runtime/goos.RamSize
var ramSize uint64 // set by cpuinit from the memory map

// ramStackOffset is how far below the end of RAM the entry code starts
// the runtime's stack (set by the tamago amd64 package).
//
//go:linkname ramStackOffset runtime/goos.RamStackOffset
var ramStackOffset uint64

// heapBase is where the runtime's heap starts (the image's end, or the
// trimmed image's; set by the entry code). Memory from there to the end of
// RAM is the runtime's heap and stacks.
var heapBase uint64

// The memory floor's terms (see Floor), for the entry code.
var (
	floorEarly uint64 = EarlyHeap
	floorTop   uint64 = HeapArena + StackArea
)

// Filled in by cpuinit before the runtime starts.
var (
	entryTSC        uint64 // the TSC at cpuinit's first instruction
	xenCPUIDBase    uint32
	hypercallPages  [2 * 4096]byte
	hypercallPage   uintptr
	startInfoAddr   uint64
	startInfoRaw    [startInfoSize]byte
	memmapEntries   uint32
	memmapStride    uint64 // 24 (start info) or 20 (XENMEM_memory_map)
	memmapRaw       [maxMemmap*memmapEntrySize + 8]byte
	cmdlineRaw      [2048]byte
	sharedInfoPages [2 * 4096]byte
	sharedInfoPage  uintptr
	vcpuTime        [4]uint64 // struct vcpu_time_info, 8-byte aligned
	vcpuTimeResult  int64
)

// Messages cpuinit prints before it crashes the domain.
var (
	msgNotXen       = "gozen: not running on Xen (no Xen CPUID leaves); this image boots only as a Xen PVH domain\n"
	msgBadMagic     = "gozen: bad hvm_start_info magic (expected 0x336ec578): not started through the PVH entry\n"
	msgNoRAM        = "gozen: the memory map has no RAM at 1 MiB where the image is loaded\n"
	msgTooSmallNeed = "gozen: domain memory too small: RAM must reach "
	msgTooSmallHave = "(a 4 MiB heap arena past the image, aligned, and the stack area) but ends at "
	msgTooSmall     = "\ngozen: raise memory= in the xl config\n"
	msgSharedInfo   = "gozen: XENMEM_add_to_physmap of the shared-info page failed\n"
)

func outb(port uint16, val byte)
func xenShutdown(reason uint32)
func cli()
func sti()

// goosExit sets the runtime's exit hook statically, so that even a fatal
// error before hwinit1 (say, out of memory in the runtime's own set-up)
// shuts the domain down instead of spinning.
//
//go:linkname goosExit runtime/goos.Exit
var goosExit = exit

func rdtsc() uint64
