//go:build tamago

#include "textflag.h"

// func rdmsr(idx uint32) uint64
TEXT ·rdmsr(SB), NOSPLIT, $0-16
	MOVL idx+0(FP), CX
	RDMSR
	SHLQ $32, DX
	ORQ  DX, AX
	MOVQ AX, ret+8(FP)
	RET
