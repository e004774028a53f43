// Package trap makes every CPU exception of a Gozen guest visible: it
// installs its own gates for vectors 0-31 on known-good stacks (the
// interrupt stack table, IST), and its handler prints the vector, error
// code, RIP, RSP, CR2, the general registers, the interrupted goroutine and
// a frame-pointer backtrace on port 0xE9 and the console, then crashes the
// domain (SHUTDOWN_crash). A fault that reaches Xen as a triple fault is
// then a bug in this package, never an unhandled exception.
//
// The formatting in this file is portable so that it is tested on the host;
// the gates, stacks and handler are in the GOOS=tamago files.
package trap

import "strconv"

// Frame is the register state the entry code saves on the exception stack,
// in memory order (lowest address first).
type Frame struct {
	R15, R14, R13, R12, R11, R10, R9, R8 uint64
	RBP, RDI, RSI, RDX, RCX, RBX, RAX    uint64
	// Vector is the exception number, ErrorCode the CPU's error code (zero
	// for vectors without one).
	Vector, ErrorCode uint64
	// RIP, CS, RFLAGS, RSP and SS are the interrupt frame the CPU pushed.
	RIP, CS, RFLAGS, RSP, SS uint64
}

// Vector numbers of the exceptions with names of their own.
const (
	DivideError      = 0
	Debug            = 1
	NMI              = 2
	Breakpoint       = 3
	InvalidOpcode    = 6
	DoubleFault      = 8
	InvalidTSS       = 10
	SegmentNotPresnt = 11
	StackFault       = 12
	GeneralProtect   = 13
	PageFault        = 14
	MachineCheck     = 18
)

var mnemonics = [32]string{
	"#DE divide error", "#DB debug", "NMI", "#BP breakpoint", "#OF overflow",
	"#BR bound range", "#UD invalid opcode", "#NM device not available",
	"#DF double fault", "coprocessor segment overrun", "#TS invalid TSS",
	"#NP segment not present", "#SS stack fault", "#GP general protection",
	"#PF page fault", "reserved 15", "#MF x87 error", "#AC alignment check",
	"#MC machine check", "#XM SIMD error", "#VE virtualization",
	"#CP control protection", "reserved 22", "reserved 23", "reserved 24",
	"reserved 25", "reserved 26", "reserved 27", "#HV hypervisor injection",
	"#VC VMM communication", "#SX security", "reserved 31",
}

// VectorName returns the mnemonic and name of exception vector v.
func VectorName(v uint64) string {
	if v < uint64(len(mnemonics)) {
		return mnemonics[v]
	}
	return "vector " + strconv.FormatUint(v, 10)
}

// HasErrorCode reports whether the CPU pushes an error code for vector v.
func HasErrorCode(v uint64) bool {
	switch v {
	case 8, 10, 11, 12, 13, 14, 17, 21, 29, 30:
		return true
	}
	return false
}

// pageFaultBits decodes a #PF error code.
func appendPageFault(b []byte, code uint64) []byte {
	if code&1 != 0 {
		b = append(b, " protection"...)
	} else {
		b = append(b, " not-present"...)
	}
	if code&2 != 0 {
		b = append(b, " write"...)
	} else {
		b = append(b, " read"...)
	}
	if code&16 != 0 {
		b = append(b, " ifetch"...)
	}
	if code&8 != 0 {
		b = append(b, " reserved-bit"...)
	}
	return b
}

// AppendHex appends v as 0x and 16 hex digits; it does not allocate.
func AppendHex(b []byte, v uint64) []byte {
	const digits = "0123456789abcdef"
	b = append(b, '0', 'x')
	for shift := 60; shift >= 0; shift -= 4 {
		b = append(b, digits[(v>>uint(shift))&15])
	}
	return b
}

// AppendHeader appends the first report line: the exception, its error
// code (decoded for a page fault), RIP, RSP, CR2 and RFLAGS.
func AppendHeader(b []byte, f *Frame, cr2 uint64) []byte {
	b = append(b, "gozen: FAULT "...)
	b = append(b, VectorName(f.Vector)...)
	b = append(b, " (vector "...)
	b = strconv.AppendUint(b, f.Vector, 10)
	b = append(b, ") error "...)
	b = AppendHex(b, f.ErrorCode)
	if f.Vector == PageFault {
		b = appendPageFault(b, f.ErrorCode)
	}
	b = append(b, "\ngozen: rip "...)
	b = AppendHex(b, f.RIP)
	b = append(b, " rsp "...)
	b = AppendHex(b, f.RSP)
	b = append(b, " cr2 "...)
	b = AppendHex(b, cr2)
	b = append(b, " rflags "...)
	b = AppendHex(b, f.RFLAGS)
	b = append(b, '\n')
	return b
}

// AppendRegisters appends the general registers, four to a line.
func AppendRegisters(b []byte, f *Frame) []byte {
	regs := [...]struct {
		name string
		v    uint64
	}{
		{"rax", f.RAX}, {"rbx", f.RBX}, {"rcx", f.RCX}, {"rdx", f.RDX},
		{"rsi", f.RSI}, {"rdi", f.RDI}, {"rbp", f.RBP}, {"r8 ", f.R8},
		{"r9 ", f.R9}, {"r10", f.R10}, {"r11", f.R11}, {"r12", f.R12},
		{"r13", f.R13}, {"r14", f.R14}, {"r15", f.R15}, {"cs ", f.CS},
	}
	for i, r := range regs {
		if i%4 == 0 {
			b = append(b, "gozen:"...)
		}
		b = append(b, ' ')
		b = append(b, r.name...)
		b = append(b, ' ')
		b = AppendHex(b, r.v)
		if i%4 == 3 {
			b = append(b, '\n')
		}
	}
	return b
}

// Memory reads one 8-byte word of guest memory, reporting false where the
// address may not be read (outside RAM, misaligned).
type Memory func(addr uint64) (uint64, bool)

// Backtrace follows the frame-pointer chain from rbp (Go on amd64 keeps
// one: [rbp] is the caller's rbp, [rbp+8] the return address) and returns
// up to len(pcs) return addresses. It stops at a chain that leaves RAM,
// goes down, or loops.
func Backtrace(rbp uint64, read Memory, pcs []uint64) int {
	n := 0
	for n < len(pcs) && rbp != 0 {
		ret, ok := read(rbp + 8)
		if !ok || ret == 0 {
			break
		}
		pcs[n] = ret
		n++
		next, ok := read(rbp)
		if !ok || next <= rbp {
			break
		}
		rbp = next
	}
	return n
}
