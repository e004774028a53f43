package smp

import "encoding/binary"

// Context is the 64-bit register state a vCPU starts with
// (struct vcpu_hvm_x86_64 in xen/include/public/hvm/hvm_vcpu.h): Xen sets
// the cached segment state to flat 64-bit code and data and a busy 64-bit
// TSS, all with selector 0, so the vCPU loads its own GDT first.
type Context struct {
	RAX, RCX, RDX, RBX, RSP, RBP, RSI, RDI uint64
	RIP, RFLAGS                            uint64
	CR0, CR3, CR4, EFER                    uint64
}

// ContextSize is the size of struct vcpu_hvm_context, which Xen copies
// whole: mode and padding (8 bytes) and the union of the register sets,
// whose larger member is the 32-bit one (120 bytes; the 64-bit one has
// 14 registers, 112 bytes).
const ContextSize = 8 + 120

// modeLong is VCPU_HVM_MODE_64B.
const modeLong = 1

// Encode writes the vcpu_hvm_context for c (mode VCPU_HVM_MODE_64B) into
// b, which must hold at least ContextSize bytes; the rest of b is zeroed.
func (c *Context) Encode(b []byte) {
	for i := range b {
		b[i] = 0
	}
	le := binary.LittleEndian
	le.PutUint32(b[0:], modeLong)
	regs := []uint64{c.RAX, c.RCX, c.RDX, c.RBX, c.RSP, c.RBP, c.RSI, c.RDI,
		c.RIP, c.RFLAGS, c.CR0, c.CR3, c.CR4, c.EFER}
	for i, r := range regs {
		le.PutUint64(b[8+8*i:], r)
	}
}
