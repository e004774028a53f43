//go:build tamago

#include "textflag.h"

#define MSR_GS_BASE	0xc0000101
#define LAPIC_ID	0xfee00020
#define LAPIC_EOI	0xfee000b0
#define LAPIC_SVR	0xfee000f0
#define LAPIC_ICRL	0xfee00300
#define LAPIC_ICRH	0xfee00310
#define LAPIC_LVT_TIMER	0xfee00320
#define LAPIC_INIT	0xfee00380
#define LAPIC_DIV	0xfee003e0

// struct cpu (smp_tamago.go); the offsets are checked at start
#define cpu_id		0
#define cpu_gdtr	8
#define cpu_idtr	16
#define cpu_sp		24
#define cpu_mp		32
#define cpu_gp		40
#define cpu_pc		48
#define cpu_apic	56
#define cpu_state	60
#define cpu_alive	64
#define cpu_tls		72
#define cpu_size	256

#define STATE_PARKED	0
#define STATE_RUNNING	1

#define SUSPEND_ASKED	1
#define SUSPEND_IN_XEN	2
#define SUSPEND_DONE	3

// MOVQ GS:0, AX (the vCPU id in this vCPU's record)
#define GSID_AX	BYTE $0x65; BYTE $0x48; BYTE $0x8b; BYTE $0x04; BYTE $0x25; LONG $0
// MOVQ GS:0, DX
#define GSID_DX	BYTE $0x65; BYTE $0x48; BYTE $0x8b; BYTE $0x14; BYTE $0x25; LONG $0

// func gsID() uint64
TEXT ·gsID(SB),NOSPLIT,$0-8
	GSID_AX
	MOVQ	AX, ret+0(FP)
	RET

// func setGSBase(addr uintptr)
TEXT ·setGSBase(SB),NOSPLIT,$0-8
	MOVQ	addr+0(FP), AX
	MOVQ	AX, DX
	SHRQ	$32, DX
	MOVL	$MSR_GS_BASE, CX
	WRMSR
	RET

// func controlRegs() (cr0, cr3, cr4, efer uint64)
TEXT ·controlRegs(SB),NOSPLIT,$0-32
	MOVQ	CR0, AX
	MOVQ	AX, cr0+0(FP)
	MOVQ	CR3, AX
	MOVQ	AX, cr3+8(FP)
	MOVQ	CR4, AX
	MOVQ	AX, cr4+16(FP)
	MOVL	$0xc0000080, CX
	RDMSR
	SHLQ	$32, DX
	ORQ	DX, AX
	MOVQ	AX, efer+24(FP)
	RET

// func apicID() uint32
TEXT ·apicID(SB),NOSPLIT,$0-4
	MOVQ	$LAPIC_ID, AX
	MOVL	(AX), AX
	SHRL	$24, AX
	MOVL	AX, ret+0(FP)
	RET

// func fsBase() uintptr
TEXT ·fsBase(SB),NOSPLIT,$0-8
	MOVL	$0xc0000100, CX
	RDMSR
	SHLQ	$32, DX
	ORQ	DX, AX
	MOVQ	AX, ret+0(FP)
	RET

// func cli()
TEXT ·cli(SB),NOSPLIT,$0
	CLI
	RET

// func sti()
TEXT ·sti(SB),NOSPLIT,$0
	STI
	RET

// func halt(counts uint32, vector uint32)
//
// Called with interrupts off: arms the local APIC's one-shot timer for
// counts (divide by 1: LAPICCountNS each) on vector unless counts is 0,
// then STI; HLT (no interrupt is taken between the two, so none pending
// is missed; where an emulator takes one there anyway, the entry slot
// returns past the HLT: trap.HaltsSkipped), and disarms the timer.
// Returns with interrupts on.
TEXT ·halt(SB),NOSPLIT,$0-8
	MOVL	counts+0(FP), BX
	TESTL	BX, BX
	JZ	sleep
	MOVQ	$LAPIC_DIV, AX
	MOVL	$0xb, (AX)
	MOVQ	$LAPIC_LVT_TIMER, AX
	MOVL	vector+4(FP), CX
	MOVL	CX, (AX)		// one-shot, unmasked
	MOVQ	$LAPIC_INIT, AX
	MOVL	BX, (AX)
