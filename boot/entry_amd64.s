//go:build tamago

// PVH entry for Gozen (linked with the `linkcpuinit` build tag, which drops
// TamaGo's own cpuinit).
//
// Xen enters a PVH domain at the XEN_ELFNOTE_PHYS32_ENTRY address (the ELF
// entry, see the compiler's .note.go.pvh) in 32-bit protected mode, paging
// off, with EBX holding the physical address of struct hvm_start_info.
//
// This code:
//  0. reads the TSC into entryTSC (the domain's entry time, see SinceEntry);
//  1. keeps EBX, builds identity page tables for the low 4 GiB (write-back,
//     the null page unmapped, the LAPIC page uncacheable) and a GDT, all in
//     low memory (0x1000-0x9fff), and enters long mode;
//  2. finds Xen through the CPUID hypervisor leaves and installs the
//     hypercall page;
//  3. checks the start-info magic and copies start info, memory map and
//     command line into the image (the domain builder puts them just past
//     the image, where the Go heap will grow);
//  4. sizes the runtime's RAM from the memory map and, in an image trimmed
//     of Go's FIPS entropy buffer (trim.go), starts the heap where what the
//     domain builder backs ends;
//  5. maps the shared-info page, so the clock works from the first
//     nanotime call;
//  6. sets the runtime stack and jumps to the Go runtime.
// Fatal conditions print one line on the early console (port 0xE9) and
// crash the domain with SCHEDOP_shutdown.

#include "textflag.h"

#define PML4      0x1000
#define PDPT      0x2000
#define PD0       0x3000	// PD0..PD3 are contiguous: 2048 2 MiB entries
#define PT_LOW    0x7000	// 4 KiB entries for 0-2 MiB
#define PT_LAPIC  0x8000	// 4 KiB entries for 0xfee00000-0xffffffff
#define GDT       0x9000
#define GDTR      0x9020
#define BOOTSTACK 0xa000

#define MSR_EFER  0xc0000080
#define START_INFO_MAGIC 0x336ec578
#define MAX_MEMMAP 128
#define MAX_CMDLINE 2048

TEXT cpuinit(SB),NOSPLIT|NOFRAME,$0
	RDTSC				// the domain's first instruction: its entry time
	CLI
	MOVL	BX, SI			// hvm_start_info, kept in ESI
	MOVL	$BOOTSTACK, SP
	// keep the TSC in entryTSC (see SinceEntry); the symbol's address is
	// PC-relative as below, so add the PC
	MOVL	AX, BP
	CALL	·pc<>(SB)
	MOVL	$·entryTSC(SB), BX
	ADDL	$6, AX
	ADDL	BX, AX
	MOVL	BP, 0(AX)
	MOVL	DX, 4(AX)

	// clear PML4..PT_LAPIC (8 pages)
	CLD
	XORL	AX, AX
	MOVL	$PML4, DI
	MOVL	$0x8000, CX
	REP;	STOSB

	MOVL	$PML4, DI
	MOVL	$(PDPT|3), (DI)
	MOVL	$PDPT, DI
	MOVL	$(PD0|3), 0(DI)
	MOVL	$(PD0+0x1000|3), 8(DI)
	MOVL	$(PD0+0x2000|3), 16(DI)
	MOVL	$(PD0+0x3000|3), 24(DI)

	// 2048 entries of 2 MiB: PS|RW|P
	MOVL	$PD0, DI
	MOVL	$0x83, AX
pd_loop:
	MOVL	AX, (DI)
	ADDL	$8, DI
	ADDL	$0x200000, AX
	CMPL	DI, $(PD0+0x4000)
	JB	pd_loop

	// first 2 MiB in 4 KiB pages, page 0 left not-present
	MOVL	$(PT_LOW+8), DI
	MOVL	$0x1003, AX
ptlow_loop:
	MOVL	AX, (DI)
	ADDL	$8, DI
	ADDL	$0x1000, AX
	CMPL	DI, $(PT_LOW+0x1000)
	JB	ptlow_loop
	MOVL	$PD0, DI
	MOVL	$(PT_LOW|3), (DI)

	// 0xfee00000-0xffffffff in 4 KiB pages, LAPIC page PCD|PWT
	MOVL	$PT_LAPIC, DI
	MOVL	$0xfee00003, AX
