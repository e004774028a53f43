package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gozen-dev/gozen/arch/amd64/cpupolicy"
)

func writePolicy(t *testing.T, dir, name string, p *cpupolicy.Policy, text bool) string {
	t.Helper()
	var b []byte
	var err error
	if text {
		b, err = p.MarshalText()
	} else {
		b, err = p.MarshalBinary()
	}
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func policies(t *testing.T) (host, guest, bigger *cpupolicy.Policy) {
	t.Helper()
	host, err := cpupolicy.New([]cpupolicy.Leaf{
		{Leaf: 0, Subleaf: cpupolicy.NoSubleaf, A: 7},
		{Leaf: 1, Subleaf: cpupolicy.NoSubleaf, C: 1 << 28, D: 1<<25 | 1<<26},
		{Leaf: 7, Subleaf: 0, B: 1 << 5},
	}, []cpupolicy.MSR{{Index: cpupolicy.MSRArchCapabilities, Value: 1}})
	if err != nil {
		t.Fatal(err)
	}
	guest = host.Clone()
	l, _ := guest.Leaf(7, 0)
	l.B = 0
	_ = guest.SetLeaf(l)
	bigger = host.Clone()
	l.B = 1<<5 | 1<<16
	_ = bigger.SetLeaf(l)
	return host, guest, bigger
}

func runCmd(t *testing.T, stdin string, args ...string) (int, string, string) {
	t.Helper()
	var out, errb bytes.Buffer
	st := run(args, strings.NewReader(stdin), &out, &errb)
	return st, out.String(), errb.String()
}

func TestCommands(t *testing.T) {
	dir := t.TempDir()
	host, guest, bigger := policies(t)
	hostBin := writePolicy(t, dir, "host.bin", host, false)
	hostTxt := writePolicy(t, dir, "host.txt", host, true)
	guestBin := writePolicy(t, dir, "guest.bin", guest, false)
	biggerBin := writePolicy(t, dir, "bigger.bin", bigger, false)
	txt, _ := host.MarshalText()
	console := filepath.Join(dir, "console.log")
	os.WriteFile(console, []byte("SeaBIOS\n"+host.String()+cpupolicy.BeginMarker+"\n"+string(txt)+"\n"+cpupolicy.EndMarker+"\n"), 0o644)
	dump := filepath.Join(dir, "dump.txt")
	os.WriteFile(dump, []byte(host.String()), 0o644)
	corrupt := filepath.Join(dir, "corrupt.bin")
	b, _ := os.ReadFile(hostBin)
	b[len(b)-1] ^= 1
	os.WriteFile(corrupt, b, 0o644)

	tests := []struct {
		name   string
		stdin  string
		args   []string
		status int
		out    string // substring of stdout
		errOut string // substring of stderr
	}{
		{"show binary", "", []string{"show", hostBin}, 0, "avx2", ""},
		{"show text", "", []string{"show", hostTxt}, 0, "Gozen policy: 3 leaves, 1 MSRs", ""},
		{"show stdin", string(txt), []string{"show", "-"}, 0, "0x00000001.edx           sse sse2", ""},
		{"show console", "", []string{"show", console}, 0, "rdcl-no", ""},
		{"show dump", "", []string{"show", dump}, 0, "avx2", ""},
		{"show corrupt", "", []string{"show", corrupt}, 2, "", "checksum mismatch"},
		{"show missing file", "", []string{"show", filepath.Join(dir, "nope")}, 2, "", "reading policy"},
		{"show junk", "hello", []string{"show", "-"}, 2, "", "not a policy"},
		{"diff same", "", []string{"diff", hostBin, hostTxt}, 0, "", ""},
		{"diff differs", "", []string{"diff", hostBin, biggerBin}, 1, "00000007:00000000 ebx 00000020 -> 00010020 +avx512f", ""},
		{"compat ok", "", []string{"compat", guestBin, hostBin}, 0, "compatible", ""},
		{"compat missing", "", []string{"compat", biggerBin, hostBin}, 1, "avx512f", ""},
		{"compat usage", "", []string{"compat", guestBin}, 2, "", "usage"},
		{"two stdins", "", []string{"diff", "-", "-"}, 2, "", "standard input"},
		{"unknown", "", []string{"frobnicate"}, 2, "", "unknown command"},
		{"no args", "", nil, 2, "", "usage"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, out, errOut := runCmd(t, tt.stdin, tt.args...)
			if st != tt.status || !strings.Contains(out, tt.out) || !strings.Contains(errOut, tt.errOut) {
				t.Fatalf("status %d (want %d)\nstdout:\n%s\nstderr:\n%s", st, tt.status, out, errOut)
			}
		})
	}
}

