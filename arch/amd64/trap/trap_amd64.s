//go:build tamago

#include "textflag.h"

#define nestedMsgLen 65

// entry is the common exception entry, reached from a vector stub on an IST
// stack with the CPU's frame (SS, RSP, RFLAGS, CS, RIP), the error code
// and the vector already pushed. It saves every general register below
// them, giving the layout of Frame, and never returns: a second exception
// while one is being reported crashes the domain at once.
TEXT ·entry<>(SB),NOSPLIT|NOFRAME,$0
	PUSHQ	AX
	PUSHQ	BX
	PUSHQ	CX
	PUSHQ	DX
	PUSHQ	SI
	PUSHQ	DI
	PUSHQ	BP
	PUSHQ	R8
	PUSHQ	R9
	PUSHQ	R10
	PUSHQ	R11
	PUSHQ	R12
	PUSHQ	R13
	PUSHQ	R14
	PUSHQ	R15
	CLD
	MOVQ	SP, BX			// *Frame

	MOVL	$1, AX
	XCHGL	AX, ·active(SB)
	TESTL	AX, AX
	JNZ	nested

	MOVQ	CR2, AX
	MOVQ	AX, ·cr2(SB)

	// the interrupted goroutine: TLS g, kept when it lies in RAM
	MOVQ	(TLS), AX
	MOVQ	AX, ·faultG(SB)

	// run the Go reporter on this stack under a stand-in g whose stack
	// bounds are this IST stack and whose m is the interrupted g's (so
	// the runtime's symbol tables can be read)
	MOVQ	$·fakeG(SB), DI
	MOVQ	$1024, CX		// gsize
	CMPQ	AX, ·ramLo(SB)
	JB	zero_g
	MOVQ	AX, R9
	ADDQ	CX, R9
	CMPQ	R9, ·ramHi(SB)
	JA	zero_g
	MOVQ	AX, SI
	SHRQ	$3, CX
	REP;	MOVSQ
	JMP	g_ready
zero_g:
	SHRQ	$3, CX
	XORQ	AX, AX
	REP;	STOSQ
	MOVQ	$·fakeG(SB), DI
	MOVQ	$0, 48(DI)		// g.m
g_ready:
	// this IST stack: 64 KiB, aligned to its size
	MOVQ	$·fakeG(SB), DI
	MOVQ	SP, AX
	ANDQ	$~0xffff, AX
	MOVQ	AX, 0(DI)		// g.stack.lo
	ADDQ	$0x1000, AX
	MOVQ	AX, 16(DI)		// g.stackguard0
	MOVQ	AX, 24(DI)		// g.stackguard1
	ADDQ	$(0x10000-0x1000), AX
	MOVQ	AX, 8(DI)		// g.stack.hi
	MOVQ	$0, 32(DI)		// g._panic
	MOVQ	$0, 40(DI)		// g._defer
	MOVQ	DI, (TLS)
	MOVQ	DI, R14

	ANDQ	$~15, SP
	SUBQ	$16, SP
	MOVQ	BX, 0(SP)
	CALL	·report(SB)

nested:
	// a fault while reporting one (or report returned): say so on port
	// 0xE9 with this fault's vector, error code, RIP, RSP and CR2, and
	// crash the domain with the hypercall page alone
	MOVQ	$·nestedMsg(SB), SI
	MOVQ	$nestedMsgLen, CX
	MOVW	$0xe9, DX
nested_loop:
	MOVB	(SI), AX
	OUTB
	INCQ	SI
	DECQ	CX
	JNZ	nested_loop
	MOVQ	120(BX), AX		// vector
	CALL	·hex<>(SB)
	MOVQ	128(BX), AX		// error code
	CALL	·hex<>(SB)
	MOVQ	136(BX), AX		// RIP
	CALL	·hex<>(SB)
	MOVQ	160(BX), AX		// RSP
	CALL	·hex<>(SB)
	MOVQ	CR2, AX
	CALL	·hex<>(SB)
	MOVQ	$10, AX
	OUTB
	ANDQ	$~15, SP
	SUBQ	$64, SP
crash:
	MOVL	$3, 0(SP)		// SHUTDOWN_crash
	MOVQ	$2, DI			// SCHEDOP_shutdown
	MOVQ	SP, SI
	MOVQ	·hypercallPage(SB), AX
	TESTQ	AX, AX
	JZ	halt
	ADDQ	$(29*32), AX		// sched_op
	CALL	AX
	JMP	crash
halt:
	CLI
	HLT
	JMP	halt



// hex prints RAX as 16 hex digits and a space on port 0xE9 (DX = 0xe9).
TEXT ·hex<>(SB),NOSPLIT|NOFRAME,$0
	MOVQ	AX, R11
	MOVQ	$16, CX
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

