package cpupolicy

import (
	"fmt"
	"slices"
)

// Reg names a 32-bit register a feature word lives in: one of CPUID's four
// output registers, or the low or high half of an MSR.
type Reg uint8

// Registers.
const (
	EAX Reg = iota
	EBX
	ECX
	EDX
	MSRLow  // bits 0-31 of an MSR
	MSRHigh // bits 32-63 of an MSR
)

var regNames = [...]string{"eax", "ebx", "ecx", "edx", "lo", "hi"}

// String returns the register's lower-case name ("eax", ..., "lo", "hi").
func (r Reg) String() string {
	if int(r) < len(regNames) {
		return regNames[r]
	}
	return fmt.Sprintf("reg%d", r)
}

// Word locates a 32-bit feature word: a CPUID output register
// (Leaf, Subleaf, Reg in EAX..EDX) or half of an MSR (Leaf holds the MSR
// index, Reg is MSRLow or MSRHigh, Subleaf is unused and zero).
type Word struct {
	Leaf, Subleaf uint32
	Reg           Reg
}

// IsMSR reports whether the word is half of an MSR.
func (w Word) IsMSR() bool { return w.Reg == MSRLow || w.Reg == MSRHigh }

// String formats the word in xen-cpuid's notation: "0x00000007:0.ebx",
// "0x80000001.ecx" (no subleaf), or "MSR 0x0000010a.lo".
func (w Word) String() string {
	switch {
	case w.IsMSR():
		return fmt.Sprintf("MSR 0x%08x.%v", w.Leaf, w.Reg)
	case w.Subleaf == NoSubleaf:
		return fmt.Sprintf("0x%08x.%v", w.Leaf, w.Reg)
	}
	return fmt.Sprintf("0x%08x:%d.%v", w.Leaf, w.Subleaf, w.Reg)
}

// Value returns the word's value in p, and whether the leaf or MSR holding
// it is present.
func (w Word) Value(p *Policy) (uint32, bool) {
	if w.IsMSR() {
		m, ok := p.MSR(w.Leaf)
		if w.Reg == MSRHigh {
			return uint32(m.Value >> 32), ok
		}
		return uint32(m.Value), ok
	}
	l, ok := p.Leaf(w.Leaf, w.Subleaf)
	return l.Reg(w.Reg), ok
}

// Feature is one bit of a feature word, with Xen's name for it when there is
// one (the XEN_CPUFEATURE name from cpufeatureset.h, lower case, '_' written
// '-', as xen-cpuid prints it).
type Feature struct {
	Word Word
	Bit  uint8
	Name string
}

// String returns the feature's name, or "<word>[bit]" for an unnamed bit.
func (f Feature) String() string {
	if f.Name != "" {
		return f.Name
	}
	return fmt.Sprintf("%v[%d]", f.Word, f.Bit)
}

// FeatureWords lists the feature words in Xen's featureset order (word i of
// a Xen featureset is FeatureWords[i]).
var FeatureWords = []Word{
	0:  {1, NoSubleaf, EDX},
	1:  {1, NoSubleaf, ECX},
	2:  {0x80000001, NoSubleaf, EDX},
	3:  {0x80000001, NoSubleaf, ECX},
	4:  {0xd, 1, EAX},
	5:  {7, 0, EBX},
	6:  {7, 0, ECX},
	7:  {0x80000007, NoSubleaf, EDX},
	8:  {0x80000008, NoSubleaf, EBX},
	9:  {7, 0, EDX},
	10: {7, 1, EAX},
	11: {0x80000021, NoSubleaf, EAX},
	12: {7, 1, EBX},
	13: {7, 2, EDX},
	14: {7, 1, ECX},
	15: {7, 1, EDX},
	16: {MSRArchCapabilities, 0, MSRLow},
	17: {MSRArchCapabilities, 0, MSRHigh},
	18: {0x80000021, NoSubleaf, ECX},
}

