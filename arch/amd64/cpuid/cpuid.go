// Package cpuid runs the CPUID instruction; it works the same in a Linux
// process and in a Gozen guest.
package cpuid

// Query returns EAX, EBX, ECX and EDX of CPUID leaf, subleaf.
func Query(leaf, subleaf uint32) (a, b, c, d uint32) { return cpuid(leaf, subleaf) }

func cpuid(leaf, subleaf uint32) (a, b, c, d uint32)
