package cpupolicy

import (
	"errors"
	"os"
	"slices"
	"strings"
	"testing"
)

func names(fs []Feature) []string {
	var out []string
	for _, f := range fs {
		out = append(out, f.String())
	}
	return out
}

func mustFeature(t *testing.T, name string) Feature {
	t.Helper()
	f, ok := LookupFeature(name)
	if !ok {
		t.Fatalf("no feature %q", name)
	}
	return f
}

func TestFeatureNames(t *testing.T) {
	tests := []struct {
		w    Word
		bit  uint8
		want string
	}{
		{Word{1, NoSubleaf, EDX}, 26, "sse2"},
		{Word{1, NoSubleaf, ECX}, 19, "sse4-1"},
		{Word{1, NoSubleaf, ECX}, 31, "hypervisor"},
		{Word{7, 0, EBX}, 5, "avx2"},
		{Word{7, 0, ECX}, 1, "avx512-vbmi"},
		{Word{7, 0, EDX}, 29, "arch-caps"},
		{Word{7, 1, EAX}, 5, "avx512-bf16"},
		{Word{7, 2, EDX}, 0, "intel-psfd"},
		{Word{0xd, 1, EAX}, 0, "xsaveopt"},
		{Word{0x80000001, NoSubleaf, EDX}, 29, "lm"},
		{Word{0x80000001, NoSubleaf, EDX}, 0, "fpu"},
		{Word{0x80000001, NoSubleaf, ECX}, 0, "lahf-lm"},
		{Word{0x80000008, NoSubleaf, EBX}, 12, "ibpb"},
		{Word{0x80000021, NoSubleaf, EAX}, 2, "lfence-dispatch"},
		{Word{MSRArchCapabilities, 0, MSRLow}, 0, "rdcl-no"},
		{Word{MSRArchCapabilities, 0, MSRHigh}, 30, "its-no"},
		{Word{7, 0, EBX}, 22, ""},
		{Word{2, NoSubleaf, EAX}, 0, ""},
	}
	for _, tt := range tests {
		if got := FeatureName(tt.w, tt.bit); got != tt.want {
			t.Errorf("FeatureName(%v, %d) = %q, want %q", tt.w, tt.bit, got, tt.want)
		}
	}
	if got := (Feature{Word: Word{7, 0, EBX}, Bit: 22}).String(); got != "0x00000007:0.ebx[22]" {
		t.Errorf("unnamed feature string = %q", got)
	}
	if got := (Word{MSRArchCapabilities, 0, MSRHigh}).String(); got != "MSR 0x0000010a.hi" {
		t.Errorf("MSR word string = %q", got)
	}
}

func TestFeatures(t *testing.T) {
	p := samplePolicy(t)
	got := names(p.Features())
	for _, want := range []string{"fpu", "sse2", "avx", "hypervisor", "avx2", "lm", "arch-caps", "xsaves", "rdcl-no", "eibrs", "mds-no", "fsgsbase"} {
		if !slices.Contains(got, want) {
			t.Errorf("Features() lacks %q: %v", want, got)
		}
	}
	if !p.Has(mustFeature(t, "avx2")) || p.Has(mustFeature(t, "avx512f")) {
		t.Error("Has")
	}
}

func TestDiff(t *testing.T) {
	a := samplePolicy(t)
	if d := Diff(a, a.Clone()); d != nil {
		t.Fatalf("Diff of equal policies = %v", d)
	}
	b := a.Clone()
	l7, _ := b.Leaf(7, 0)
	l7.B &^= 1 << 5 // -avx2
	l7.B |= 1 << 16 // +avx512f
	_ = b.SetLeaf(l7)
	l0, _ := b.Leaf(0, NoSubleaf)
	l0.A = 0x16
	_ = b.SetLeaf(l0)
	b.DeleteLeaf(0xd, 1)
	_ = b.SetLeaf(Leaf{0x80000008, NoSubleaf, 0x3027, 0, 0, 0})
	b.DeleteMSR(MSRIntelPlatformInfo)
	_ = b.SetMSR(MSR{Index: MSRArchCapabilities, Value: 0x0000000c_0000002a})

	got := Diff(a, b)
	var lines []string
	for _, d := range got {
		lines = append(lines, d.String())
	}
	want := []string{
		"00000000:ffffffff eax 0000000d -> 00000016",
		"00000007:00000000 ebx 009c6fbb -> 009d6f9b -avx2 +avx512f",
		"0000000d:00000001 (only in a) eax 0000000f -> 00000000 -xsaveopt -xsavec -xgetbv1 -xsaves",
		"80000008:ffffffff (only in b) eax 00000000 -> 00003027",
		"MSR 000000ce (only in a) lo 80000000 -> 00000000",
		"MSR 0000010a lo 0000002b -> 0000002a -rdcl-no",
	}
	if !slices.Equal(lines, want) {
		t.Fatalf("Diff:\n%s\nwant\n%s", strings.Join(lines, "\n"), strings.Join(want, "\n"))
	}
}

