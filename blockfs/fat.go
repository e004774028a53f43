package blockfs

import (
	"encoding/binary"
	"fmt"
	"strings"
)

// DefaultMaxFATBytes is Options.MaxFATBytes when zero: 8 MiB of FAT,
// two million clusters (an 8 GiB volume with 4 KiB clusters). The
// library keeps the whole FAT in memory, and rewrites it on every
// cluster allocation.
const DefaultMaxFATBytes = 8 << 20

// maxDirBytes is the largest directory FAT allows: 65536 entries of 32
// bytes.
const maxDirBytes = 65536 * 32

// FAT32 entry values.
const (
	fatFree  = 0
	fatBad   = 0x0ffffff7
	fatEOC   = 0x0ffffff8 // and above
	fatMask  = 0x0fffffff
	attrLFN  = 0x0f
	attrVol  = 0x08
	attrDir  = 0x10
	dirEnd   = 0x00
	dirFree  = 0xe5
	dirEntry = 32
)

// layout is a checked FAT32 volume.
type layout struct {
	bps         int64  // bytes per sector
	clusterSize int64  // bytes per cluster
	size        int64  // the volume's size from the boot sector
	fatOff      int64  // the first FAT
	fatBytes    int64  // one FAT
	dataOff     int64  // cluster 2
	clusters    uint32 // data clusters: numbers 2..clusters+1
	fsinfo      int64  // the FSInfo sector's offset
	backupInfo  int64  // the backup FSInfo sector's offset (0: none)
	// unsafeBackup means a backup boot sector field that makes
	// go-diskfs write its FSInfo copy outside the reserved sectors.
	unsafeBackup bool
}

// checkBootSector validates a FAT32 boot sector (the first 512 bytes of
// the volume) against the volume's size, including what go-diskfs
// assumes without checking: two FATs, the root directory at cluster 2.
func checkBootSector(b []byte, volSize, maxFAT int64) (*layout, error) {
	bad := func(format string, a ...any) (*layout, error) {
		return nil, fmt.Errorf("blockfs: FAT32 boot sector: "+format+": %w", append(a, ErrCorrupt)...)
	}
	if len(b) < 512 || b[510] != 0x55 || b[511] != 0xaa {
		return bad("no boot signature")
	}
	le16 := func(o int) int64 { return int64(binary.LittleEndian.Uint16(b[o:])) }
	le32 := func(o int) int64 { return int64(binary.LittleEndian.Uint32(b[o:])) }
	bps := le16(0x0b)
	spc := int64(b[0x0d])
	reserved := le16(0x0e)
	nfats := int64(b[0x10])
	rootEntries := le16(0x11)
	total := le16(0x13)
	spf := le16(0x16)
	switch {
	case bps < 512 || bps > 4096 || bps&(bps-1) != 0:
		return bad("%d bytes per sector", bps)
	case spc == 0 || spc&(spc-1) != 0 || spc*bps > 64<<10:
		return bad("%d sectors per cluster", spc)
	case reserved == 0:
		return bad("no reserved sectors")
	case rootEntries != 0 || spf != 0 || total != 0:
		return nil, fmt.Errorf("blockfs: not a FAT32 volume (FAT12/16 fields set): %w", ErrUnsupported)
	case nfats != 2:
		return nil, fmt.Errorf("blockfs: FAT32 with %d FATs (only 2 supported): %w", nfats, ErrUnsupported)
	}
	total = le32(0x20)
	spf = le32(0x24)
	version := le16(0x2a)
	root := le32(0x2c)
	fsinfo := le16(0x30)
	backup := le16(0x32)
	l := &layout{bps: bps, clusterSize: spc * bps, size: total * bps, fsinfo: fsinfo * bps}
	// go-diskfs writes a copy of FSInfo after the backup boot sector
	// (as mkfs.fat lays them out: 6 and 7) whenever it writes the FAT.
	switch {
	case backup == 0:
	case backup+1 < reserved && backup+1 != fsinfo:
		l.backupInfo = (backup + 1) * bps
	case backup+1 >= reserved:
		l.unsafeBackup = true
	}
	l.fatOff = reserved * bps
	l.fatBytes = spf * bps
	l.dataOff = l.fatOff + 2*l.fatBytes
	switch {
	case version != 0:
		return bad("version %#x", version)
	case root != 2:
		return nil, fmt.Errorf("blockfs: FAT32 root directory at cluster %d (only 2 supported): %w", root, ErrUnsupported)
	case fsinfo == 0 || fsinfo >= reserved:
		return bad("FSInfo sector %d of %d reserved", fsinfo, reserved)
	case spf == 0:
		return bad("empty FAT")
	case l.fatBytes > maxFAT:
		return nil, fmt.Errorf("blockfs: FAT of %d bytes, more than the limit of %d: %w", l.fatBytes, maxFAT, ErrTooLarge)
	case l.size > volSize:
		return bad("%d sectors, more than the volume's %d bytes", total, volSize)
	case l.dataOff >= l.size || l.dataOff > 1<<32-1:
		return bad("data area at %d in a volume of %d", l.dataOff, l.size)
	}
	// A FAT too short for the data area leaves the last clusters
	// unused (go-diskfs makes FATs of one entry per cluster, two short).
	n := min((l.size-l.dataOff)/l.clusterSize, l.fatBytes/4-2)
	if n < 1 || n > fatMask-10 {
		return bad("%d clusters for a FAT of %d entries", n, l.fatBytes/4)
	}
	l.clusters = uint32(n)
	return l, nil
}