// featureNames maps featureset word index -> bit -> name. Names follow
// Xen's xen/include/public/arch-x86/cpufeatureset.h.
var featureNames = map[int]map[uint8]string{
	0: {
		0: "fpu", 1: "vme", 2: "de", 3: "pse", 4: "tsc", 5: "msr", 6: "pae", 7: "mce",
		8: "cx8", 9: "apic", 11: "sep", 12: "mtrr", 13: "pge", 14: "mca", 15: "cmov",
		16: "pat", 17: "pse36", 19: "clflush", 21: "ds", 22: "acpi", 23: "mmx", 24: "fxsr",
		25: "sse", 26: "sse2", 27: "ss", 28: "htt", 29: "tm1", 31: "pbe",
	},
	1: {
		0: "sse3", 1: "pclmulqdq", 2: "dtes64", 3: "monitor", 4: "dscpl", 5: "vmx", 6: "smx",
		7: "eist", 8: "tm2", 9: "ssse3", 11: "sdbg", 12: "fma", 13: "cx16", 14: "xtpr",
		15: "pdcm", 17: "pcid", 18: "dca", 19: "sse4-1", 20: "sse4-2", 21: "x2apic",
		22: "movbe", 23: "popcnt", 24: "tsc-deadline", 25: "aesni", 26: "xsave", 27: "osxsave",
		28: "avx", 29: "f16c", 30: "rdrand", 31: "hypervisor",
	},
	2: {
		11: "syscall", 20: "nx", 22: "mmxext", 25: "ffxsr", 26: "page1gb", 27: "rdtscp",
		29: "lm", 30: "3dnowext", 31: "3dnow",
	},
	3: {
		0: "lahf-lm", 1: "cmp-legacy", 2: "svm", 3: "extapic", 4: "cr8-legacy", 5: "abm",
		6: "sse4a", 7: "misalignsse", 8: "3dnowprefetch", 9: "osvw", 10: "ibs", 11: "xop",
		12: "skinit", 13: "wdt", 15: "lwp", 16: "fma4", 19: "nodeid-msr", 21: "tbm",
		22: "topoext", 26: "dbext", 29: "monitorx", 30: "addr-msk-ext",
	},
	4: {
		0: "xsaveopt", 1: "xsavec", 2: "xgetbv1", 3: "xsaves", 4: "xfd",
	},
	5: {
		0: "fsgsbase", 1: "tsc-adjust", 2: "sgx", 3: "bmi1", 4: "hle", 5: "avx2",
		6: "fdp-excp-only", 7: "smep", 8: "bmi2", 9: "erms", 10: "invpcid", 11: "rtm",
		12: "pqm", 13: "no-fpu-sel", 14: "mpx", 15: "pqe", 16: "avx512f", 17: "avx512dq",
		18: "rdseed", 19: "adx", 20: "smap", 21: "avx512-ifma", 23: "clflushopt", 24: "clwb",
		25: "proc-trace", 26: "avx512pf", 27: "avx512er", 28: "avx512cd", 29: "sha",
		30: "avx512bw", 31: "avx512vl",
	},
	6: {
		0: "prefetchwt1", 1: "avx512-vbmi", 2: "umip", 3: "pku", 4: "ospke", 5: "waitpkg",
		6: "avx512-vbmi2", 7: "cet-ss", 8: "gfni", 9: "vaes", 10: "vpclmulqdq",
		11: "avx512-vnni", 12: "avx512-bitalg", 13: "tme", 14: "avx512-vpopcntdq", 16: "la57",
		22: "rdpid", 24: "bld", 25: "cldemote", 27: "movdiri", 28: "movdir64b", 29: "enqcmd",
		30: "sgx-lc", 31: "pks",
	},
	7: {
		7: "hw-pstate", 8: "itsc", 9: "cpb", 10: "efro",
	},
	8: {
		0: "clzero", 2: "rstr-fp-err-ptrs", 9: "wbnoinvd", 12: "ibpb", 14: "ibrs",
		15: "amd-stibp", 16: "ibrs-always", 17: "stibp-always", 18: "ibrs-fast",
		19: "ibrs-same-mode", 20: "no-lmsl", 23: "amd-ppin", 24: "amd-ssbd", 25: "virt-ssbd",
		26: "ssb-no", 27: "cppc", 28: "psfd", 29: "btc-no", 30: "ibpb-ret",
	},
	9: {
		1: "sgx-keys", 2: "avx512-4vnniw", 3: "avx512-4fmaps", 4: "fsrm", 5: "uintr",
		8: "avx512-vp2intersect", 9: "srbds-ctrl", 10: "md-clear", 11: "rtm-always-abort",
		13: "tsx-force-abort", 14: "serialize", 15: "hybrid", 16: "tsxldtrk", 18: "pconfig",
		19: "arch-lbr", 20: "cet-ibt", 22: "amx-bf16", 23: "avx512-fp16", 24: "amx-tile",
		25: "amx-int8", 26: "ibrsb", 27: "stibp", 28: "l1d-flush", 29: "arch-caps",
		30: "core-caps", 31: "ssbd",
	},
	10: {
		0: "sha512", 1: "sm3", 2: "sm4", 4: "avx-vnni", 5: "avx512-bf16", 6: "lass",
		7: "cmpccxadd", 8: "arch-perf-mon", 10: "fzrm", 11: "fsrs", 12: "fsrcs", 17: "fred",
		18: "lkgs", 19: "wrmsrns", 20: "nmi-src", 21: "amx-fp16", 23: "avx-ifma", 26: "lam",
		27: "msrlist", 30: "no-invd", 31: "movrs",
	},
	11: {
		0: "no-nest-bp", 1: "fs-gs-ns", 2: "lfence-dispatch", 5: "verw-clear", 6: "nscb",
		8: "auto-ibrs", 10: "amd-fsrs", 11: "amd-fsrc", 17: "cpuid-user-dis", 18: "epsf",
		19: "fsrsc", 20: "amd-prefetchi", 23: "avx512-bmm", 27: "sbpb", 28: "ibpb-brtype",
		29: "srso-no", 30: "srso-us-no", 31: "srso-msr-fix",
	},
	12: {
		0: "intel-ppin",
	},
	13: {
		0: "intel-psfd", 1: "ipred-ctrl", 2: "rrsba-ctrl", 3: "ddp-ctrl", 4: "bhi-ctrl",
		5: "mcdt-no", 6: "uc-lock-dis",
	},
	15: {
		4: "avx-vnni-int8", 5: "avx-ne-convert", 8: "amx-complex", 10: "avx-vnni-int16",
		14: "prefetchi", 17: "uiret-uif", 18: "cet-sss", 24: "slsm",
	},
	16: {
		0: "rdcl-no", 1: "eibrs", 2: "rsba", 3: "skip-l1dfl", 4: "intel-ssb-no", 5: "mds-no",
		6: "if-pschange-mc-no", 7: "tsx-ctrl", 8: "taa-no", 9: "mcu-ctrl", 10: "misc-pkg-ctrl",
		11: "energy-filtering", 12: "doitm", 13: "sbdr-ssdp-no", 14: "fbsdp-no", 15: "psdp-no",
		16: "mcu-ext", 17: "fb-clear", 18: "fb-clear-ctrl", 19: "rrsba", 20: "bhi-no",
		21: "xapic-status", 23: "ovrclk-status", 24: "pbrsb-no", 25: "gds-ctrl", 26: "gds-no",
		27: "rfds-no", 28: "rfds-clear", 29: "ign-umonitor", 30: "mon-umon-mitg",
	},
	17: {
		0: "pb-opt-ctrl", 30: "its-no",
	},
	18: {
		1: "tsa-sq-no", 2: "tsa-l1-no",
	},
}

