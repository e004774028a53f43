package blockfs

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
)

// Partition is a partition found in a disk's partition table.
type Partition struct {
	// Index is its number, from 1 (MBR: the slot 1..4; GPT: the entry).
	Index int
	// Offset and Size are in bytes.
	Offset, Size int64
	// Table is "mbr" or "gpt".
	Table string
	// Type is the MBR type byte (MBR) or the type GUID as stored
	// (GPT, 16 bytes in on-disk order).
	Type []byte
}

// Limits of the partition-table parser.
const (
	// maxGPTEntryBytes bounds the GPT entry array read (the UEFI minimum
	// is 16 KiB; 128 entries of 128 bytes).
	maxGPTEntryBytes = 1 << 20
	gptEntryMin      = 128
)

// mbrTypeGPT is the protective MBR's partition type.
const mbrTypeGPT = 0xee

// Partitions reads the disk's partition table: an MBR's primary
// partitions, or a GPT's entries (behind a protective MBR). A disk
// without an MBR signature has no table (nil, nil). Every field is
// checked against the disk's size; a bad one is an error wrapping
// ErrCorrupt. Extended (logical) MBR partitions are not listed.
func Partitions(dev Device) ([]Partition, error) {
	ss := int64(dev.SectorSize())
	size := dev.Size()
	v, err := newVolume(dev, 0, size, true)
	if err != nil {
		return nil, err
	}
	if size < 512 {
		return nil, nil
	}
	mbr := make([]byte, 512)
	if _, err := v.ReadAt(mbr, 0); err != nil {
		return nil, err
	}
	return parseTables(mbr, ss, size, func(p []byte, off int64) error {
		_, err := v.ReadAt(p, off)
		return err
	})
}

// parseTables parses the MBR in mbr, and the GPT through read if the MBR
// is protective, for a disk of size bytes with sectors of ss bytes.
func parseTables(mbr []byte, ss, size int64, read func([]byte, int64) error) ([]Partition, error) {
	if mbr[510] != 0x55 || mbr[511] != 0xaa {
		return nil, nil
	}
	var parts []Partition
	for i := range 4 {
		e := mbr[446+16*i : 446+16*(i+1)]
		typ := e[4]
		if typ == 0 {
			continue
		}
		if typ == mbrTypeGPT {
			return parseGPT(ss, size, read)
		}
		if e[0] != 0 && e[0] != 0x80 {
			// not a partition table: a boot sector (a FAT volume's, say)
			return nil, nil
		}
		start := int64(binary.LittleEndian.Uint32(e[8:12])) * ss
		n := int64(binary.LittleEndian.Uint32(e[12:16])) * ss
		if start == 0 || n == 0 || start > size || n > size-start {
			return nil, fmt.Errorf("blockfs: MBR partition %d: %d bytes at %d on a disk of %d: %w", i+1, n, start, size, ErrCorrupt)
		}
		parts = append(parts, Partition{Index: i + 1, Offset: start, Size: n, Table: "mbr", Type: []byte{typ}})
	}
	return parts, nil
}

// parseGPT reads the primary GPT header at LBA 1 and its entry array.
func parseGPT(ss, size int64, read func([]byte, int64) error) ([]Partition, error) {
	if size < 3*ss {
		return nil, fmt.Errorf("blockfs: GPT on a disk of %d bytes: %w", size, ErrCorrupt)
	}
	hdr := make([]byte, ss)
	if err := read(hdr, ss); err != nil {
		return nil, err
	}
	if !bytes.Equal(hdr[0:8], []byte("EFI PART")) {
		return nil, fmt.Errorf("blockfs: GPT header signature: %w", ErrCorrupt)
	}
	hsize := binary.LittleEndian.Uint32(hdr[12:16])
	if hsize < 92 || int64(hsize) > ss {
		return nil, fmt.Errorf("blockfs: GPT header size %d: %w", hsize, ErrCorrupt)
	}
	h := bytes.Clone(hdr[:hsize])
	want := binary.LittleEndian.Uint32(h[16:20])
	clear(h[16:20])
	if crc32.ChecksumIEEE(h) != want {
		return nil, fmt.Errorf("blockfs: GPT header checksum: %w", ErrCorrupt)
	}
	sectors := uint64(size / ss)
	first := binary.LittleEndian.Uint64(hdr[40:48])
	last := binary.LittleEndian.Uint64(hdr[48:56])
	arrLBA := binary.LittleEndian.Uint64(hdr[72:80])
	count := uint64(binary.LittleEndian.Uint32(hdr[80:84]))
	esize := uint64(binary.LittleEndian.Uint32(hdr[84:88]))
	arrCRC := binary.LittleEndian.Uint32(hdr[88:92])
	if esize < gptEntryMin || esize&(esize-1) != 0 || count > maxGPTEntryBytes/esize {
		return nil, fmt.Errorf("blockfs: GPT entry array of %d entries of %d bytes: %w", count, esize, ErrCorrupt)
	}
	arrBytes := count * esize
	if arrLBA < 2 || arrLBA >= sectors || arrBytes > (sectors-arrLBA)*uint64(ss) {
		return nil, fmt.Errorf("blockfs: GPT entry array at LBA %d: %w", arrLBA, ErrCorrupt)
	}
	if first > last || last >= sectors {
		return nil, fmt.Errorf("blockfs: GPT usable LBAs %d..%d on %d sectors: %w", first, last, sectors, ErrCorrupt)
	}
	arr := make([]byte, arrBytes)
	if err := read(arr, int64(arrLBA)*ss); err != nil {
		return nil, err
	}
	if crc32.ChecksumIEEE(arr) != arrCRC {
		return nil, fmt.Errorf("blockfs: GPT entry array checksum: %w", ErrCorrupt)
	}
	var parts []Partition
	for i := range count {
		e := arr[i*esize : (i+1)*esize]
		typ := e[0:16]
		if bytes.Equal(typ, make([]byte, 16)) {
			continue
		}
		lo := binary.LittleEndian.Uint64(e[32:40])
		hi := binary.LittleEndian.Uint64(e[40:48])
		if lo < first || hi < lo || hi > last {
			return nil, fmt.Errorf("blockfs: GPT entry %d: LBAs %d..%d outside %d..%d: %w", i+1, lo, hi, first, last, ErrCorrupt)
		}
		parts = append(parts, Partition{
			Index: int(i) + 1, Offset: int64(lo) * ss, Size: int64(hi-lo+1) * ss,
			Table: "gpt", Type: bytes.Clone(typ),
		})
	}
	return parts, nil
}