func TestCompareXenCPUID(t *testing.T) {
	dir := t.TempDir()
	xenOut := filepath.Join(dir, "xen.txt")
	os.WriteFile(xenOut, []byte(`Domain 7 policy: 9 leaves, 2 MSRs
 CPUID:
  leaf     subleaf  -> eax      ebx      ecx      edx     
  00000000:ffffffff -> 00000007:00000000:00000000:00000000
  00000001:ffffffff -> 00000000:00000000:10000000:06000000
  00000007:00000000 -> 00000000:00000020:00000000:00000000
 MSRs:
  index    -> value           
  000000ce -> 0000000000000000
  0000010a -> 0000000000000001
`), 0o644)
	host, _, bigger := policies(t)
	// The guest sees its APIC ID, OSXSAVE and Xen's leaves on top.
	seen := host.Clone()
	l1, _ := seen.Leaf(1, cpupolicy.NoSubleaf)
	l1.B |= 3 << 24
	l1.C |= 1 << 27
	_ = seen.SetLeaf(l1)
	_ = seen.SetLeaf(cpupolicy.Leaf{Leaf: 0x40000000, Subleaf: cpupolicy.NoSubleaf, A: 0x40000001, B: 0x566e6558, C: 0x65584d4d, D: 0x4d4d566e})
	txt, _ := seen.MarshalText()
	console := filepath.Join(dir, "guest.log")
	os.WriteFile(console, []byte(seen.String()+cpupolicy.BeginMarker+"\n"+string(txt)+"\n"+cpupolicy.EndMarker+"\n"), 0o644)
	dumpOnly := filepath.Join(dir, "guest-dump.log")
	os.WriteFile(dumpOnly, []byte("boot\n"+seen.String()), 0o644)
	bad := writePolicy(t, dir, "bigger.txt", bigger, true)

	for _, g := range []string{console, dumpOnly} {
		st, out, errOut := runCmd(t, "", "compare-xen-cpuid", g, xenOut)
		if st != 0 || !strings.Contains(out, "guest vs Domain 7 policy: matched 3, mismatched 0, dynamic 1, hypervisor leaves ignored 1") {
			t.Fatalf("%s: status %d\n%s\n%s", g, st, out, errOut)
		}
	}
	st, out, _ := runCmd(t, "", "compare-xen-cpuid", bad, xenOut)
	if st != 1 || !strings.Contains(out, "MISMATCH 00000007:00000000 ebx 00010020 -> 00000020 -avx512f") {
		t.Fatalf("status %d\n%s", st, out)
	}
	st, _, errOut := runCmd(t, "", "compare-xen-cpuid", "-policy", "Host", bad, xenOut)
	if st != 2 || !strings.Contains(errOut, `found: "Domain 7"`) {
		t.Fatalf("status %d\n%s", st, errOut)
	}
}

func TestCollect(t *testing.T) {
	out := filepath.Join(t.TempDir(), "host.bin")
	st, _, errOut := runCmd(t, "", "collect", "-o", out)
	if st != 0 {
		t.Skipf("collect unavailable here: %s", errOut)
	}
	if st, so, _ := runCmd(t, "", "show", out); st != 0 || !strings.Contains(so, "00000000:ffffffff -> ") {
		t.Fatalf("show collected: %d\n%s", st, so)
	}
	st, so, _ := runCmd(t, "", "collect")
	if st != 0 || !strings.Contains(so, cpupolicy.BeginMarker) {
		t.Fatalf("collect text: %d\n%s", st, so)
	}
}