func init() {
	// AMD mirrors most of leaf 1's EDX in 0x80000001.EDX; Xen treats those
	// bits as the same features, so name them alike.
	for _, b := range []uint8{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 12, 13, 14, 15, 16, 17, 23, 24} {
		featureNames[2][b] = featureNames[0][b]
	}
}

// FeatureName returns Xen's name for bit of the feature word w, or "" if
// the bit is unnamed or w is not a feature word.
func FeatureName(w Word, bit uint8) string {
	i := slices.Index(FeatureWords, w)
	if i < 0 {
		return ""
	}
	return featureNames[i][bit]
}

// LookupFeature finds a feature by its Xen name (as returned by
// [FeatureName]).
func LookupFeature(name string) (Feature, bool) {
	for i, w := range FeatureWords {
		for b, n := range featureNames[i] {
			if n == name {
				return Feature{Word: w, Bit: b, Name: n}, true
			}
		}
	}
	return Feature{}, false
}

// Has reports whether the feature's bit is set in p.
func (p *Policy) Has(f Feature) bool {
	v, _ := f.Word.Value(p)
	return v&(1<<f.Bit) != 0
}

// Features lists every bit set in p's feature words, in featureset order,
// named where Xen names them.
func (p *Policy) Features() []Feature {
	var out []Feature
	for _, w := range FeatureWords {
		v, _ := w.Value(p)
		out = append(out, bitsOf(w, v)...)
	}
	return out
}

func bitsOf(w Word, v uint32) []Feature {
	var out []Feature
	for b := uint8(0); b < 32; b++ {
		if v&(1<<b) != 0 {
			out = append(out, Feature{Word: w, Bit: b, Name: FeatureName(w, b)})
		}
	}
	return out
}