func TestCompatible(t *testing.T) {
	host := samplePolicy(t)
	tests := []struct {
		name    string
		edit    func(g *Policy)
		missing []string
	}{
		{"same", func(*Policy) {}, nil},
		{"subset", func(g *Policy) {
			l, _ := g.Leaf(7, 0)
			l.B &^= 1 << 5
			_ = g.SetLeaf(l)
		}, nil},
		{"extra avx512f and unnamed bit", func(g *Policy) {
			l, _ := g.Leaf(7, 0)
			l.B |= 1<<16 | 1<<22
			_ = g.SetLeaf(l)
		}, []string{"avx512f", "0x00000007:0.ebx[22]"}},
		{"leaf the host lacks", func(g *Policy) {
			_ = g.SetLeaf(Leaf{7, 1, 1 << 5, 0, 0, 0})
		}, []string{"avx512-bf16"}},
		{"OS state bits ignored", func(g *Policy) {
			l, _ := g.Leaf(1, NoSubleaf)
			l.C |= 1 << 27
			_ = g.SetLeaf(l)
			l7, _ := g.Leaf(7, 0)
			l7.C |= 1 << 4
			_ = g.SetLeaf(l7)
		}, nil},
		{"arch caps bit", func(g *Policy) {
			_ = g.SetMSR(MSR{Index: MSRArchCapabilities, Value: 0x0000000c_0000002b | 1<<8})
		}, []string{"taa-no"}},
		{"guest saw rsba: fine", func(g *Policy) {
			_ = g.SetMSR(MSR{Index: MSRArchCapabilities, Value: 0x0000000c_0000002b | 1<<2})
		}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := host.Clone()
			tt.edit(g)
			ok, missing := Compatible(g, host)
			if got := names(missing); !slices.Equal(got, tt.missing) || ok != (len(tt.missing) == 0) {
				t.Fatalf("Compatible = %v, %v; want missing %v", ok, got, tt.missing)
			}
		})
	}
	t.Run("host with rsba", func(t *testing.T) {
		h := host.Clone()
		_ = h.SetMSR(MSR{Index: MSRArchCapabilities, Value: 0x0000000c_0000002b | 1<<2})
		if ok, missing := Compatible(host, h); ok || !slices.Equal(names(missing), []string{"rsba"}) {
			t.Fatalf("Compatible = %v, %v", ok, names(missing))
		}
	})
}

func TestStringParsesBack(t *testing.T) {
	p := samplePolicy(t)
	s := p.String()
	if !strings.HasPrefix(s, "Gozen policy: 6 leaves, 2 MSRs\n CPUID:\n  leaf     subleaf  -> eax      ebx      ecx      edx     \n  00000000:ffffffff -> 0000000d:756e6547:6c65746e:49656e69\n") {
		t.Fatalf("unexpected dump:\n%s", s)
	}
	if !strings.Contains(s, "\n  0000010a -> 0000000c0000002b\n") {
		t.Fatalf("MSR line missing:\n%s", s)
	}
	dumps, err := ParseXenCPUID(strings.NewReader("boot noise\n" + s + "more noise\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(dumps) != 1 || dumps[0].Name != DumpName || !dumps[0].Policy.Equal(p) {
		t.Fatalf("parsed %+v", dumps)
	}
}

func TestParseXenCPUIDFiles(t *testing.T) {
	f, err := os.Open("testdata/xen-cpuid-system.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dumps, err := ParseXenCPUID(f)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, d := range dumps {
		got = append(got, d.Name)
	}
	if !slices.Equal(got, []string{"Raw", "Host", "HVM Max"}) {
		t.Fatalf("policies %v", got)
	}
	if dumps[0].DeclaredLeaves != 120 || dumps[0].Policy.NumLeaves() != 2 || dumps[2].Policy.NumMSRs() != 2 {
		t.Fatalf("counts: %+v", dumps[0])
	}
}

func TestParseXenCPUIDRejects(t *testing.T) {
	const head = "Domain 1 policy: 2 leaves, 1 MSRs\n CPUID:\n  leaf     subleaf  -> eax      ebx      ecx      edx\n"
	const msrs = " MSRs:\n  index    -> value\n  000000ce -> 0000000000000000\n"
	tests := []struct {
		name, text string
	}{
		{"bad leaf record", head + "  00000000:ffffffff -> 0000000d:756e6547:6c65746e\n" + msrs},
		{"uppercase hex", head + "  0000000A:ffffffff -> 0000000d:756e6547:6c65746e:49656e69\n" + msrs},
		{"too many leaves", head + "  00000000:ffffffff -> 1:2:3:4\n"[:0] +
			"  00000000:ffffffff -> 00000001:00000000:00000000:00000000\n" +
			"  00000001:ffffffff -> 00000001:00000000:00000000:00000000\n" +
			"  00000002:ffffffff -> 00000001:00000000:00000000:00000000\n" + msrs},
		{"duplicate leaf", head +
			"  00000001:ffffffff -> 00000001:00000000:00000000:00000000\n" +
			"  00000001:ffffffff -> 00000002:00000000:00000000:00000000\n" + msrs},
		{"unsorted", head +
			"  00000002:ffffffff -> 00000001:00000000:00000000:00000000\n" +
			"  00000001:ffffffff -> 00000002:00000000:00000000:00000000\n" + msrs},
		{"MSR count short", head + " MSRs:\n  index    -> value\n"},
		{"bad MSR record", head + " MSRs:\n  index    -> value\n  000000ce -> 00000000\n"},
		{"huge count", "Domain 1 policy: 99999999999999999999 leaves, 1 MSRs\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := ParseXenCPUID(strings.NewReader(tt.text)); !errors.Is(err, ErrSyntax) {
				t.Fatalf("err = %v, want ErrSyntax", err)
			}
		})
	}
}