ptlapic_loop:
	MOVL	AX, (DI)
	ADDL	$8, DI
	ADDL	$0x1000, AX
	CMPL	DI, $(PT_LAPIC+0x1000)
	JB	ptlapic_loop
	MOVL	$PT_LAPIC, DI
	ORL	$0x18, (DI)
	MOVL	$(PD0+8*2039), DI	// 0xfee00000 >> 21 == 2039
	MOVL	$(PT_LAPIC|3), (DI)

	// GDT: null, 64-bit code (0x08), data (0x10)
	MOVL	$GDT, DI
	MOVL	$0, 0(DI)
	MOVL	$0, 4(DI)
	MOVL	$0, 8(DI)
	MOVL	$0x00209a00, 12(DI)
	MOVL	$0, 16(DI)
	MOVL	$0x00009200, 20(DI)
	MOVL	$GDTR, DI
	MOVL	$((GDT<<16)|23), 0(DI)	// limit 23, base low 16 bits
	MOVL	$0, 4(DI)		// base bits 16-47: GDT < 64 KiB
	MOVL	$0, 8(DI)
	LGDT	(DI)

	// long mode: PAE, EFER.LME, CR3, paging
	MOVL	CR4, AX
	ORL	$(1<<5), AX
	MOVL	AX, CR4
	MOVL	$PML4, AX
	MOVL	AX, CR3
	MOVL	$MSR_EFER, CX
	RDMSR
	ORL	$(1<<8), AX
	WRMSR
	MOVL	CR0, AX
	ORL	$(1<<31|1<<0), AX
	MOVL	AX, CR0

	// far return to ·long64: the assembler encodes the address as
	// PC-relative, which a 32-bit CPU reads as absolute, so add the PC.
	CALL	·pc<>(SB)
	MOVL	$·long64<>(SB), BX
	ADDL	$6, AX
	ADDL	BX, AX
	PUSHQ	$0x08
	PUSHQ	AX
	RETFQ

// pc returns its return address in AX (valid in 32-bit mode).
TEXT ·pc<>(SB),NOSPLIT|NOFRAME,$0
	MOVL	(SP), AX
	RET

TEXT ·long64<>(SB),NOSPLIT|NOFRAME,$0
	MOVL	$0x10, AX
	BYTE $0x8e; BYTE $0xd8	// MOV DS, AX
	BYTE $0x8e; BYTE $0xc0	// MOV ES, AX
	BYTE $0x8e; BYTE $0xd0	// MOV SS, AX
	MOVL	SI, R12			// start info (zero-extended)
	MOVQ	$BOOTSTACK, SP
	CALL	sse_enable(SB)

	// --- Xen CPUID leaves ---
	MOVL	$0x40000000, R8
xen_loop:
	MOVL	R8, AX
	XORL	CX, CX
	CPUID
	CMPL	BX, $0x566e6558		// "XenV"
	JNE	xen_next
	CMPL	CX, $0x65584d4d		// "MMXe"
	JNE	xen_next
	CMPL	DX, $0x4d4d566e		// "nVMM"
	JNE	xen_next
	LEAL	2(R8), BX
	CMPL	AX, BX
	JAE	xen_found
xen_next:
	ADDL	$0x100, R8
	CMPL	R8, $0x40010000
	JB	xen_loop
	MOVQ	$·msgNotXen(SB), SI
	JMP	·fatal<>(SB)

xen_found:
	MOVL	R8, ·xenCPUIDBase(SB)
	LEAL	2(R8), AX
	XORL	CX, CX
	CPUID				// EBX = hypercall page MSR
	MOVL	BX, CX
	MOVQ	$·hypercallPages(SB), AX
	ADDQ	$4095, AX
	ANDQ	$~4095, AX
	MOVQ	AX, ·hypercallPage(SB)
	MOVQ	AX, DX
	SHRQ	$32, DX
	WRMSR

	// --- start info ---
	CMPL	R12, $0xfffff000
	JAE	bad_magic
	CMPL	(R12), $START_INFO_MAGIC
	JNE	bad_magic
	MOVQ	R12, ·startInfoAddr(SB)
	MOVQ	R12, SI
	MOVQ	$·startInfoRaw(SB), DI
	MOVQ	$56, CX
	REP;	MOVSB

	// memory map (start info version >= 1)
	CMPL	4(R12), $1
	JB	no_memmap
	MOVL	48(R12), CX
	MOVL	CX, ·memmapEntries(SB)
	CMPL	CX, $MAX_MEMMAP
	JBE	memmap_n_ok
	MOVL	$MAX_MEMMAP, CX
