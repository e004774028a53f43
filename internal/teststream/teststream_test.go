package teststream

import (
	"bytes"
	"encoding/hex"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"testing"
)

// golden are checksums printed by qemu/vchanpeer's C stream and CRC code
// (compiled on its own), so the Go copy is held to the C one.
var golden = []struct {
	seed uint64
	n    int64
	crc  uint32
}{
	{0, 1, 0x7a6530d8},
	{0, 13, 0x18e1bce1},
	{0, 1 << 20, 0x665310df},
	{1, 8, 0x4423c91c},
	{1, 4096, 0xb84a363e},
	{1, 64 << 20, 0xc8160c63},
	{7, 13, 0xcbfe9f85},
	{101, 1 << 20, 0x27999ffe},
	{0xdeadbeefcafe, 4096, 0xc9c6d428},
	{0xdeadbeefcafe, 1 << 20, 0xb77cde40},
}

func TestGolden(t *testing.T) {
	for _, g := range golden {
		if got := CRC(g.seed, g.n); got != g.crc {
			t.Errorf("CRC(%#x, %d) = %#08x, want %#08x (vchanpeer's)", g.seed, g.n, got, g.crc)
		}
		if g.n <= 1<<20 {
			if got := crc32.ChecksumIEEE(Bytes(g.seed, int(g.n))); got != g.crc {
				t.Errorf("crc32(Bytes(%#x, %d)) = %#08x, want %#08x", g.seed, g.n, got, g.crc)
			}
		}
	}
}

func TestFirstBytes(t *testing.T) {
	// seed 1: x = 0x2001, 0x2041, 0x40822041, little-endian
	want := "41208240000000004114010c06410010"
	if got := hex.EncodeToString(Bytes(1, 16)); got != want {
		t.Errorf("Bytes(1, 16) = %s, want %s", got, want)
	}
	if !bytes.Equal(Bytes(0, 64), Bytes(DefaultSeed, 64)) {
		t.Error("seed 0 is not DefaultSeed")
	}
}

// TestPieces checks that the stream comes out the same whatever the sizes
// of the pieces it is produced in.
func TestPieces(t *testing.T) {
	const n = 10000
	want := Bytes(42, n)
	tests := []struct {
		name  string
		sizes func(i int) int
	}{
		{"ones", func(int) int { return 1 }},
		{"sevens", func(int) int { return 7 }},
		{"eights", func(int) int { return 8 }},
		{"nines", func(int) int { return 9 }},
		{"random", func() func(int) int {
			r := rand.New(rand.NewPCG(1, 2))
			return func(int) int { return r.IntN(100) }
		}()},
	}
	for _, tt := range tests {
		s := New(42)
		got := make([]byte, 0, n)
		for i := 0; len(got) < n; i++ {
			k := min(tt.sizes(i), n-len(got))
			p := make([]byte, k)
			s.Fill(p)
			got = append(got, p...)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s: stream in pieces differs from Bytes", tt.name)
		}
	}
}

func TestReader(t *testing.T) {
	got, err := io.ReadAll(io.LimitReader(New(5), 1000))
	if err != nil || !bytes.Equal(got, Bytes(5, 1000)) {
		t.Errorf("reading the stream: %v, equal %v", err, bytes.Equal(got, Bytes(5, 1000)))
	}
	if CRC(5, 0) != 0 || CRC(5, -1) != 0 {
		t.Error("CRC of no bytes is not 0")
	}
}
