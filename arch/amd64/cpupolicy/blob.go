package cpupolicy

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
)

// Blob format, version 1 (all integers little-endian):
//
//	offset  size       field
//	0       4          magic "GZCP"
//	4       2          format version (1)
//	6       2          reserved, must be zero
//	8       4          number of CPUID leaves, nl (<= MaxLeaves)
//	12      4          number of MSR entries, nm (<= MaxMSRs)
//	16      24*nl      xen_cpuid_leaf_t records: leaf, subleaf, a, b, c, d
//	...     16*nm      xen_msr_entry_t records: idx, flags, val (uint64)
//	...     4          CRC-32C (Castagnoli) of every preceding byte
//
// Records must be strictly increasing by (leaf, subleaf) and by idx; MSR
// flags must be zero (they are reserved in Xen's ABI).
const (
	// Magic is the four bytes a serialised policy starts with.
	Magic = "GZCP"
	// Version is the blob format version this package writes and reads.
	Version uint16 = 1

	// HeaderSize is the size of the fixed header before the records.
	HeaderSize = 16
	// LeafRecordSize is the size of one serialised xen_cpuid_leaf_t.
	LeafRecordSize = 24
	// MSRRecordSize is the size of one serialised xen_msr_entry_t.
	MSRRecordSize = 16
	// ChecksumSize is the size of the trailing CRC-32C.
	ChecksumSize = 4
)

