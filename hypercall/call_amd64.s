//go:build tamago

#include "textflag.h"

// func call(op, a1, a2, a3, a4, a5 uintptr) int64
//
// Xen's x86-64 hypercall ABI: arguments in RDI, RSI, RDX, R10, R8; the
// hypercall page holds one 32-byte stub per hypercall number; the result is
// in RAX.
TEXT ·call(SB),NOSPLIT,$0-56
	MOVQ	·page(SB), AX
	TESTQ	AX, AX
	JZ	nopage
	MOVQ	op+0(FP), CX
	SHLQ	$5, CX
	ADDQ	CX, AX
	MOVQ	a1+8(FP), DI
	MOVQ	a2+16(FP), SI
	MOVQ	a3+24(FP), DX
	MOVQ	a4+32(FP), R10
	MOVQ	a5+40(FP), R8
	CALL	AX
	MOVQ	AX, ret+48(FP)
	RET
nopage:
	MOVQ	$-38, AX	// -ENOSYS: no hypercall page yet
	MOVQ	AX, ret+48(FP)
	RET
