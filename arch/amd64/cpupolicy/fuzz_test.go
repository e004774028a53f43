package cpupolicy

import (
	"bytes"
	"strings"
	"testing"
)

// The seed corpus lives in testdata/fuzz/Fuzz*/; these adds cover the
// same ground so the fuzzers also start well without it.

func FuzzUnmarshalBinary(f *testing.F) {
	p := samplePolicy(f)
	b, _ := p.MarshalBinary()
	empty, _ := (&Policy{}).MarshalBinary()
	f.Add(b)
	f.Add(empty)
	f.Add(b[:len(b)-5])
	f.Fuzz(func(t *testing.T, data []byte) {
		var p Policy
		if err := p.UnmarshalBinary(data); err != nil {
			return
		}
		if err := p.Validate(); err != nil {
			t.Fatalf("accepted an invalid policy: %v", err)
		}
		out, err := p.MarshalBinary()
		if err != nil {
			t.Fatalf("cannot re-marshal an accepted policy: %v", err)
		}
		if !bytes.Equal(out, data) {
			t.Fatalf("accepted blob is not canonical:\n%x\n%x", data, out)
		}
		// The text dump of any accepted policy parses back to it.
		dumps, err := ParseXenCPUID(strings.NewReader(p.String()))
		if err != nil || len(dumps) != 1 || !dumps[0].Policy.Equal(&p) {
			t.Fatalf("String() does not parse back: %v", err)
		}
	})
}

func FuzzUnmarshalText(f *testing.F) {
	p := samplePolicy(f)
	txt, _ := p.MarshalText()
	f.Add(txt)
	f.Add([]byte("R1pDUAEAAAAAAAAAAAAAAA==\n"))
	f.Add([]byte("  " + string(txt[:10]) + "\n" + string(txt[10:]) + "  "))
	f.Fuzz(func(t *testing.T, text []byte) {
		var p Policy
		if err := p.UnmarshalText(text); err != nil {
			return
		}
		out, err := p.MarshalText()
		if err != nil {
			t.Fatalf("cannot re-marshal an accepted policy: %v", err)
		}
		var q Policy
		if err := q.UnmarshalText(out); err != nil || !q.Equal(&p) {
			t.Fatalf("text round trip: %v", err)
		}
	})
}

func FuzzParseXenCPUID(f *testing.F) {
	f.Add(samplePolicy(f).String())
	f.Add("Domain 1 policy: 1 leaves, 0 MSRs\n CPUID:\n  00000000:ffffffff -> 00000001:00000000:00000000:00000000\n MSRs:\n")
	f.Fuzz(func(t *testing.T, text string) {
		dumps, err := ParseXenCPUID(strings.NewReader(text))
		if err != nil {
			return
		}
		for _, d := range dumps {
			if err := d.Policy.Validate(); err != nil {
				t.Fatalf("parsed an invalid policy: %v", err)
			}
		}
	})
}