// Errors returned (wrapped, test with errors.Is) when a policy is rejected.
var (
	ErrBadMagic     = errors.New("cpupolicy: bad magic")
	ErrVersion      = errors.New("cpupolicy: unknown format version")
	ErrReserved     = errors.New("cpupolicy: reserved header field not zero")
	ErrTruncated    = errors.New("cpupolicy: truncated blob")
	ErrTrailingData = errors.New("cpupolicy: trailing data after blob")
	ErrTooMany      = errors.New("cpupolicy: too many records")
	ErrDuplicate    = errors.New("cpupolicy: duplicate record")
	ErrUnsorted     = errors.New("cpupolicy: records not sorted")
	ErrMSRFlags     = errors.New("cpupolicy: MSR flags not zero")
	ErrChecksum     = errors.New("cpupolicy: checksum mismatch")
	ErrBase64       = errors.New("cpupolicy: bad base64 text")
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// MarshalBinary serialises the policy into one blob (see the format above).
// It fails only if the policy does not [Policy.Validate].
func (p *Policy) MarshalBinary() ([]byte, error) {
	if err := p.Validate(); err != nil {
		return nil, fmt.Errorf("cpupolicy: marshal: %w", err)
	}
	n := HeaderSize + LeafRecordSize*len(p.leaves) + MSRRecordSize*len(p.msrs) + ChecksumSize
	b := make([]byte, 0, n)
	b = append(b, Magic...)
	b = binary.LittleEndian.AppendUint16(b, Version)
	b = binary.LittleEndian.AppendUint16(b, 0)
	b = binary.LittleEndian.AppendUint32(b, uint32(len(p.leaves)))
	b = binary.LittleEndian.AppendUint32(b, uint32(len(p.msrs)))
	for _, l := range p.leaves {
		for _, v := range [...]uint32{l.Leaf, l.Subleaf, l.A, l.B, l.C, l.D} {
			b = binary.LittleEndian.AppendUint32(b, v)
		}
	}
	for _, m := range p.msrs {
		b = binary.LittleEndian.AppendUint32(b, m.Index)
		b = binary.LittleEndian.AppendUint32(b, m.Flags)
		b = binary.LittleEndian.AppendUint64(b, m.Value)
	}
	return binary.LittleEndian.AppendUint32(b, crc32.Checksum(b, castagnoli)), nil
}

// UnmarshalBinary replaces p's contents with the policy serialised in data.
// It rejects, with wrapped errors: a wrong magic ([ErrBadMagic]), an unknown
// version ([ErrVersion]), a non-zero reserved field ([ErrReserved]), counts
// above [MaxLeaves]/[MaxMSRs] ([ErrTooMany]), a short blob ([ErrTruncated]),
// bytes after the checksum ([ErrTrailingData]), a checksum mismatch
// ([ErrChecksum]), and records that are duplicated ([ErrDuplicate]), out of
// order ([ErrUnsorted]) or carry MSR flags ([ErrMSRFlags]). On error p is
// left unchanged. data is not retained.
func (p *Policy) UnmarshalBinary(data []byte) error {
	q, err := parseBlob(data)
	if err != nil {
		return fmt.Errorf("cpupolicy: unmarshal: %w", err)
	}
	*p = *q
	return nil
}

func parseBlob(data []byte) (*Policy, error) {
	if len(data) < len(Magic) {
		return nil, fmt.Errorf("%w: %d bytes, need at least %d", ErrTruncated, len(data), HeaderSize+ChecksumSize)
	}
	if string(data[:len(Magic)]) != Magic {
		return nil, fmt.Errorf("%w: %q, want %q", ErrBadMagic, data[:len(Magic)], Magic)
	}
	if len(data) < HeaderSize {
		return nil, fmt.Errorf("%w: %d bytes, header needs %d", ErrTruncated, len(data), HeaderSize)
	}
	le := binary.LittleEndian
	if v := le.Uint16(data[4:]); v != Version {
		return nil, fmt.Errorf("%w: %d (this reader knows %d)", ErrVersion, v, Version)
	}
	if r := le.Uint16(data[6:]); r != 0 {
		return nil, fmt.Errorf("%w: %#x", ErrReserved, r)
	}
	nl, nm := le.Uint32(data[8:]), le.Uint32(data[12:])
	if nl > MaxLeaves {
		return nil, fmt.Errorf("%w: %d CPUID leaves (limit %d)", ErrTooMany, nl, MaxLeaves)
	}
	if nm > MaxMSRs {
		return nil, fmt.Errorf("%w: %d MSRs (limit %d)", ErrTooMany, nm, MaxMSRs)
	}
	want := HeaderSize + LeafRecordSize*int(nl) + MSRRecordSize*int(nm) + ChecksumSize
	switch {
	case len(data) < want:
		return nil, fmt.Errorf("%w: %d bytes, %d leaves and %d MSRs need %d", ErrTruncated, len(data), nl, nm, want)
	case len(data) > want:
		return nil, fmt.Errorf("%w: %d bytes after the %d-byte blob", ErrTrailingData, len(data)-want, want)
	}
	body := data[:want-ChecksumSize]
	if got, sum := le.Uint32(data[want-ChecksumSize:]), crc32.Checksum(body, castagnoli); got != sum {
		return nil, fmt.Errorf("%w: blob says %#08x, contents hash to %#08x", ErrChecksum, got, sum)
	}
	p := &Policy{}
	if nl > 0 {
		p.leaves = make([]Leaf, nl)
	}
	if nm > 0 {
		p.msrs = make([]MSR, nm)
	}
	off := HeaderSize
	for i := range p.leaves {
		r := data[off : off+LeafRecordSize]
		p.leaves[i] = Leaf{le.Uint32(r), le.Uint32(r[4:]), le.Uint32(r[8:]), le.Uint32(r[12:]), le.Uint32(r[16:]), le.Uint32(r[20:])}
		off += LeafRecordSize
	}
	for i := range p.msrs {
		r := data[off : off+MSRRecordSize]
		p.msrs[i] = MSR{le.Uint32(r), le.Uint32(r[4:]), le.Uint64(r[8:])}
		off += MSRRecordSize
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return p, nil
}

// MarshalText returns the binary form encoded as standard, padded base64 on
// one line.
func (p *Policy) MarshalText() ([]byte, error) {
	b, err := p.MarshalBinary()
	if err != nil {
		return nil, err
	}
	out := make([]byte, base64.StdEncoding.EncodedLen(len(b)))
	base64.StdEncoding.Encode(out, b)
	return out, nil
}

// UnmarshalText decodes base64 text (standard alphabet, padded) of the
// binary form and unmarshals it. ASCII white space anywhere in the text,
// such as line breaks a console inserted, is ignored. Decoding failures wrap
// [ErrBase64]; other errors are those of [Policy.UnmarshalBinary].
func (p *Policy) UnmarshalText(text []byte) error {
	clean := bytes.Map(func(r rune) rune {
		switch r {
		case ' ', '\t', '\n', '\r', '\v', '\f':
			return -1
		}
		return r
	}, text)
	b := make([]byte, base64.StdEncoding.DecodedLen(len(clean)))
	n, err := base64.StdEncoding.Strict().Decode(b, clean)
	if err != nil {
		return fmt.Errorf("cpupolicy: unmarshal text: %w: %w", ErrBase64, err)
	}
	return p.UnmarshalBinary(b[:n])
}
