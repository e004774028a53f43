//go:build tamago

package main

import "encoding/binary"

// stream is qemu/vchanpeer's test stream: a 64-bit xorshift (13, 7, 17)
// state from the seed (0 means 0x9e3779b97f4a7c15), each state emitted as
// 8 little-endian bytes.
type stream struct {
	x    uint64
	word [8]byte
	used int // bytes of word already emitted (8: none left)
}

func newStream(seed uint64) *stream {
	if seed == 0 {
		seed = 0x9e3779b97f4a7c15
	}
	return &stream{x: seed, used: 8}
}

func (s *stream) step() uint64 {
	x := s.x
	x ^= x << 13
	x ^= x >> 7
	x ^= x << 17
	s.x = x
	return x
}

// fill writes the next len(p) bytes of the stream to p.
func (s *stream) fill(p []byte) {
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
