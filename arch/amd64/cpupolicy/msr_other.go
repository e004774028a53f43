//go:build !tamago || !amd64

package cpupolicy

// CollectsMSRs reports whether [Collect] reads MSRs. Outside GOOS=tamago
// RDMSR needs ring 0, so Collect reads CPUID only.
const CollectsMSRs = false

var rdmsr MSRFunc