sleep:
	STI
	HLT
	TESTL	BX, BX
	JZ	done
	MOVQ	$LAPIC_INIT, AX
	MOVL	$0, (AX)
done:
	RET

// func sendIPI(apic, vector uint32)
TEXT ·sendIPI(SB),NOSPLIT,$0-8
	MOVL	apic+0(FP), BX
	MOVL	vector+4(FP), CX
	CALL	·ipi<>(SB)
	RET

// ipi<> sends a fixed interrupt with vector CX to the local APIC id BX
// (physical destination) from this vCPU's local APIC, with interrupts
// off between the two ICR writes. Clobbers AX, BX.
TEXT ·ipi<>(SB),NOSPLIT|NOFRAME,$0
	PUSHFQ
	CLI
	SHLL	$24, BX
	MOVQ	$LAPIC_ICRH, AX
	MOVL	BX, (AX)
	MOVQ	$LAPIC_ICRL, AX
	MOVL	CX, (AX)
	POPFQ
	RET

// func entryAddrs() (ap, wake, wakeIdle uintptr)
TEXT ·entryAddrs(SB),NOSPLIT,$0-24
	MOVQ	$·apEntry(SB), AX
	MOVQ	AX, ap+0(FP)
	MOVQ	$·wakeEntry(SB), AX
	MOVQ	AX, wake+8(FP)
	MOVQ	$·wakeIdle(SB), AX
	MOVQ	AX, wakeIdle+16(FP)
	RET

// wakeEntry is the handler of the wake vector (IPIs between vCPUs and the
// idle timer; trap.SetHandler: it runs on the vCPU's interrupt stack and
// preserves every register): the interrupt itself is the wake-up, so it
// only acknowledges the local APIC. While a vCPU suspends the domain (Freeze)
// it stops here instead: it counts itself in frozen and spins, interrupts
// off, until Thaw; vCPU 0 makes the suspend hypercall from here when
// SuspendOn0 asks (suspendCmd 1: asked, 2: in Xen, 3: done).
TEXT ·wakeEntry(SB),NOSPLIT|NOFRAME,$0
	PUSHQ	AX
	MOVQ	$LAPIC_EOI, AX
	MOVL	$0, (AX)
	CMPL	·freezing(SB), $0
	JE	wk_out
fz:
	LOCK
	INCL	·frozen(SB)
fz_spin:
	PAUSE
	CMPL	·freezing(SB), $0
	JE	fz_out
	CMPL	·suspendCmd(SB), $SUSPEND_ASKED
	JNE	fz_spin
	PUSHQ	DX
	GSID_DX
	TESTQ	DX, DX
	POPQ	DX
	JNZ	fz_spin			// only vCPU 0 suspends
	MOVL	$SUSPEND_IN_XEN, ·suspendCmd(SB)
	PUSHQ	CX
	PUSHQ	DX
	PUSHQ	SI
	PUSHQ	DI
	PUSHQ	R8
	PUSHQ	R9
	PUSHQ	R10
	PUSHQ	R11
	MOVQ	$2, DI			// SCHEDOP_shutdown
	MOVQ	$·shutdownArg(SB), SI	// struct sched_shutdown {reason}
	MOVQ	·hcPage(SB), AX
	ADDQ	$(29*32), AX		// sched_op
	CALL	AX
	MOVQ	AX, ·suspendRet(SB)
	POPQ	R11
	POPQ	R10
	POPQ	R9
	POPQ	R8
	POPQ	DI
	POPQ	SI
	POPQ	DX
	POPQ	CX
	MOVL	$SUSPEND_DONE, AX
	XCHGL	AX, ·suspendCmd(SB)
	JMP	fz_spin
fz_out:
	LOCK
	DECL	·frozen(SB)
wk_out:
	POPQ	AX
	RET

// func pause()
TEXT ·pause(SB),NOSPLIT,$0
	PAUSE
	RET

