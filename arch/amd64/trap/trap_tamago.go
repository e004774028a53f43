//go:build tamago

package trap

import (
	"runtime"
	"strconv"
	"unsafe"

	"github.com/gozen-dev/gozen/internal/phys"
)

// Config is what Install needs from the board.
type Config struct {
	// HypercallPage is the address of the installed hypercall page, used
	// to crash the domain when even the reporter faults.
	HypercallPage uintptr
	// RAMStart and RAMEnd bound the memory the reporter may read
	// (goroutine structures, stacks, instruction bytes).
	RAMStart, RAMEnd uint64
	// Out writes one part of the report (whole lines) to every console the
	// board has. It runs with interrupts off, on an exception stack, and
	// must neither allocate nor block for long.
	Out func(b []byte)
	// Crash flushes what the consoles buffer and crashes the domain; it
	// does not return.
	Crash func()
}

const (
	istSize  = 64 << 10
	istCount = 4 // IST 1: faults, 2: double fault, 3: NMI; stack 4: the interrupt stack (entry slots, no IST)
	gsize    = 1024
)

var (
	// set by the entry code
	active uint32
	cr2    uint64
	faultG uint64
	nmis   uint64

	// read by the entry code
	hypercallPage uintptr
	ramLo, ramHi  uint64

	fakeG [gsize / 8]uint64

	reportBuf [1024]byte

	istArea [(istCount + 1) * istSize]byte
	tss     [104 + 8]byte
	gdt     [5]uint64
	gdtr    [2]uint64
	idtr    [2]uint64

	cfg       Config
	idtBase   uintptr
	goidOff   = -1
	installed bool
)

func lgdt(gdtr uintptr)
func ltr(sel uint16)
func sidt(idtr uintptr)
func stubAddrs() uintptr
func readCR3() uint64

// NMIs returns how many NMIs the guest has received (each is logged on
// port 0xE9 and otherwise ignored).
func NMIs() uint64 { return nmis }

// Installed reports whether Install has run.
func Installed() bool { return installed }

// Install loads a task-state segment with the exception stacks and points
// the IDT gates of vectors 0-31 at this package's handler: faults run on
// IST 1, the double fault on IST 2, NMI on IST 3. The IDT must already be
// loaded (TamaGo's CPU.EnableExceptions does that); call Install right
// after it, once, on the boot vCPU.
func Install(c Config) {
	cfg = c
	hypercallPage = c.HypercallPage
	ramLo, ramHi = c.RAMStart, c.RAMEnd

	top := buildTables(istArea[:], &tss, &gdt, &gdtr)
	lgdt(uintptr(unsafe.Pointer(&gdtr[0])))
	ltr(0x18)
	initBootEntry(top)

	ip := uintptr(unsafe.Pointer(&idtr[0]))
	sidt(ip)
	idtBase = uintptr(*(*uint64)(phys.Pointer(ip + 2)))
	stubs := stubAddrs()
	for v := 0; v < 32; v++ {
		addr := *(*uint64)(phys.Pointer(stubs + uintptr(v)*8))
		i := 1
		switch v {
		case DoubleFault:
			i = 2
		case NMI:
			i = 3
		}
		writeGate(v, uintptr(addr), i)
	}
	findGoidOffset()
	installed = true
}

// buildTables fills a task-state segment whose interrupt-stack-table
// slots 1-3 point into area (stacks of istSize, each aligned to its size,
// so the entry code finds the bounds of the one it runs on from RSP alone)
// and a GDT holding the code and data segments of the entry code (0x08,
// 0x10) and that TSS (0x18), and points gdtr at the GDT. It returns the
// top of the fourth stack in area, the interrupt stack of the entry slots
// (SetHandler), which is not in the TSS.
func buildTables(area []byte, tss *[104 + 8]byte, gdt *[5]uint64, gdtr *[2]uint64) uintptr {
	base := (uint64(uintptr(unsafe.Pointer(&area[0]))) + istSize - 1) &^ (istSize - 1)
	top := func(i int) uint64 { return base + uint64(i)*istSize } // stack i is [top(i-1), top(i))

	t := uintptr(unsafe.Pointer(&tss[0]))
	t = (t + 7) &^ 7
	ist := func(i int, v uint64) { *(*uint64)(phys.Pointer(t + 0x24 + uintptr(i-1)*8)) = v }
	ist(1, top(1))
	ist(2, top(2))
	ist(3, top(3))
	*(*uint16)(phys.Pointer(t + 0x66)) = 104 // no I/O permission bitmap

	gdt[0] = 0
	gdt[1] = 0x00209a0000000000 // 64-bit code, selector 0x08 (as the entry's)
	gdt[2] = 0x0000920000000000 // data, selector 0x10
	tb := uint64(t)
	gdt[3] = 103 | (tb&0xffffff)<<16 | 0x89<<40 | (tb>>24&0xff)<<56
	gdt[4] = tb >> 32
	gp := uintptr(unsafe.Pointer(&gdtr[0]))
	*(*uint16)(phys.Pointer(gp)) = uint16(len(gdt)*8 - 1)
	*(*uint64)(phys.Pointer(gp + 2)) = uint64(uintptr(unsafe.Pointer(&gdt[0])))
	return uintptr(top(4))
}

// CPUTables are the descriptor tables of one more vCPU: its own GDT and
// task-state segment with its own exception stacks (a stack of the
// interrupt-stack table serves one CPU at a time), its interrupt stack
// (InitEntry), and the IDT shared with the boot vCPU.
type CPUTables struct {
	area         []byte
	tss          [104 + 8]byte
	gdt          [5]uint64
	gdtr         [2]uint64
	interruptTop uintptr // the entry slots' stack (InitEntry)
}

