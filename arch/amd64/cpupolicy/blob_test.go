package cpupolicy

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"strings"
	"testing"
)

// samplePolicy is a small Intel-like policy with both MSRs.
func samplePolicy(t testing.TB) *Policy {
	t.Helper()
	p, err := New([]Leaf{
		{0x80000001, NoSubleaf, 0, 0, 0x00000121, 0x2c100800},
		{0, NoSubleaf, 0xd, 0x756e6547, 0x6c65746e, 0x49656e69},
		{1, NoSubleaf, 0x000906ea, 0x00040800, 0xf7fa3203, 0x1f8bfbff},
		{7, 0, 0, 0x009c6fbb, 0x00400004, 0xbc000400},
		{0xd, 1, 0xf, 0, 0, 0},
		{0x80000000, NoSubleaf, 0x80000008, 0, 0, 0},
	}, []MSR{
		{Index: MSRArchCapabilities, Value: 0x0000000c_0000002b},
		{Index: MSRIntelPlatformInfo, Value: 0x80000000},
	})
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// rawBlob assembles a blob field by field, with a correct checksum unless
// badSum.
func rawBlob(magic string, version, reserved uint16, nl, nm uint32, records []byte, badSum bool) []byte {
	b := []byte(magic)
	b = binary.LittleEndian.AppendUint16(b, version)
	b = binary.LittleEndian.AppendUint16(b, reserved)
	b = binary.LittleEndian.AppendUint32(b, nl)
	b = binary.LittleEndian.AppendUint32(b, nm)
	b = append(b, records...)
	sum := crc32.Checksum(b, crc32.MakeTable(crc32.Castagnoli))
	if badSum {
		sum ^= 1
	}
	return binary.LittleEndian.AppendUint32(b, sum)
}

func leafRec(ls ...Leaf) []byte {
	var b []byte
	for _, l := range ls {
		for _, v := range []uint32{l.Leaf, l.Subleaf, l.A, l.B, l.C, l.D} {
			b = binary.LittleEndian.AppendUint32(b, v)
		}
	}
	return b
}

func msrRec(ms ...MSR) []byte {
	var b []byte
	for _, m := range ms {
		b = binary.LittleEndian.AppendUint32(b, m.Index)
		b = binary.LittleEndian.AppendUint32(b, m.Flags)
		b = binary.LittleEndian.AppendUint64(b, m.Value)
	}
	return b
}

func TestRoundTripBinary(t *testing.T) {
	for name, p := range map[string]*Policy{
		"empty":  {},
		"sample": samplePolicy(t),
	} {
		t.Run(name, func(t *testing.T) {
			b, err := p.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			want := HeaderSize + LeafRecordSize*p.NumLeaves() + MSRRecordSize*p.NumMSRs() + ChecksumSize
			if len(b) != want {
				t.Fatalf("blob is %d bytes, want %d", len(b), want)
			}
			var q Policy
			if err := q.UnmarshalBinary(b); err != nil {
				t.Fatal(err)
			}
			if !q.Equal(p) {
				t.Fatalf("round trip changed the policy:\n%v\nvs\n%v", p, &q)
			}
			b2, _ := q.MarshalBinary()
			if !bytes.Equal(b, b2) {
				t.Fatal("re-marshalled blob differs")
			}
		})
	}
}

func TestBlobLayout(t *testing.T) {
	p, _ := New([]Leaf{{1, NoSubleaf, 2, 3, 4, 5}}, []MSR{{Index: 0x10a, Value: 0x0102030405060708}})
	b, _ := p.MarshalBinary()
	want := rawBlob("GZCP", 1, 0, 1, 1, append(leafRec(Leaf{1, NoSubleaf, 2, 3, 4, 5}), msrRec(MSR{Index: 0x10a, Value: 0x0102030405060708})...), false)
	if !bytes.Equal(b, want) {
		t.Fatalf("blob\n%x\nwant\n%x", b, want)
	}
}

func TestUnmarshalBinaryRejects(t *testing.T) {
	l1 := Leaf{1, NoSubleaf, 1, 2, 3, 4}
	l7 := Leaf{7, 0, 1, 2, 3, 4}
	good := rawBlob("GZCP", 1, 0, 2, 1, append(leafRec(l1, l7), msrRec(MSR{Index: 0xce, Value: 1})...), false)
	tests := []struct {
		name string
		data []byte
		want error
	}{
		{"nil", nil, ErrTruncated},
		{"three bytes", []byte("GZC"), ErrTruncated},
		{"bad magic", rawBlob("XZCP", 1, 0, 0, 0, nil, false), ErrBadMagic},
		{"bad magic short", []byte("ABCDE"), ErrBadMagic},
		{"header cut", good[:10], ErrTruncated},
		{"version 0", rawBlob("GZCP", 0, 0, 0, 0, nil, false), ErrVersion},
		{"version 2", rawBlob("GZCP", 2, 0, 0, 0, nil, false), ErrVersion},
		{"reserved", rawBlob("GZCP", 1, 1, 0, 0, nil, false), ErrReserved},
		{"too many leaves", rawBlob("GZCP", 1, 0, MaxLeaves+1, 0, nil, false), ErrTooMany},
		{"huge leaf count", rawBlob("GZCP", 1, 0, 0xffffffff, 0, nil, false), ErrTooMany},
		{"too many MSRs", rawBlob("GZCP", 1, 0, 0, MaxMSRs+1, nil, false), ErrTooMany},
		{"no checksum", good[:len(good)-4], ErrTruncated},
		{"record cut", good[:HeaderSize+30], ErrTruncated},
		{"count above records", rawBlob("GZCP", 1, 0, 3, 1, append(leafRec(l1, l7), msrRec(MSR{Index: 0xce})...), false), ErrTruncated},
		{"trailing byte", append(bytes.Clone(good), 0), ErrTrailingData},
		{"trailing blob", append(bytes.Clone(good), good...), ErrTrailingData},
		{"bad checksum", rawBlob("GZCP", 1, 0, 1, 0, leafRec(l1), true), ErrChecksum},
		{"flipped bit", func() []byte { b := bytes.Clone(good); b[HeaderSize+9] ^= 0x40; return b }(), ErrChecksum},
		{"duplicate leaf", rawBlob("GZCP", 1, 0, 2, 0, leafRec(l1, l1), false), ErrDuplicate},
		{"duplicate leaf other values", rawBlob("GZCP", 1, 0, 2, 0, leafRec(l7, Leaf{7, 0, 9, 9, 9, 9}), false), ErrDuplicate},
		{"unsorted leaves", rawBlob("GZCP", 1, 0, 2, 0, leafRec(l7, l1), false), ErrUnsorted},
		{"unsorted subleaves", rawBlob("GZCP", 1, 0, 2, 0, leafRec(Leaf{Leaf: 4, Subleaf: 1}, Leaf{Leaf: 4, Subleaf: 0}), false), ErrUnsorted},
		{"duplicate MSR", rawBlob("GZCP", 1, 0, 0, 2, msrRec(MSR{Index: 0xce}, MSR{Index: 0xce, Value: 1}), false), ErrDuplicate},
		{"unsorted MSRs", rawBlob("GZCP", 1, 0, 0, 2, msrRec(MSR{Index: 0x10a}, MSR{Index: 0xce}), false), ErrUnsorted},
		{"MSR flags", rawBlob("GZCP", 1, 0, 0, 1, msrRec(MSR{Index: 0xce, Flags: 1}), false), ErrMSRFlags},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := samplePolicy(t)
			before := p.Clone()
			err := p.UnmarshalBinary(tt.data)
			if !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
			if !strings.HasPrefix(err.Error(), "cpupolicy: unmarshal: ") {
				t.Errorf("error not wrapped with context: %v", err)
			}
			if !p.Equal(before) {
				t.Error("failed unmarshal modified the policy")
			}
		})
	}
	var p Policy
	if err := p.UnmarshalBinary(good); err != nil {
		t.Fatalf("good blob rejected: %v", err)
	}
}