// wakeIdle sends the wake IPI to one vCPU other than this one that is
// idle in the scheduler (napping or sleeping), if any. Package irq's
// entry calls it with interrupts off, so that an idle vCPU services an
// interrupt this vCPU took while busy. Clobbers AX, BX, CX, DX.
TEXT ·wakeIdle(SB),NOSPLIT|NOFRAME,$0
	CMPL	·ncpu(SB), $0
	JE	wi_none			// before Start: GS is not set yet
	GSID_DX
	XORQ	AX, AX
wi_loop:
	CMPL	AX, ·ncpu(SB)
	JAE	wi_none
	CMPQ	AX, DX
	JE	wi_next
	MOVQ	AX, BX
	SHLQ	$8, BX			// * cpu_size
	MOVQ	$·cpus(SB), CX
	ADDQ	CX, BX
	CMPL	cpu_state(BX), $STATE_RUNNING
	JBE	wi_next			// parked or running
	MOVL	cpu_apic(BX), BX
	MOVL	·wakeVector(SB), CX
	JMP	·ipi<>(SB)
wi_next:
	INCQ	AX
	JMP	wi_loop
wi_none:
	RET

// apEntry is where Xen starts a secondary vCPU (VCPUOP_initialise): long
// mode with the boot vCPU's CR0, CR3, CR4 and EFER, interrupts off, flat
// segments with selector 0, RSP its boot stack and RDI its struct cpu.
TEXT ·apEntry(SB),NOSPLIT|NOFRAME,$0
	MOVQ	DI, R12
	MOVQ	cpu_gdtr(R12), AX
	LGDT	(AX)
	MOVQ	$·apLong<>(SB), AX
	PUSHQ	$0x08
	PUSHQ	AX
	RETFQ

TEXT ·apLong<>(SB),NOSPLIT|NOFRAME,$0
	MOVL	$0x10, AX
	BYTE $0x8e; BYTE $0xd8	// MOV DS, AX
	BYTE $0x8e; BYTE $0xc0	// MOV ES, AX
	BYTE $0x8e; BYTE $0xd0	// MOV SS, AX
	MOVW	$0x18, AX
	LTR	AX
	MOVQ	cpu_idtr(R12), AX
	LIDT	(AX)
	MOVQ	R12, AX			// GS: this record
	MOVQ	R12, DX
	SHRQ	$32, DX
	MOVL	$MSR_GS_BASE, CX
	WRMSR
	CALL	sse_enable(SB)
	MOVQ	$LAPIC_SVR, AX		// software-enable the local APIC
	MOVL	(AX), BX
	ORL	$0x100, BX
	MOVL	BX, (AX)
	MOVQ	$LAPIC_ID, AX
	MOVL	(AX), BX
	SHRL	$24, BX
	MOVL	BX, cpu_apic(R12)
	MOVL	$1, AX
	XCHGL	AX, cpu_alive(R12)	// alive: the boot vCPU waits for it
park:
	CLI
	MOVQ	cpu_pc(R12), AX
	TESTQ	AX, AX
	JNZ	run
	STI
	HLT				// until Task's IPI
	JMP	park
run:
	MOVQ	cpu_sp(R12), SP
	MOVQ	cpu_gp(R12), R14	// the M's g0
	MOVQ	cpu_tls(R12), DI	// &m.tls
	CALL	runtime·settls(SB)
	MOVQ	R14, (TLS)
	MOVL	$STATE_RUNNING, AX
	XCHGL	AX, cpu_state(R12)
	STI
	MOVQ	cpu_pc(R12), AX
	CALL	AX			// runtime·mstart: never returns
	CLI
	HLT				// with interrupts off: Xen takes the vCPU down

// struct host (hosting_tamago.go); checked by initHosting
#define host_top	40
#define host_gp		48
#define host_tls	56
#define host_pc		64

#define MSR_FS_BASE	0xc0000100

// func yieldAddr() uintptr
TEXT ·yieldAddr(SB),NOSPLIT,$0-8
	MOVQ	$·yield(SB), AX
	MOVQ	AX, ret+0(FP)
	RET

