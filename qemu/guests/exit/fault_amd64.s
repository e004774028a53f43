//go:build tamago

#include "textflag.h"

// func divideByZero()
TEXT ·divideByZero(SB),NOSPLIT,$0
	XORQ	CX, CX
	MOVQ	$1, AX
	CQO
	IDIVQ	CX
	RET

// func invalidOpcode()
TEXT ·invalidOpcode(SB),NOSPLIT,$0
	BYTE	$0x0f; BYTE $0x0b	// UD2
	RET

// func nonCanonical()
TEXT ·nonCanonical(SB),NOSPLIT,$0
	MOVQ	$0x8000000000000000, AX
	MOVQ	(AX), AX
	RET

// func stackOverflow()
//
// Points RSP at the top of the unmapped null page and keeps pushing: the
// first push page-faults with a stack the CPU cannot use. (The entry's
// page tables start at 0x1000, so the overflow must not start above it.)
TEXT ·stackOverflow(SB),NOSPLIT,$0
	MOVQ	$0x1000, SP
loop:
	PUSHQ	AX
	JMP	loop
