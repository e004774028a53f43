//go:build tamago

#include "textflag.h"

#define LAPIC_EOI	0xfee000b0
#define LAPIC_LVT_TIMER	0xfee00320
#define LAPIC_INIT	0xfee00380
#define LAPIC_DIV	0xfee003e0

#define MIN_DELAY	2000	// LAPIC timer counts: 20 us at Xen's 100 MHz vLAPIC bus (10 ns a count) with divide-by-1
#define MAX_DELAY	1000000	// 10 ms

// func halt()
TEXT ·halt(SB),NOSPLIT,$0
	CLI
	CMPL	·pending(SB), $0
	JNE	busy
	STI
	HLT	// STI's shadow keeps interrupts out until HLT runs (one taken there anyway: trap.HaltsSkipped)
	RET
busy:
	STI
	RET

// func entryAddrs() (upcall, retry uintptr)
TEXT ·entryAddrs(SB),NOSPLIT,$0-16
	MOVQ	$·upcall(SB), AX
	MOVQ	AX, upcall+0(FP)
	MOVQ	$·retry(SB), AX
	MOVQ	AX, retry+8(FP)
	RET

// upcall is the handler of the serviced vector (trap.SetHandler: it runs
// on the vCPU's interrupt stack and preserves every register): record,
// EOI, try to wake.
TEXT ·upcall(SB),NOSPLIT|NOFRAME,$0
	PUSHQ	AX
	PUSHQ	BX
	PUSHQ	CX
	PUSHQ	DX
	MOVL	$1, ·pending(SB)
	LOCK
	INCQ	·interrupts(SB)
	MOVQ	$LAPIC_EOI, AX
	MOVL	$0, (AX)
	MOVQ	·smpWake(SB), AX
	TESTQ	AX, AX
	JZ	single
	CALL	AX		// EnableSMP: wake an idle vCPU, nothing else
	JMP	upcall_done
single:
	CALL	·wake<>(SB)
upcall_done:
	POPQ	DX
	POPQ	CX
	POPQ	BX
	POPQ	AX
	RET

// retry is the handler of the retry timer's vector: EOI, and try again
// while the recorded interrupt has not been taken by the service goroutine.
TEXT ·retry(SB),NOSPLIT|NOFRAME,$0
	PUSHQ	AX
	PUSHQ	BX
	PUSHQ	CX
	PUSHQ	DX
	INCQ	·retries(SB)
	MOVQ	$LAPIC_EOI, AX
	MOVL	$0, (AX)
	CMPL	·pending(SB), $0
	JE	done
	CALL	·wake<>(SB)
done:
	POPQ	DX
	POPQ	CX
	POPQ	BX
	POPQ	AX
	RET

// wake<> wakes the service goroutine when that is safe and it is asleep,
// else arms the retry timer. Clobbers AX, BX, CX, DX (runtime·WakeG's
// registers).
TEXT ·wake<>(SB),NOSPLIT|NOFRAME,$0
	MOVQ	·mLocks(SB), AX
	CMPQ	AX, $0
	JE	later
	MOVL	(AX), AX
	CMPL	AX, $0
	JNE	later
	MOVQ	·serviceG(SB), AX
	CMPQ	AX, $0
	JE	later
	CALL	runtime·WakeG(SB)	// AX: 0 done, 1 not asleep
	CMPQ	AX, $0
	JNE	later
	INCQ	·direct(SB)
	MOVQ	$MIN_DELAY, ·delay(SB)
	RET
later:
	INCQ	·deferred(SB)
	MOVQ	$LAPIC_DIV, AX
	MOVL	$0xb, (AX)	// divide by 1
	MOVQ	$LAPIC_LVT_TIMER, AX
	MOVL	·retryVector(SB), BX	// one-shot, unmasked
	MOVL	BX, (AX)
	MOVQ	·delay(SB), BX
	CMPQ	BX, $MIN_DELAY
	JGE	arm
	MOVQ	$MIN_DELAY, BX
arm:
	MOVQ	$LAPIC_INIT, AX
	MOVL	BX, (AX)
	SHLQ	$1, BX
	CMPQ	BX, $MAX_DELAY
	JLE	keep
	MOVQ	$MAX_DELAY, BX
keep:
	MOVQ	BX, ·delay(SB)
	RET