// fatCheck holds a FAT's chains while its directories are checked.
type fatCheck struct {
	l      *layout
	next   []uint32 // entries 0..clusters+1
	length []uint32 // chain length from each cluster (0: free or bad)
}

// checkFAT parses the FAT in raw and checks that every chain stays in
// the data area and ends (no loop), computing each cluster's chain
// length.
func checkFAT(l *layout, raw []byte) (*fatCheck, error) {
	n := l.clusters + 2
	c := &fatCheck{l: l, next: make([]uint32, n), length: make([]uint32, n)}
	for i := uint32(2); i < n; i++ {
		v := binary.LittleEndian.Uint32(raw[4*i:])
		switch {
		case v == fatFree, v == fatBad, v&fatMask >= fatEOC:
		case v >= 2 && v < n:
		default:
			return nil, fmt.Errorf("blockfs: FAT entry %d = %#x outside the %d clusters: %w", i, v, l.clusters, ErrCorrupt)
		}
		c.next[i] = v
	}
	const onPath = ^uint32(0)
	var path []uint32
	for i := uint32(2); i < n; i++ {
		if c.length[i] != 0 || c.next[i] == fatFree || c.next[i] == fatBad {
			continue
		}
		// walk until a known length or the end, then unwind
		path = path[:0]
		cur := i
		var tail uint32
		for {
			v := c.next[cur]
			if c.length[cur] == onPath {
				return nil, fmt.Errorf("blockfs: FAT chain through cluster %d loops: %w", cur, ErrCorrupt)
			}
			if c.length[cur] != 0 {
				tail = c.length[cur]
				break
			}
			if v == fatFree || v == fatBad {
				return nil, fmt.Errorf("blockfs: FAT chain reaches %s cluster %d: %w", map[bool]string{true: "a free", false: "a bad"}[v == fatFree], cur, ErrCorrupt)
			}
			c.length[cur] = onPath
			path = append(path, cur)
			if v&fatMask >= fatEOC {
				break
			}
			cur = v
		}
		for j := len(path) - 1; j >= 0; j-- {
			tail++
			c.length[path[j]] = tail
		}
	}
	return c, nil
}

// dirReader reads n bytes of the volume at off.
type dirReader func(p []byte, off int64) error

// checkDirs walks every directory from the root and checks that each is
// a valid chain of at most maxDirBytes, that every entry's first cluster
// is in the data area and heads an allocated chain, and that the tree
// has no loop: what go-diskfs reads without bounds.
func (c *fatCheck) checkDirs(read dirReader) error {
	maxClusters := uint32(max(1, maxDirBytes/c.l.clusterSize))
	seen := map[uint32]bool{}
	todo := []uint32{2}
	for len(todo) > 0 {
		dir := todo[len(todo)-1]
		todo = todo[:len(todo)-1]
		if seen[dir] {
			return fmt.Errorf("blockfs: directory at cluster %d is reached twice: %w", dir, ErrCorrupt)
		}
		seen[dir] = true
		if dir < 2 || dir >= c.l.clusters+2 || c.length[dir] == 0 {
			return fmt.Errorf("blockfs: directory at cluster %d: not an allocated chain: %w", dir, ErrCorrupt)
		}
		if c.length[dir] > maxClusters {
			return fmt.Errorf("blockfs: directory at cluster %d: %d clusters, FAT allows %d: %w", dir, c.length[dir], maxClusters, ErrCorrupt)
		}
		buf := make([]byte, c.l.clusterSize)
	chain:
		for cl := dir; ; cl = c.next[cl] {
			if err := read(buf, c.l.dataOff+int64(cl-2)*c.l.clusterSize); err != nil {
				return err
			}
			for o := 0; o+dirEntry <= len(buf); o += dirEntry {
				e := buf[o : o+dirEntry]
				if e[0] == dirEnd {
					break chain
				}
				attr := e[11]
				if e[0] == dirFree || attr&attrLFN == attrLFN || attr&attrVol != 0 || e[0] == '.' {
					continue
				}
				first := uint32(binary.LittleEndian.Uint16(e[20:]))<<16 | uint32(binary.LittleEndian.Uint16(e[26:]))
				if first == 0 && attr&attrDir == 0 {
					continue // an empty file
				}
				if first < 2 || first >= c.l.clusters+2 || c.length[first] == 0 {
					return fmt.Errorf("blockfs: directory at cluster %d: entry %q starts at cluster %d, not an allocated chain: %w", dir, e[:11], first, ErrCorrupt)
				}
				if attr&attrDir != 0 {
					todo = append(todo, first)
				}
			}
			if c.next[cl]&fatMask >= fatEOC {
				break
			}
		}
	}
	return nil
}