func TestMaxCountsAccepted(t *testing.T) {
	p := &Policy{}
	for i := range MaxLeaves {
		if err := p.SetLeaf(Leaf{Leaf: uint32(i), Subleaf: NoSubleaf, A: uint32(i)}); err != nil {
			t.Fatal(err)
		}
	}
	for i := range MaxMSRs {
		if err := p.SetMSR(MSR{Index: uint32(i), Value: uint64(i)}); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.SetLeaf(Leaf{Leaf: 0xffff, Subleaf: 1}); !errors.Is(err, ErrTooMany) {
		t.Fatalf("leaf beyond limit: err = %v", err)
	}
	if err := p.SetMSR(MSR{Index: 0xffff}); !errors.Is(err, ErrTooMany) {
		t.Fatalf("MSR beyond limit: err = %v", err)
	}
	b, err := p.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	var q Policy
	if err := q.UnmarshalBinary(b); err != nil || !q.Equal(p) {
		t.Fatalf("full policy round trip: %v", err)
	}
}

func TestTextRoundTrip(t *testing.T) {
	p := samplePolicy(t)
	txt, err := p.MarshalText()
	if err != nil {
		t.Fatal(err)
	}
	if bytes.ContainsAny(txt, "\n ") {
		t.Fatal("text form is not one line")
	}
	// Wrapped as a console might print it.
	var wrapped []byte
	for i := 0; i < len(txt); i += 20 {
		wrapped = append(wrapped, txt[i:min(i+20, len(txt))]...)
		wrapped = append(wrapped, "\r\n"...)
	}
	for name, in := range map[string][]byte{"plain": txt, "wrapped": wrapped} {
		var q Policy
		if err := q.UnmarshalText(in); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if !q.Equal(p) {
			t.Fatalf("%s: text round trip changed the policy", name)
		}
	}
}

func TestUnmarshalTextRejects(t *testing.T) {
	p := samplePolicy(t)
	txt, _ := p.MarshalText()
	tests := []struct {
		name string
		text string
		want error
	}{
		{"empty", "", ErrTruncated},
		{"not base64", "!!!!", ErrBase64},
		{"bad padding", string(txt[:len(txt)-1]), ErrBase64},
		{"garbage", "aGVsbG8gd29ybGQ=", ErrBadMagic},
		{"blob cut", string(txt[:len(txt)-8]), ErrTruncated},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var q Policy
			if err := q.UnmarshalText([]byte(tt.text)); !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want %v", err, tt.want)
			}
		})
	}
}

