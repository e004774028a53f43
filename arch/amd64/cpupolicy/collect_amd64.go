package cpupolicy

import "github.com/gozen-dev/gozen/arch/amd64/cpuid"

// CPUID executes the CPUID instruction on the current processor.
func CPUID(leaf, subleaf uint32) (a, b, c, d uint32) { return cpuid.Query(leaf, subleaf) }

// Collect builds the policy the running domain sees; see [CollectFrom] for
// the enumeration rules. On GOOS=tamago (ring 0) it also reads the MSRs
// CPUID implies; elsewhere (for example a Linux process, where RDMSR would
// fault) it collects CPUID only, which [CollectsMSRs] reports.
func Collect() (*Policy, error) {
	var rd MSRFunc
	if CollectsMSRs {
		rd = rdmsr
	}
	return CollectFrom(cpuid.Query, rd)
}