// nmi is the NMI gate (on its own IST stack): it counts the NMI, prints a
// line on port 0xE9 and returns to the interrupted code.
TEXT ·nmi(SB),NOSPLIT|NOFRAME,$0
	PUSHQ	AX
	PUSHQ	CX
	PUSHQ	DX
	PUSHQ	SI
	LOCK
	INCQ	·nmis(SB)
	MOVQ	$·nmiMsg(SB), SI
	MOVQ	$16, CX
	MOVW	$0xe9, DX
nmi_loop:
	MOVB	(SI), AX
	OUTB
	INCQ	SI
	DECQ	CX
	JNZ	nmi_loop
	POPQ	SI
	POPQ	DX
	POPQ	CX
	POPQ	AX
	IRETQ

DATA	·nmiMsg+0(SB)/8, $"gozen: N"
DATA	·nmiMsg+8(SB)/8, $"MI seen\n"
GLOBL	·nmiMsg(SB), RODATA, $16

// func lgdt(gdtr uintptr)
TEXT ·lgdt(SB),NOSPLIT,$0-8
	MOVQ	gdtr+0(FP), AX
	LGDT	(AX)
	RET

// func ltr(sel uint16)
TEXT ·ltr(SB),NOSPLIT,$0-2
	MOVW	sel+0(FP), AX
	LTR	AX
	RET

// func sidt(idtr uintptr)
TEXT ·sidt(SB),NOSPLIT,$0-8
	MOVQ	idtr+0(FP), AX
	SIDT	(AX)
	RET

// func stubAddrs() uintptr
TEXT ·stubAddrs(SB),NOSPLIT,$0-8
	MOVQ	$·stubs(SB), AX
	MOVQ	AX, ret+0(FP)
	RET

// func readCR3() uint64
TEXT ·readCR3(SB),NOSPLIT,$0-8
	MOVQ	CR3, AX
	MOVQ	AX, ret+0(FP)
	RET

DATA	·nestedMsg+0(SB)/8, $"gozen: f"
DATA	·nestedMsg+8(SB)/8, $"ault whi"
DATA	·nestedMsg+16(SB)/8, $"le repor"
DATA	·nestedMsg+24(SB)/8, $"ting a f"
DATA	·nestedMsg+32(SB)/8, $"ault (ve"
DATA	·nestedMsg+40(SB)/8, $"ctor err"
DATA	·nestedMsg+48(SB)/8, $"or rip r"
DATA	·nestedMsg+56(SB)/8, $"sp cr2):"
DATA	·nestedMsg+64(SB)/8, $"        "
GLOBL	·nestedMsg(SB), RODATA, $72

// One entry stub per exception vector 0-31: vectors without a CPU error
// code push a zero so that every frame has the same shape, then each pushes
// its vector number and jumps to the common entry. The IDT gates point here
// (see stubs below); NMI (2) has a stub of its own that returns.

TEXT ·vec0(SB),NOSPLIT|NOFRAME,$0
	PUSHQ	$0
	PUSHQ	$0
	JMP	·entry<>(SB)

TEXT ·vec1(SB),NOSPLIT|NOFRAME,$0
	PUSHQ	$0
	PUSHQ	$1
	JMP	·entry<>(SB)

TEXT ·vec3(SB),NOSPLIT|NOFRAME,$0
	PUSHQ	$0
	PUSHQ	$3
	JMP	·entry<>(SB)

TEXT ·vec4(SB),NOSPLIT|NOFRAME,$0
	PUSHQ	$0
	PUSHQ	$4
	JMP	·entry<>(SB)

TEXT ·vec5(SB),NOSPLIT|NOFRAME,$0
	PUSHQ	$0
	PUSHQ	$5
	JMP	·entry<>(SB)

TEXT ·vec6(SB),NOSPLIT|NOFRAME,$0
	PUSHQ	$0
	PUSHQ	$6
	JMP	·entry<>(SB)

TEXT ·vec7(SB),NOSPLIT|NOFRAME,$0
	PUSHQ	$0
	PUSHQ	$7
	JMP	·entry<>(SB)

TEXT ·vec8(SB),NOSPLIT|NOFRAME,$0
	PUSHQ	$8
	JMP	·entry<>(SB)

TEXT ·vec9(SB),NOSPLIT|NOFRAME,$0
	PUSHQ	$0
	PUSHQ	$9
	JMP	·entry<>(SB)

TEXT ·vec10(SB),NOSPLIT|NOFRAME,$0
	PUSHQ	$10
	JMP	·entry<>(SB)

TEXT ·vec11(SB),NOSPLIT|NOFRAME,$0
	PUSHQ	$11
	JMP	·entry<>(SB)

TEXT ·vec12(SB),NOSPLIT|NOFRAME,$0
	PUSHQ	$12
	JMP	·entry<>(SB)

TEXT ·vec13(SB),NOSPLIT|NOFRAME,$0
	PUSHQ	$13
	JMP	·entry<>(SB)

TEXT ·vec14(SB),NOSPLIT|NOFRAME,$0
	PUSHQ	$14
	JMP	·entry<>(SB)

TEXT ·vec15(SB),NOSPLIT|NOFRAME,$0
	PUSHQ	$0
	PUSHQ	$15
	JMP	·entry<>(SB)

