//go:build tamago

#include "textflag.h"

// func outb(port uint16, val byte)
TEXT ·outb(SB),NOSPLIT,$0-3
	MOVW	port+0(FP), DX
	MOVB	val+2(FP), AX
	OUTB
	RET

// func rdtsc() uint64
TEXT ·rdtsc(SB),NOSPLIT,$0-8
	LFENCE
	RDTSC
	SHLQ	$32, DX
	ORQ	DX, AX
	MOVQ	AX, ret+0(FP)
	RET

// func xenShutdown(reason uint32)
//
// SCHEDOP_shutdown through the hypercall page cpuinit installed: usable
// from the first instruction of the Go runtime on, before hwinit1.
TEXT ·xenShutdown(SB),NOSPLIT,$16-4
	MOVL	reason+0(FP), AX
	MOVL	AX, 0(SP)
	MOVQ	$2, DI			// SCHEDOP_shutdown
	MOVQ	SP, SI
	MOVQ	·hypercallPage(SB), AX
	ADDQ	$(29*32), AX		// sched_op
	CALL	AX
	RET


// func cli()
TEXT ·cli(SB),NOSPLIT,$0
	CLI
	RET

// func sti()
TEXT ·sti(SB),NOSPLIT,$0
	STI
	RET
