// Package teststream is the byte stream that Gozen's data tests send and
// check, the Go twin of the C stream in qemu/vchanpeer so the two ends of
// an interop test agree byte for byte.
//
// The stream of seed S is a 64-bit xorshift (13, 7, 17) state x = S (0
// means 0x9e3779b97f4a7c15); for every 8 bytes, x ^= x << 13; x ^= x >> 7;
// x ^= x << 17; then the 8 bytes of x, little-endian. Checksums are CRC-32
// (IEEE 802.3, as hash/crc32.ChecksumIEEE) of the bytes moved.
package teststream

import (
	"encoding/binary"
	"hash/crc32"
)

// DefaultSeed is the state a zero seed starts from (xorshift must not
// start at zero).
const DefaultSeed = 0x9e3779b97f4a7c15

// Stream generates the stream of one seed; it keeps its place across
// calls, so the stream can be produced in pieces of any size.
type Stream struct {
	x    uint64
	word [8]byte
	used int // bytes of word already emitted (8: none left)
}

// New returns the stream of seed, positioned at its first byte.
func New(seed uint64) *Stream {
	if seed == 0 {
		seed = DefaultSeed
	}
	return &Stream{x: seed, used: 8}
}

func (s *Stream) step() uint64 {
	x := s.x
	x ^= x << 13
	x ^= x >> 7
	x ^= x << 17
	s.x = x
	return x
}

// Fill writes the next len(p) bytes of the stream to p.
func (s *Stream) Fill(p []byte) {
	for len(p) > 0 && s.used < 8 {
		p[0] = s.word[s.used]
		s.used++
		p = p[1:]
	}
	for len(p) >= 8 {
		binary.LittleEndian.PutUint64(p, s.step())
		p = p[8:]
	}
	if len(p) > 0 {
		binary.LittleEndian.PutUint64(s.word[:], s.step())
		s.used = copy(p, s.word[:])
	}
}

// Read fills p with the next bytes of the stream; it never fails, so a
// Stream is an endless io.Reader.
func (s *Stream) Read(p []byte) (int, error) {
	s.Fill(p)
	return len(p), nil
}

// Bytes returns the first n bytes of the stream of seed.
func Bytes(seed uint64, n int) []byte {
	b := make([]byte, n)
	New(seed).Fill(b)
	return b
}

// CRC returns the CRC-32 (IEEE) of the first n bytes of the stream of
// seed, without holding them all in memory.
func CRC(seed uint64, n int64) uint32 {
	if n <= 0 {
		return 0
	}
	st := New(seed)
	buf := make([]byte, min(n, 64<<10))
	var c uint32
	for n > 0 {
		k := min(n, int64(len(buf)))
		st.Fill(buf[:k])
		c = crc32.Update(c, crc32.IEEETable, buf[:k])
		n -= k
	}
	return c
}