TEXT ·vec16(SB),NOSPLIT|NOFRAME,$0
	PUSHQ	$0
	PUSHQ	$16
	JMP	·entry<>(SB)

TEXT ·vec17(SB),NOSPLIT|NOFRAME,$0
	PUSHQ	$17
	JMP	·entry<>(SB)

TEXT ·vec18(SB),NOSPLIT|NOFRAME,$0
	PUSHQ	$0
	PUSHQ	$18
	JMP	·entry<>(SB)

TEXT ·vec19(SB),NOSPLIT|NOFRAME,$0
	PUSHQ	$0
	PUSHQ	$19
	JMP	·entry<>(SB)

TEXT ·vec20(SB),NOSPLIT|NOFRAME,$0
	PUSHQ	$0
	PUSHQ	$20
	JMP	·entry<>(SB)

TEXT ·vec21(SB),NOSPLIT|NOFRAME,$0
	PUSHQ	$21
	JMP	·entry<>(SB)

TEXT ·vec22(SB),NOSPLIT|NOFRAME,$0
	PUSHQ	$0
	PUSHQ	$22
	JMP	·entry<>(SB)

TEXT ·vec23(SB),NOSPLIT|NOFRAME,$0
	PUSHQ	$0
	PUSHQ	$23
	JMP	·entry<>(SB)

TEXT ·vec24(SB),NOSPLIT|NOFRAME,$0
	PUSHQ	$0
	PUSHQ	$24
	JMP	·entry<>(SB)

TEXT ·vec25(SB),NOSPLIT|NOFRAME,$0
	PUSHQ	$0
	PUSHQ	$25
	JMP	·entry<>(SB)

TEXT ·vec26(SB),NOSPLIT|NOFRAME,$0
	PUSHQ	$0
	PUSHQ	$26
	JMP	·entry<>(SB)

TEXT ·vec27(SB),NOSPLIT|NOFRAME,$0
	PUSHQ	$0
	PUSHQ	$27
	JMP	·entry<>(SB)

TEXT ·vec28(SB),NOSPLIT|NOFRAME,$0
	PUSHQ	$0
	PUSHQ	$28
	JMP	·entry<>(SB)

TEXT ·vec29(SB),NOSPLIT|NOFRAME,$0
	PUSHQ	$29
	JMP	·entry<>(SB)

TEXT ·vec30(SB),NOSPLIT|NOFRAME,$0
	PUSHQ	$30
	JMP	·entry<>(SB)

TEXT ·vec31(SB),NOSPLIT|NOFRAME,$0
	PUSHQ	$0
	PUSHQ	$31
	JMP	·entry<>(SB)

// The stub addresses, indexed by vector (NMI included).
DATA	·stubs+0(SB)/8, $·vec0(SB)
DATA	·stubs+8(SB)/8, $·vec1(SB)
DATA	·stubs+16(SB)/8, $·nmi(SB)
DATA	·stubs+24(SB)/8, $·vec3(SB)
DATA	·stubs+32(SB)/8, $·vec4(SB)
DATA	·stubs+40(SB)/8, $·vec5(SB)
DATA	·stubs+48(SB)/8, $·vec6(SB)
DATA	·stubs+56(SB)/8, $·vec7(SB)
DATA	·stubs+64(SB)/8, $·vec8(SB)
DATA	·stubs+72(SB)/8, $·vec9(SB)
DATA	·stubs+80(SB)/8, $·vec10(SB)
DATA	·stubs+88(SB)/8, $·vec11(SB)
DATA	·stubs+96(SB)/8, $·vec12(SB)
DATA	·stubs+104(SB)/8, $·vec13(SB)
DATA	·stubs+112(SB)/8, $·vec14(SB)
DATA	·stubs+120(SB)/8, $·vec15(SB)
DATA	·stubs+128(SB)/8, $·vec16(SB)
DATA	·stubs+136(SB)/8, $·vec17(SB)
DATA	·stubs+144(SB)/8, $·vec18(SB)
DATA	·stubs+152(SB)/8, $·vec19(SB)
DATA	·stubs+160(SB)/8, $·vec20(SB)
DATA	·stubs+168(SB)/8, $·vec21(SB)
DATA	·stubs+176(SB)/8, $·vec22(SB)
DATA	·stubs+184(SB)/8, $·vec23(SB)
DATA	·stubs+192(SB)/8, $·vec24(SB)
DATA	·stubs+200(SB)/8, $·vec25(SB)
DATA	·stubs+208(SB)/8, $·vec26(SB)
DATA	·stubs+216(SB)/8, $·vec27(SB)
DATA	·stubs+224(SB)/8, $·vec28(SB)
DATA	·stubs+232(SB)/8, $·vec29(SB)
DATA	·stubs+240(SB)/8, $·vec30(SB)
DATA	·stubs+248(SB)/8, $·vec31(SB)
GLOBL	·stubs(SB), RODATA, $256

