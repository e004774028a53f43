//go:build tamago

package cpupolicy

// CollectsMSRs reports whether [Collect] reads MSRs. It is true on
// GOOS=tamago, where Go runs in ring 0.
const CollectsMSRs = true

// rdmsr executes RDMSR (msr_tamago_amd64.s). RDMSR faults for MSRs that do
// not exist, so callers only pass indices CPUID implies.
func rdmsr(idx uint32) uint64
