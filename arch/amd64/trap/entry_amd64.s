//go:build tamago

#include "textflag.h"

// The interrupt entry slots (SetHandler). A slot's gate takes the
// interrupt on the stack it stopped (no IST: see entry_tamago.go), then
// the slot moves to this vCPU's interrupt stack, found through the
// per-vCPU record at the GS base, calls its handler and returns.
//
// The record's entry words (EntryOffset): depth at +0 (-1 outside any
// slot), the stopped stack pointer at +8, the interrupt stack's top at +16.

// INCQ GS:232
#define INC_DEPTH	BYTE $0x65; BYTE $0x48; BYTE $0xff; BYTE $0x04; BYTE $0x25; LONG $232
// DECQ GS:232
#define DEC_DEPTH	BYTE $0x65; BYTE $0x48; BYTE $0xff; BYTE $0x0c; BYTE $0x25; LONG $232
// MOVQ SP, GS:240
#define SAVE_SP		BYTE $0x65; BYTE $0x48; BYTE $0x89; BYTE $0x24; BYTE $0x25; LONG $240
// MOVQ GS:248, SP
#define LOAD_TOP	BYTE $0x65; BYTE $0x48; BYTE $0x8b; BYTE $0x24; BYTE $0x25; LONG $248
// PUSHQ GS:240
#define PUSH_SAVED	BYTE $0x65; BYTE $0xff; BYTE $0x34; BYTE $0x25; LONG $240

// SLOT(name, k) is entry slot k. Only memory operands and SP are used before the
// general registers it needs are saved, and the flags are the CPU's to
// restore (IRETQ). The first entry on this vCPU (depth -1 to 0) switches
// to the interrupt stack; an entry while one runs (the same interrupt
// delivered twice, with interrupts off, which a hypervisor can do: see
// entry_tamago.go) stays on the stack it arrived on, so neither frame is
// overwritten. Either way the stack pointer to return to is pushed first
// and popped last. A frame whose RIP is this slot's own first
// instruction is such a second delivery: it is counted in redelivered.
// A frame whose RIP is a HLT instruction was stopped before that HLT ran
// (a HLT that ran and woke leaves RIP past it): the slot moves RIP past
// the HLT, so that the wake-up this interrupt is does not end in a HLT
// after it, and counts it in haltsSkipped (see HaltsSkipped).
#define SLOT(name, k) \
TEXT name(SB),NOSPLIT|NOFRAME,$0; \
	INC_DEPTH; \
	JNE	nested; \
	SAVE_SP; \
	LOAD_TOP; \
	PUSH_SAVED; \
	JMP	run; \
nested: \
	PUSHQ	SP; \
run: \
	PUSHQ	AX; \
	PUSHQ	BX; \
	MOVQ	16(SP), AX; \
	MOVQ	(AX), BX; \
	CMPB	(BX), $0xf4; \
	JNE	nohlt; \
	INCQ	(AX); \
	LOCK; \
	INCQ	·haltsSkipped(SB); \
nohlt: \
	MOVQ	$name(SB), AX; \
	CMPQ	BX, AX; \
	JNE	call; \
	LOCK; \
	INCQ	·redelivered(SB); \
call: \
	LOCK; \
	INCQ	·entries+(k*8)(SB); \
	MOVQ	·handlers+(k*8)(SB), AX; \
	CALL	AX; \
	POPQ	BX; \
	POPQ	AX; \
	POPQ	SP; \
	DEC_DEPTH; \
	IRETQ

SLOT(·slot0, 0)
SLOT(·slot1, 1)
SLOT(·slot2, 2)
SLOT(·slot3, 3)
SLOT(·slot4, 4)
SLOT(·slot5, 5)
SLOT(·slot6, 6)
SLOT(·slot7, 7)

// func slotAddrs() *[slots]uintptr
TEXT ·slotAddrs(SB),NOSPLIT,$0-8
	MOVQ	$·slotTable(SB), AX
	MOVQ	AX, ret+0(FP)
	RET

DATA	·slotTable+0(SB)/8, $·slot0(SB)
DATA	·slotTable+8(SB)/8, $·slot1(SB)
DATA	·slotTable+16(SB)/8, $·slot2(SB)
DATA	·slotTable+24(SB)/8, $·slot3(SB)
DATA	·slotTable+32(SB)/8, $·slot4(SB)
DATA	·slotTable+40(SB)/8, $·slot5(SB)
DATA	·slotTable+48(SB)/8, $·slot6(SB)
DATA	·slotTable+56(SB)/8, $·slot7(SB)
GLOBL	·slotTable(SB), RODATA, $64

// func setGSBase(addr uintptr)
TEXT ·setGSBase(SB),NOSPLIT,$0-8
	MOVQ	addr+0(FP), AX
	MOVQ	AX, DX
	SHRQ	$32, DX
	MOVL	$0xc0000101, CX
	WRMSR
	RET