// func freshAddr() uintptr
TEXT ·freshAddr(SB),NOSPLIT,$0-8
	MOVQ	$·freshEntry<>(SB), AX
	MOVQ	AX, ret+0(FP)
	RET

// yield is the runtime's _cgo_yield (see hosting_tamago.go), called as a
// C function by asmcgocall on an M's g0 stack (DI 0), or by idleYield
// (DI 1): it preserves RBX, RBP and R12-R15. An M whose P is running (a
// scheduling round) or idle (Idle) switches to a new or woken M, or one
// holding a P (rank 2); a sleeping M (no P, or its P stopped) also to a
// sleeper whose turn came (rank 1). While the pool holds an M
// that may run, it asks choose, and switches: the callee-saved registers
// and the flags stay pushed on this M's stack, whose pointer choose
// records, and the same are popped from the other M's. It returns AX 1
// if it switched away (and this M has since been switched back to),
// otherwise 0.
TEXT ·yield(SB),NOSPLIT|NOFRAME,$0
	CMPL	·hostReady(SB), $0
	JNE	y_check
	XORL	AX, AX
	RET
y_check:
	MOVQ	(TLS), R8		// g (this M's g0)
	MOVQ	48(R8), AX		// g.m
	MOVQ	$2, SI			// the lowest rank to switch to: new, woken
	TESTQ	DI, DI			// or holding a P, from Idle or a round
	JNZ	y_slow
	MOVQ	$1, SI			// a sleeper's: also a sleeper's turn
	MOVQ	·offMP(SB), CX
	MOVQ	(AX)(CX*1), CX		// m.p
	TESTQ	CX, CX
	JZ	y_slow
	MOVQ	·offPStatus(SB), DX
	CMPL	(CX)(DX*1), $1		// _Prunning: a scheduling round
	JNE	y_slow
	MOVQ	$2, SI
y_slow:
	PUSHFQ
	PUSHQ	BP
	PUSHQ	BX
	PUSHQ	R12
	PUSHQ	R13
	PUSHQ	R14
	PUSHQ	R15
	CLI
	MOVQ	R8, R12			// the g0
	MOVQ	SI, R13			// the rank
	MOVL	$MSR_FS_BASE, CX
	RDMSR
	SHLQ	$32, DX
	ORQ	DX, AX			// its FS base
	MOVQ	SP, BX
	SUBQ	$48, SP
	MOVQ	R12, 0(SP)
	MOVQ	BX, 8(SP)
	MOVQ	AX, 16(SP)
	MOVQ	R13, 24(SP)
	CALL	·choose(SB)
	MOVQ	32(SP), BX		// the other M's stack pointer; 0: stay
	MOVQ	40(SP), AX		// its FS base; 0: a new M
	ADDQ	$48, SP
	TESTQ	BX, BX
	JZ	y_stay
	MOVQ	BX, SP
	TESTQ	AX, AX
	JZ	y_new
	MOVQ	AX, DX
	SHRQ	$32, DX
	MOVL	$MSR_FS_BASE, CX
	WRMSR
y_new:
	CALL	·switched(SB)
	MOVL	$1, AX			// to the M resumed: it was away
	JMP	y_pop
y_stay:
	XORL	AX, AX
y_pop:
	POPQ	R15
	POPQ	R14
	POPQ	R13
	POPQ	R12
	POPQ	BX
	POPQ	BP
	POPFQ
	RET

// func idleYield() bool
TEXT ·idleYield(SB),NOSPLIT,$0-1
	MOVQ	$1, DI
	CALL	·yield(SB)
	MOVB	AX, ret+0(FP)
	RET

// freshEntry is where a new M from the pool starts, interrupts off, with
// its record in R12: as apEntry's run, on the M's g0 stack.
TEXT ·freshEntry<>(SB),NOSPLIT|NOFRAME,$0
	MOVQ	host_top(R12), SP
	MOVQ	host_gp(R12), R14	// the M's g0
	MOVQ	host_tls(R12), DI	// &m.tls
	CALL	runtime·settls(SB)
	MOVQ	R14, (TLS)
	STI
	MOVQ	host_pc(R12), AX
	CALL	AX			// runtime·mstart: never returns
	CLI
	HLT