// fakeCPU answers CPUID from a policy the way hardware would: leaves
// recorded without subleaf ignore ECX, unknown inputs read as zero.
func fakeCPU(p *Policy) CPUIDFunc {
	return func(leaf, sub uint32) (a, b, c, d uint32) {
		l, ok := p.Leaf(leaf, NoSubleaf)
		if !ok {
			l, _ = p.Leaf(leaf, sub)
		}
		return l.A, l.B, l.C, l.D
	}
}

func loadXenDomain(t *testing.T) *Policy {
	t.Helper()
	f, err := os.Open("testdata/xen-cpuid-domain.txt")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	dumps, err := ParseXenCPUID(f)
	if err != nil {
		t.Fatal(err)
	}
	if len(dumps) != 1 || dumps[0].Name != "Domain 3" || dumps[0].DeclaredLeaves != 40 {
		t.Fatalf("dumps = %+v", dumps)
	}
	return dumps[0].Policy
}

func xenHardware(t *testing.T, xen *Policy) *Policy {
	hw := xen.Clone()
	// What the guest sees beyond the static policy: its APIC ID, OSXSAVE
	// (CR4), its x2APIC ID, the XSAVE size for its XCR0, Xen's leaves.
	l1, _ := hw.Leaf(1, NoSubleaf)
	l1.B |= 2 << 24
	l1.C |= 1 << 27
	_ = hw.SetLeaf(l1)
	for s := uint32(0); s < 2; s++ {
		l, _ := hw.Leaf(0xb, s)
		l.D = 2
		_ = hw.SetLeaf(l)
	}
	d0, _ := hw.Leaf(0xd, 0)
	d0.B = 0x340
	_ = hw.SetLeaf(d0)
	for _, l := range []Leaf{
		{0x40000000, NoSubleaf, 0x40000005, 0x566e6558, 0x65584d4d, 0x4d4d566e}, // "XenVMMXenVMM"
		{0x40000001, NoSubleaf, 0x00040013, 0, 0, 0},
		{0x40000002, NoSubleaf, 1, 0x40000000, 0, 0},
		{0x40000003, 0, 0, 0, 0, 0}, {0x40000003, 1, 0, 0, 0, 0}, {0x40000003, 2, 2700000, 0, 0, 0},
		{0x40000004, 0, 0x1c, 2, 3, 0},
		{0x40000005, 0, 0, 0x2c, 0, 0},
	} {
		_ = hw.SetLeaf(l)
	}
	return hw
}