// NewCPUTables allocates and fills the tables of a secondary vCPU. The
// vCPU loads them itself: LGDT at GDTR, a far return to selector 0x08,
// LTR 0x18 and LIDT at IDTR. Install must have run.
func NewCPUTables() *CPUTables {
	if !installed {
		panic("trap: NewCPUTables before Install")
	}
	c := &CPUTables{area: make([]byte, (istCount+1)*istSize)}
	c.interruptTop = buildTables(c.area, &c.tss, &c.gdt, &c.gdtr)
	return c
}

// GDTR returns the address of the 10-byte GDT pointer to load with LGDT.
func (c *CPUTables) GDTR() uintptr { return uintptr(unsafe.Pointer(&c.gdtr[0])) }

// IDTR returns the address of the 10-byte IDT pointer of the IDT every
// vCPU shares (the one TamaGo loaded on the boot vCPU).
func IDTR() uintptr { return uintptr(unsafe.Pointer(&idtr[0])) }

// writeGate writes a 64-bit interrupt gate (DPL 0, code selector 0x08).
func writeGate(vector int, addr uintptr, ist int) {
	a := uint64(addr)
	lo := a&0xffff | 0x08<<16 | uint64(ist)<<32 | 0x8e<<40 | (a>>16&0xffff)<<48
	gate := idtBase + uintptr(vector)*16
	*(*uint64)(phys.Pointer(gate + 8)) = a >> 32
	*(*uint64)(phys.Pointer(gate)) = lo
}

// findGoidOffset checks where the runtime keeps a goroutine's id (g.goid,
// 152 bytes into struct g in Go 1.26) against the id runtime.Stack prints
// for a fresh goroutine, so a report names the goroutine only when the
// layout is the expected one.
func findGoidOffset() {
	const off = 152
	done := make(chan struct{})
	go func() {
		defer close(done)
		var buf [64]byte
		n := runtime.Stack(buf[:], false)
		s := string(buf[:n])
		const prefix = "goroutine "
		if len(s) < len(prefix) || s[:len(prefix)] != prefix {
			return
		}
		end := len(prefix)
		for end < len(s) && s[end] >= '0' && s[end] <= '9' {
			end++
		}
		id, err := strconv.ParseUint(s[len(prefix):end], 10, 64)
		if err != nil {
			return
		}
		g, _ := runtime.GetG()
		if g != 0 && *(*uint64)(phys.Pointer(uintptr(g) + off)) == id {
			goidOff = off
		}
	}()
	<-done
}

func readWord(addr uint64) (uint64, bool) {
	if addr&7 != 0 || addr < ramLo || addr+8 > ramHi {
		return 0, false
	}
	return *(*uint64)(phys.Pointer(uintptr(addr))), true
}

// report is called by the entry code on the exception stack, with
// interrupts off, under a stand-in g; it never returns.
func report(f *Frame) {
	buf := reportBuf[:] // static: the reporter must not allocate
	out := func(b []byte) {
		if cfg.Out != nil {
			cfg.Out(b)
		}
	}
	out(AppendHeader(buf[:0], f, cr2))
	out(AppendRegisters(buf[:0], f))

	b := append(buf[:0], "gozen: code at rip:"...)
	for i := uint64(0); i < 16; i++ {
		w, ok := readWord((f.RIP + i) &^ 7)
		if !ok {
			b = append(b, " ??"...)
			continue
		}
		c := byte(w >> (((f.RIP + i) & 7) * 8))
		b = append(b, ' ', "0123456789abcdef"[c>>4], "0123456789abcdef"[c&15])
	}
	out(append(b, '\n'))

	g := faultG
	b = append(buf[:0], "gozen: goroutine "...)
	lo, okLo := readWord(g)
	hi, okHi := readWord(g + 8)
	if !okLo || !okHi {
		b = append(b, "unknown (g "...)
		b = AppendHex(b, g)
		b = append(b, " not in RAM)\n"...)
		out(b)
	} else {
		if goidOff >= 0 {
			id, _ := readWord(g + uint64(goidOff))
			b = strconv.AppendUint(b, id, 10)
			b = append(b, ' ')
		}
		b = append(b, "g "...)
		b = AppendHex(b, g)
		b = append(b, " stack ["...)
		b = AppendHex(b, lo)
		b = append(b, ", "...)
		b = AppendHex(b, hi)
		b = append(b, ')')
		if f.RSP < lo || f.RSP > hi {
			b = append(b, " RSP OUTSIDE this stack (a stack overflow, a corrupt RSP or code on another stack)"...)
		}
		out(append(b, '\n'))
	}

	// symbols need the runtime's tables and an m (pcvalue's cache)
	m := fakeG[48/8]
	var pcs [24]uint64
	pcs[0] = f.RIP
	n := 1 + Backtrace(f.RBP, readWord, pcs[1:])
	for i := 0; i < n; i++ {
		pc := pcs[i]
		b = append(buf[:0], "gozen:   "...)
		b = AppendHex(b, pc)
		if m != 0 {
			lookup := uintptr(pc)
			if i > 0 {
				lookup-- // a return address: name the call
			}
			if fn := runtime.FuncForPC(lookup); fn != nil {
				file, line := fn.FileLine(lookup)
				b = append(b, ' ')
				b = append(b, fn.Name()...)
				b = append(b, ' ')
				b = append(b, file...)
				b = append(b, ':')
				b = strconv.AppendInt(b, int64(line), 10)
			}
		}
		out(append(b, '\n'))
	}
	out(append(buf[:0], "gozen: crashing the domain after a CPU exception\n"...))
	if cfg.Crash != nil {
		cfg.Crash()
	}
}