memmap_n_ok:
	MOVQ	40(R12), SI
	MOVQ	SI, AX
	SHRQ	$32, AX
	JNZ	no_memmap		// not below 4 GiB: not mapped here
	IMULQ	$24, CX
	MOVQ	$·memmapRaw(SB), DI
	REP;	MOVSB
	MOVQ	$24, ·memmapStride(SB)
	JMP	memmap_done
no_memmap:
	// start info v0 (Xen 4.17 gives dom0 that): ask XENMEM_memory_map,
	// which returns packed 20-byte struct e820entry records.
	SUBQ	$16, SP
	MOVL	$MAX_MEMMAP, 0(SP)	// nr_entries in/out
	MOVL	$0, 4(SP)
	MOVQ	$·memmapRaw(SB), AX
	MOVQ	AX, 8(SP)		// buffer
	MOVQ	$9, DI			// XENMEM_memory_map
	MOVQ	SP, SI
	MOVQ	·hypercallPage(SB), AX
	ADDQ	$(12*32), AX		// memory_op
	CALL	AX
	MOVL	0(SP), CX
	ADDQ	$16, SP
	TESTQ	AX, AX
	JNZ	memmap_done		// no map: the RAM search below fails clearly
	MOVL	CX, ·memmapEntries(SB)
	MOVQ	$20, ·memmapStride(SB)
memmap_done:

	// command line, NUL-terminated, truncated to MAX_CMDLINE-1 bytes
	MOVQ	24(R12), SI
	TESTQ	SI, SI
	JZ	cmdline_done
	MOVQ	SI, AX
	SHRQ	$32, AX
	JNZ	cmdline_done
	MOVQ	$·cmdlineRaw(SB), DI
	MOVQ	$(MAX_CMDLINE-1), CX
cmdline_loop:
	MOVB	(SI), AX
	TESTB	AL, AL
	JZ	cmdline_done
	MOVB	AX, (DI)
	INCQ	SI
	INCQ	DI
	DECQ	CX
	JNZ	cmdline_loop
cmdline_done:

	// --- RAM: the type-1 entry holding RamStart ---
	MOVL	·memmapEntries(SB), CX
	CMPL	CX, $MAX_MEMMAP
	JBE	ram_n_ok
	MOVL	$MAX_MEMMAP, CX
ram_n_ok:
	MOVQ	$·memmapRaw(SB), SI
	MOVQ	runtime∕goos·RamStart(SB), BX
	XORQ	R9, R9			// end of RAM found
ram_loop:
	TESTL	CX, CX
	JZ	ram_done
	CMPL	16(SI), $1
	JNE	ram_next
	MOVQ	0(SI), AX
	CMPQ	AX, BX
	JA	ram_next
	ADDQ	8(SI), AX
	CMPQ	AX, BX
	JBE	ram_next
	MOVQ	AX, R9
ram_next:
	ADDQ	·memmapStride(SB), SI
	DECL	CX
	JMP	ram_loop
ram_done:
	TESTQ	R9, R9
	JNZ	ram_found
	MOVQ	$·msgNoRAM(SB), SI
	JMP	·fatal<>(SB)
ram_found:
	MOVQ	$0xfee00000, AX		// stay below the LAPIC and 4 GiB
	CMPQ	R9, AX
	JBE	ram_clamped
	MOVQ	AX, R9
ram_clamped:
	// the image's end: runtime·end, or, in a trimmed image (see trim.go),
	// the end of what the domain builder backs, where the heap starts
	MOVQ	$runtime·end(SB), AX
	MOVQ	·imageTrim+8(SB), BX
	TESTQ	BX, BX
	JZ	image_end
	MOVQ	BX, runtime∕goos·Bloc(SB)
	MOVQ	BX, AX
image_end:
	MOVQ	AX, ·heapBase(SB)
	// enough for the image, one heap arena and the stack? (boot.Floor)
	ADDQ	·floorEarly(SB), AX
	ADDQ	$0x3fffff, AX
	ANDQ	$-0x400000, AX
	ADDQ	·floorTop(SB), AX
	CMPQ	AX, R9
	JBE	ram_ok
	MOVQ	AX, R13
	MOVQ	$·msgTooSmallNeed(SB), SI
	CALL	·print<>(SB)
	MOVQ	R13, AX
	CALL	·hex<>(SB)
	MOVQ	$·msgTooSmallHave(SB), SI
	CALL	·print<>(SB)
	MOVQ	R9, AX
	CALL	·hex<>(SB)
	MOVQ	$·msgTooSmall(SB), SI
	JMP	·fatal<>(SB)