func TestCollectFromAndCompareXen(t *testing.T) {
	xen := loadXenDomain(t)
	hw := xenHardware(t, xen)
	var read []uint32
	rdmsr := func(idx uint32) uint64 {
		read = append(read, idx)
		m, ok := xen.MSR(idx)
		if !ok {
			t.Fatalf("read of MSR %#x, which does not exist", idx)
		}
		return m.Value
	}
	guest, err := CollectFrom(fakeCPU(hw), rdmsr)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(read, []uint32{MSRIntelPlatformInfo, MSRArchCapabilities}) {
		t.Fatalf("MSRs read: %x", read)
	}
	for _, k := range []LeafKey{{0, NoSubleaf}, {3, NoSubleaf}, {4, 3}, {4, 4}, {7, 0}, {0xb, 2}, {0xd, 2}, {0x40000003, 2}, {0x40000005, 0}, {0x80000008, NoSubleaf}} {
		if _, ok := guest.Leaf(k.Leaf, k.Subleaf); !ok {
			t.Errorf("collected policy lacks %v", k)
		}
	}
	for _, k := range []LeafKey{{4, 5}, {7, 1}, {0xb, 3}, {0xd, 3}, {0x40000006, NoSubleaf}, {0x80000009, NoSubleaf}} {
		if _, ok := guest.Leaf(k.Leaf, k.Subleaf); ok {
			t.Errorf("collected policy has unexpected %v", k)
		}
	}

	c := CompareXen(guest, xen)
	if !c.OK() {
		t.Fatalf("comparison failed:\n%v", c)
	}
	if len(c.Dynamic) != 4 || len(c.Ignored) != 8 || c.Matched != 19 {
		t.Fatalf("comparison:\n%v", c)
	}

	// A real difference is reported.
	l7, _ := guest.Leaf(7, 0)
	l7.B |= 1 << 16
	_ = guest.SetLeaf(l7)
	c = CompareXen(guest, xen)
	if c.OK() || len(c.Mismatches) != 1 || !strings.Contains(c.String(), "MISMATCH 00000007:00000000 ebx 009d6fbb -> 009c6fbb -avx512f") {
		t.Fatalf("comparison:\n%v", c)
	}
}

func TestCompareXenSubleafAlignment(t *testing.T) {
	// Xen records leaf 0x10 without subleaf; a guest enumerates subleaves.
	xen, _ := New([]Leaf{{0x10, NoSubleaf, 0, 2, 0, 0}}, []MSR{{Index: 0xce}})
	guest, _ := New([]Leaf{{0x10, 0, 0, 2, 0, 0}, {0x10, 1, 0, 0, 0, 0}}, nil)
	if c := CompareXen(guest, xen); !c.OK() || c.Matched != 1 {
		t.Fatalf("comparison:\n%v", c)
	}
}

func TestCollectFromLimitsAndNoMSRs(t *testing.T) {
	// A CPU that claims absurd maxima and never-ending subleaves.
	evil := func(leaf, sub uint32) (a, b, c, d uint32) {
		switch leaf {
		case 0, 0x80000000:
			return 0xffffffff, 0, 0, 0
		case 4:
			return 1, 0, 0, 0 // type never 0
		case 0xd:
			return 0xffffffff, 0, 0xffffffff, 0xffffffff
		}
		return 0xffffffff, 0xffffffff, 0xffffffff, 0xffffffff
	}
	if _, err := CollectFrom(evil, nil); !errors.Is(err, ErrTooMany) {
		t.Fatalf("err = %v, want ErrTooMany", err)
	}
	// Without the endless subleaves the caps keep it within limits, and no
	// MSR is read without a reader.
	tame := func(leaf, sub uint32) (a, b, c, d uint32) {
		if leaf == 0 || leaf == 0x80000000 {
			return 0xffffffff, 0, 0, 0
		}
		return 0, 0, 0, 1 << 5
	}
	p, err := CollectFrom(tame, nil)
	if err != nil {
		t.Fatal(err)
	}
	if p.NumLeaves() > MaxLeaves || p.NumMSRs() != 0 {
		t.Fatalf("%d leaves, %d MSRs", p.NumLeaves(), p.NumMSRs())
	}
}

func TestCollectHost(t *testing.T) {
	p, err := Collect()
	if errors.Is(err, ErrUnsupported) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	l0, ok := p.Leaf(0, NoSubleaf)
	if !ok || l0.A == 0 {
		t.Fatalf("leaf 0 = %v, %v", l0, ok)
	}
	if CollectsMSRs == (p.NumMSRs() == 0) && CollectsMSRs {
		t.Fatal("MSRs")
	}
	if !p.Has(mustFeature(t, "sse2")) {
		t.Error("amd64 host without sse2?")
	}
	var q Policy
	b, _ := p.MarshalBinary()
	if err := q.UnmarshalBinary(b); err != nil || !q.Equal(p) {
		t.Fatalf("host round trip: %v", err)
	}
}

func TestExtractText(t *testing.T) {
	p := samplePolicy(t)
	txt, _ := p.MarshalText()
	console := "boot\r\n" + BeginMarker + "\r\n" + string(txt[:30]) + "\r\n" + string(txt[30:]) + "\r\n" + EndMarker + "\r\nhalt\n"
	got, err := ExtractText([]byte(console))
	if err != nil {
		t.Fatal(err)
	}
	var q Policy
	if err := q.UnmarshalText(got); err != nil || !q.Equal(p) {
		t.Fatalf("extracted policy: %v", err)
	}
	for _, bad := range []string{"", BeginMarker + "\nabc\n", "abc\n" + EndMarker} {
		if _, err := ExtractText([]byte(bad)); !errors.Is(err, ErrNoMarkers) {
			t.Errorf("ExtractText(%q) err = %v", bad, err)
		}
	}
}
