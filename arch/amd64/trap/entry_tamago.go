//go:build tamago

package trap

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/gozen-dev/gozen/internal/phys"
)

// Interrupt entries (SetHandler) do not use the interrupt-stack table.
//
// A gate with an IST stack makes the CPU load the same stack top on every
// delivery, so a second delivery before the first returned overwrites the
// first one's frame. A CPU does not deliver a maskable interrupt while
// interrupts are off, but the rig's software-emulated nested SVM (QEMU
// 7.2's TCG, under Xen) can: an interrupt Xen injects with VMRUN is
// delivered, and when the emulator leaves its execution loop before the
// guest's next instruction, it is delivered again, at the first
// instruction of its handler, with interrupts off. Measured: a 4-vCPU
// domain hung in about half the runs of the SMP grants case, one vCPU
// returning from its upcall entry into that same entry for ever (the
// frame it returned through was the second delivery's, pointing at the
// entry's first instruction, on the IST stack).
//
// So an entry slot's gate takes the interrupt on the stack it stopped,
// which costs that stack the CPU's 40-byte frame and its 16-byte
// alignment, and the slot then moves to this vCPU's interrupt stack in
// software: the first entry switches stacks, one arriving while another
// runs stays where it is. A second delivery becomes a second, harmless
// run of the handler (an EOI with nothing in service does nothing); the
// slot counts it (Redelivered).

// EntryOffset is where, in the per-vCPU record at the GS base, the entry
// slots keep their three words: the nesting depth (-1 outside any slot),
// the stack pointer a slot stopped, and this vCPU's interrupt stack top.
// A package that points the GS base at a record of its own (package
// arch/amd64/smp, on every vCPU it runs) reserves these 24 bytes and fills
// them with InitEntry first.
const EntryOffset = 232

// RecordSize is the smallest per-vCPU record InitEntry accepts.
const RecordSize = EntryOffset + 24

// slots is the number of entry slots (distinct handlers).
const slots = 8

var (
	// read and counted by the entry slots
	handlers     [slots]uintptr
	entries      [slots]uint64
	redelivered  uint64
	haltsSkipped uint64

	slotMu     sync.Mutex
	slotVector [slots]int // 0: free

	// bootRecord is the boot vCPU's per-vCPU record until another
	// package points the GS base elsewhere.
	bootRecord [RecordSize/8 + 1]uint64
	bootTop    uintptr
)

func slotAddrs() *[slots]uintptr
func setGSBase(addr uintptr)

// initBootEntry points the boot vCPU's GS base at bootRecord, whose entry
// words use the interrupt stack Install reserved (top).
func initBootEntry(top uintptr) {
	bootTop = top
	rec := uintptr(unsafe.Pointer(&bootRecord[0]))
	writeEntry(rec, top)
	setGSBase(rec)
}

// writeEntry fills the entry words of the record at rec.
func writeEntry(rec, top uintptr) {
	w := (*[3]uint64)(phys.Pointer(rec + EntryOffset))
	w[0] = ^uint64(0) // depth -1
	w[1] = 0
	w[2] = uint64(top)
}

// InitEntry fills the entry words of a per-vCPU record at rec (at least
// RecordSize bytes, 8-byte aligned, never moved) for the vCPU whose
// tables are t, or for the boot vCPU when t is nil. Call it before that
// vCPU's GS base points at rec, and switch a running vCPU's GS base only
// outside any entry slot (with interrupts off, or from ordinary code,
// whose depth is -1 in both records).
func InitEntry(rec uintptr, t *CPUTables) {
	if !installed {
		panic("trap: InitEntry before Install")
	}
	if rec == 0 || rec&7 != 0 {
		panic("trap: InitEntry: record not 8-byte aligned")
	}
	top := bootTop
	if t != nil {
		top = t.interruptTop
	}
	writeEntry(rec, top)
}

// SetHandler points the interrupt gate of vector (32-255) at an entry
// slot that calls handler: an assembly routine (its ABI0 address) that
// preserves every general register and ends in RET. It runs with
// interrupts off on the interrupting vCPU's interrupt stack; the same
// interrupt may run it twice (see Redelivered), which it must tolerate.
// A vector may be set once; Install must have run.
func SetHandler(vector int, handler uintptr) error {
	if !installed {
		return errors.New("trap: SetHandler before Install")
	}
	if vector < 32 || vector > 255 || handler == 0 {
		return fmt.Errorf("trap: SetHandler: vector %d: want 32-255 and a handler", vector)
	}
	slotMu.Lock()
	defer slotMu.Unlock()
	free := -1
	for i, v := range slotVector {
		if v == vector {
			return fmt.Errorf("trap: SetHandler: vector %d already has a handler", vector)
		}
		if v == 0 && free < 0 {
			free = i
		}
	}
	if free < 0 {
		return fmt.Errorf("trap: SetHandler: vector %d: all %d entry slots in use", vector, slots)
	}
	slotVector[free] = vector
	atomic.StoreUintptr(&handlers[free], handler)
	writeGate(vector, slotAddrs()[free], 0)
	return nil
}

// Redelivered counts entries whose interrupted instruction was the entry
// slot itself: an interrupt delivered a second time before its handler
// ran (see the comment at the top of this file). Hardware never does it.
func Redelivered() uint64 { return atomic.LoadUint64(&redelivered) }

// HaltsSkipped counts entries whose interrupted instruction was a HLT
// that had not run yet: the slot returned past it (see entry_amd64.s).
// Hardware does that only where a HLT runs with interrupts already on;
// the idle HLTs of this project follow STI, whose one-instruction shadow
// keeps interrupts out until the HLT has run, yet the rig's emulated
// nested SVM delivers one there now and then, and the HLT after it would
// sleep with its wake-up spent (a vCPU halted for good, its timer gone).
func HaltsSkipped() uint64 { return atomic.LoadUint64(&haltsSkipped) }

// Entries returns how many times the handler of vector ran (its slot
// was entered), or 0 for a vector without one.
func Entries(vector int) uint64 {
	slotMu.Lock()
	defer slotMu.Unlock()
	for i, v := range slotVector {
		if v == vector && v != 0 {
			return atomic.LoadUint64(&entries[i])
		}
	}
	return 0
}