ram_ok:
	MOVQ	R9, AX
	SUBQ	runtime∕goos·RamStart(SB), AX
	MOVQ	AX, runtime∕goos·RamSize(SB)

	// --- shared info: XENMEM_add_to_physmap(DOMID_SELF, shared_info, 0, gpfn) ---
	MOVQ	$·sharedInfoPages(SB), AX
	ADDQ	$4095, AX
	ANDQ	$~4095, AX
	MOVQ	AX, ·sharedInfoPage(SB)
	SHRQ	$12, AX
	SUBQ	$32, SP
	MOVL	$0x7ff0, 0(SP)		// domid DOMID_SELF, size 0
	MOVL	$0, 4(SP)		// XENMAPSPACE_shared_info
	MOVQ	$0, 8(SP)		// idx
	MOVQ	AX, 16(SP)		// gpfn
	MOVQ	$7, DI			// XENMEM_add_to_physmap
	MOVQ	SP, SI
	MOVQ	·hypercallPage(SB), AX
	ADDQ	$(12*32), AX		// memory_op
	CALL	AX
	ADDQ	$32, SP
	TESTQ	AX, AX
	JZ	shinfo_ok
	MOVQ	$·msgSharedInfo(SB), SI
	JMP	·fatal<>(SB)
shinfo_ok:

	// --- a vCPU time area: Xen fills it at once and keeps it current ---
	SUBQ	$16, SP
	MOVQ	$·vcpuTime(SB), AX
	MOVQ	AX, 0(SP)
	MOVQ	$13, DI			// VCPUOP_register_vcpu_time_memory_area
	XORQ	SI, SI			// vCPU 0
	MOVQ	SP, DX
	MOVQ	·hypercallPage(SB), AX
	ADDQ	$(24*32), AX		// vcpu_op
	CALL	AX
	ADDQ	$16, SP
	MOVQ	AX, ·vcpuTimeResult(SB)

	// --- runtime stack at the top of RAM ---
	MOVQ	runtime∕goos·RamStart(SB), SP
	ADDQ	runtime∕goos·RamSize(SB), SP
	SUBQ	runtime∕goos·RamStackOffset(SB), SP
	STI
	JMP	_rt0_tamago_start(SB)

bad_magic:
	MOVQ	$·msgBadMagic(SB), SI
	JMP	·fatal<>(SB)

// fatal prints the Go string at SI (a string header) to port 0xE9 and
// crashes the domain (SCHEDOP_shutdown, SHUTDOWN_crash) when the hypercall
// page is installed; it never returns.
TEXT ·fatal<>(SB),NOSPLIT|NOFRAME,$0
	CALL	·print<>(SB)
	MOVQ	·hypercallPage(SB), AX
	TESTQ	AX, AX
	JZ	fatal_halt
	MOVQ	$BOOTSTACK, SP
	SUBQ	$16, SP
	MOVL	$3, 0(SP)		// SHUTDOWN_crash
	MOVQ	$2, DI			// SCHEDOP_shutdown
	MOVQ	SP, SI
	ADDQ	$(29*32), AX		// sched_op
	CALL	AX
fatal_halt:
	CLI
	HLT
	JMP	fatal_halt

// hex prints RAX as 16 hex digits and a space on port 0xE9.
TEXT ·hex<>(SB),NOSPLIT|NOFRAME,$0
	MOVQ	AX, R11
	MOVQ	$16, CX
	MOVW	$0xe9, DX
hex_loop:
	ROLQ	$4, R11
	MOVQ	R11, AX
	ANDQ	$15, AX
	CMPQ	AX, $10
	JB	hex_digit
	ADDQ	$('a'-'0'-10), AX
hex_digit:
	ADDQ	$'0', AX
	OUTB
	DECQ	CX
	JNZ	hex_loop
	MOVQ	$' ', AX
	OUTB
	RET

// print writes the Go string whose header is at SI to port 0xE9.
TEXT ·print<>(SB),NOSPLIT|NOFRAME,$0
	MOVQ	8(SI), CX
	MOVQ	0(SI), SI
	MOVW	$0xe9, DX
print_loop:
	TESTQ	CX, CX
	JZ	print_done
	MOVB	(SI), AX
	OUTB
	INCQ	SI
	DECQ	CX
	JMP	print_loop
print_done:
	RET