// FSInfo sector fields (FAT32): three signatures, the free-cluster count
// and the next-free hint.
const (
	fsInfoLead     = 0x41615252 // at 0
	fsInfoStruct   = 0x61417272 // at 484
	fsInfoTrail    = 0xaa550000 // at 508
	fsInfoFree     = 488
	fsInfoNext     = 492
	fsInfoUnknown  = 0xffffffff
	fatHighBits    = 0xf0000000 // reserved bits of a FAT32 entry, kept
	dotDotName     = "..         "
	dirEntryHiClus = 20
	dirEntryLoClus = 26
	dirEntrySize   = 28
)

// validFSInfo reports whether the sector b carries FSInfo's signatures.
func validFSInfo(b []byte) bool {
	return len(b) >= 512 && binary.LittleEndian.Uint32(b) == fsInfoLead &&
		binary.LittleEndian.Uint32(b[484:]) == fsInfoStruct &&
		binary.LittleEndian.Uint32(b[508:]) == fsInfoTrail
}

// freeClusters counts the free clusters of the FAT raw, as fsck.fat
// does (bad clusters are not free), and returns the FSInfo next-free
// hint: the cluster before the lowest free one (mkfs.fat writes 2 on a
// new volume; Linux searches from the one after the hint), or
// fsInfoUnknown when none is free.
func (l *layout) freeClusters(raw []byte) (free, hint uint32) {
	hint = fsInfoUnknown
	for c := uint32(2); c < l.clusters+2 && int(c)*4+4 <= len(raw); c++ {
		if binary.LittleEndian.Uint32(raw[4*c:])&fatMask != fatFree {
			continue
		}
		if free == 0 {
			hint = max(c-1, 2)
		}
		free++
	}
	return free, hint
}

// freeChain marks the chain starting at first free in raw (keeping each
// entry's reserved high bits) and returns the range of entries changed.
// It refuses a cluster outside the data area or on the root directory's
// chain, and stops at a free or bad cluster (a chain left broken since
// Open).
func (l *layout) freeChain(raw []byte, first uint32) (lo, hi uint32, err error) {
	end := l.clusters + 2
	entry := func(c uint32) uint32 { return binary.LittleEndian.Uint32(raw[4*c:]) }
	root := map[uint32]bool{}
	for c, n := uint32(2), uint32(0); c >= 2 && c < end && n < l.clusters && !root[c]; n++ {
		root[c] = true
		c = entry(c) & fatMask
	}
	lo, hi = end, 0
	for c := first; ; {
		switch {
		case c < 2 || c >= end:
			return lo, hi, fmt.Errorf("blockfs: freeing a chain at cluster %d of %d: %w", c, l.clusters, ErrCorrupt)
		case root[c]:
			return lo, hi, fmt.Errorf("blockfs: freeing a chain through cluster %d of the root directory: %w", c, ErrCorrupt)
		}
		v := entry(c)
		next := v & fatMask
		if next == fatFree || next == fatBad {
			return lo, hi, nil
		}
		binary.LittleEndian.PutUint32(raw[4*c:], v&fatHighBits)
		lo, hi = min(lo, c), max(hi, c)
		if next >= fatEOC {
			return lo, hi, nil
		}
		c = next
	}
}

// entryCluster returns a directory entry's first cluster.
func entryCluster(e []byte) uint32 {
	return uint32(binary.LittleEndian.Uint16(e[dirEntryHiClus:]))<<16 | uint32(binary.LittleEndian.Uint16(e[dirEntryLoClus:]))
}

// setEntryCluster sets a directory entry's first cluster.
func setEntryCluster(e []byte, c uint32) {
	binary.LittleEndian.PutUint16(e[dirEntryHiClus:], uint16(c>>16))
	binary.LittleEndian.PutUint16(e[dirEntryLoClus:], uint16(c))
}

// shortEntryName returns a directory entry's 8.3 name as go-diskfs
// spells it ("NAME.EXT", "NAME").
func shortEntryName(e []byte) string {
	name := strings.TrimRight(string(e[0:8]), " ")
	if ext := strings.TrimRight(string(e[8:11]), " "); ext != "" {
		return name + "." + ext
	}
	return name
}

func le32(b []byte) uint32     { return binary.LittleEndian.Uint32(b) }
func put32(b []byte, v uint32) { binary.LittleEndian.PutUint32(b, v) }