func TestNewAndSetters(t *testing.T) {
	if _, err := New([]Leaf{{Leaf: 1}, {Leaf: 1}}, nil); !errors.Is(err, ErrDuplicate) {
		t.Errorf("duplicate leaf: err = %v", err)
	}
	if _, err := New(nil, []MSR{{Index: 1}, {Index: 1}}); !errors.Is(err, ErrDuplicate) {
		t.Errorf("duplicate MSR: err = %v", err)
	}
	if _, err := New(nil, []MSR{{Index: 1, Flags: 2}}); !errors.Is(err, ErrMSRFlags) {
		t.Errorf("MSR flags: err = %v", err)
	}
	p := &Policy{}
	for _, l := range []Leaf{{Leaf: 7, Subleaf: 1}, {Leaf: 7, Subleaf: 0}, {Leaf: 1, Subleaf: NoSubleaf, A: 1}, {Leaf: 1, Subleaf: NoSubleaf, A: 2}} {
		if err := p.SetLeaf(l); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Validate(); err != nil {
		t.Fatal(err)
	}
	if l, ok := p.Leaf(1, NoSubleaf); !ok || l.A != 2 || p.NumLeaves() != 3 {
		t.Fatalf("SetLeaf did not replace: %v", p.Leaves())
	}
	p.DeleteLeaf(7, 0)
	if _, ok := p.Leaf(7, 0); ok || p.NumLeaves() != 2 {
		t.Fatal("DeleteLeaf")
	}
	if err := p.SetMSR(MSR{Index: 5, Flags: 1}); !errors.Is(err, ErrMSRFlags) {
		t.Fatalf("SetMSR flags: %v", err)
	}
	_ = p.SetMSR(MSR{Index: 0x10a, Value: 1})
	_ = p.SetMSR(MSR{Index: 0xce, Value: 2})
	if ms := p.MSRs(); len(ms) != 2 || ms[0].Index != 0xce {
		t.Fatalf("MSRs not sorted: %v", ms)
	}
	p.DeleteMSR(0xce)
	if _, ok := p.MSR(0xce); ok {
		t.Fatal("DeleteMSR")
	}
	// Mutating the returned slices must not affect the policy.
	p.Leaves()[0].A = 99
	if l, _ := p.Leaf(1, NoSubleaf); l.A != 2 {
		t.Fatal("Leaves() aliases the policy")
	}
}
