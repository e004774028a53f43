package blockfs

import (
	"errors"
	"fmt"
	"io/fs"
	"path"
	"strings"

	"github.com/diskfs/go-diskfs/filesystem/fat32"
)

// What go-diskfs v1.9.4 leaves for fsck.fat, and what this file does
// about it (checked against Debian's fsck.fat -n in fsck_test.go):
//
//   - It writes the FSInfo sector it read at mount (free count and hint
//     unchanged) after every FAT change: tidyLocked rewrites both FSInfo
//     copies from the FAT after every call that wrote the FAT.
//   - Remove drops the directory entry but not the file's clusters: Remove
//     frees the chain in both FATs, then mounts go-diskfs again (its FAT
//     is held in memory and cannot be changed from outside).
//   - A new file gets one cluster while its size is 0 ("File size is 0
//     bytes, cluster chain length is > 0 bytes"): dropEmpty gives an
//     empty file no cluster when its handle closes and on Sync, and the
//     first write to such a file creates it again through go-diskfs
//     (which cannot grow a file that has no cluster).
//   - The ".." entry of a directory made in the root names cluster 2 where
//     FAT wants 0: fixDotDot rewrites it.

// tidyLocked rewrites the FSInfo free-cluster count and next-free hint
// (primary and backup copies) if the call wrote the FAT.
func (f *FS) tidyLocked() error {
	if !f.v.takeFATWritten() {
		return nil
	}
	raw, err := f.readFAT()
	if err != nil {
		return err
	}
	return f.writeFSInfo(f.l.freeClusters(raw))
}

// readFAT reads the first FAT.
func (f *FS) readFAT() ([]byte, error) {
	raw := make([]byte, f.l.fatBytes)
	if _, err := f.v.ReadAt(raw, f.l.fatOff); err != nil {
		return nil, fmt.Errorf("blockfs: reading the FAT: %w", err)
	}
	return raw, nil
}

// writeFATEntries writes the sectors of raw holding entries lo..hi to
// both FATs.
func (f *FS) writeFATEntries(raw []byte, lo, hi uint32) error {
	if lo > hi {
		return nil
	}
	bps := f.l.bps
	start := int64(lo) * 4 / bps * bps
	end := min((int64(hi)*4+4+bps-1)/bps*bps, f.l.fatBytes)
	for _, base := range []int64{f.l.fatOff, f.l.fatOff + f.l.fatBytes} {
		if _, err := f.v.WriteAt(raw[start:end], base+start); err != nil {
			return fmt.Errorf("blockfs: writing the FAT: %w", err)
		}
	}
	return nil
}

// writeFSInfo sets the free count and hint of each FSInfo copy that has
// its signatures (go-diskfs checks the primary's at mount).
func (f *FS) writeFSInfo(free, hint uint32) error {
	for _, off := range []int64{f.l.fsinfo, f.l.backupInfo} {
		if off == 0 {
			continue
		}
		b := make([]byte, f.l.bps)
		if _, err := f.v.ReadAt(b, off); err != nil {
			return fmt.Errorf("blockfs: reading FSInfo: %w", err)
		}
		if !validFSInfo(b) {
			continue
		}
		if le32(b[fsInfoFree:]) == free && le32(b[fsInfoNext:]) == hint {
			continue
		}
		put32(b[fsInfoFree:], free)
		put32(b[fsInfoNext:], hint)
		if _, err := f.v.WriteAt(b, off); err != nil {
			return fmt.Errorf("blockfs: writing FSInfo: %w", err)
		}
	}
	return nil
}

// freeClusterChain frees the chain from first in both FATs and mounts
// go-diskfs again so that it sees the clusters free.
func (f *FS) freeClusterChain(first uint32) error {
	raw, err := f.readFAT()
	if err != nil {
		return err
	}
	lo, hi, err := f.l.freeChain(raw, first)
	if err != nil {
		return err
	}
	if err := f.writeFATEntries(raw, lo, hi); err != nil {
		return err
	}
	return f.remountLocked()
}

// remountLocked replaces the go-diskfs file system by a new one read
// from the volume; open files open their go-diskfs file again (gen).
func (f *FS) remountLocked() error {
	lib, err := fat32.Read(f.v, f.l.size, 0, 0)
	if err != nil {
		return fmt.Errorf("blockfs: mounting again: %w: %w", ErrCorrupt, err)
	}
	f.lib = lib
	f.gen++
	return nil
}

// fatEntry reads entry c of the first FAT.
func (f *FS) fatEntry(c uint32) (uint32, error) {
	var b [4]byte
	if _, err := f.v.ReadAt(b[:], f.l.fatOff+4*int64(c)); err != nil {
		return 0, fmt.Errorf("blockfs: reading the FAT: %w", err)
	}
	return le32(b[:]), nil
}

// clusterOff returns the volume offset of cluster c.
func (f *FS) clusterOff(c uint32) int64 { return f.l.dataOff + int64(c-2)*f.l.clusterSize }

// findShort returns the volume offset and bytes of the entry with the
// 8.3 name short in the directory starting at cluster dir.
func (f *FS) findShort(dir uint32, short string) (int64, []byte, error) {
	maxClusters := max(1, maxDirBytes/f.l.clusterSize)
	buf := make([]byte, f.l.clusterSize)
	var found []byte
	var foundOff int64
	c := dir
scan:
	for n := int64(0); ; n++ {
		if c < 2 || c >= f.l.clusters+2 || n >= maxClusters {
			return 0, nil, fmt.Errorf("blockfs: directory at cluster %d: bad chain at %d: %w", dir, c, ErrCorrupt)
		}
		off := f.clusterOff(c)
		if _, err := f.v.ReadAt(buf, off); err != nil {
			return 0, nil, err
		}
		for o := 0; o+dirEntry <= len(buf); o += dirEntry {
			e := buf[o : o+dirEntry]
			if e[0] == dirEnd {
				break scan
			}
			if e[0] == dirFree || e[11]&attrLFN == attrLFN || e[11]&attrVol != 0 {
				continue
			}
			if strings.EqualFold(shortEntryName(e), short) {
				if found != nil {
					return 0, nil, fmt.Errorf("blockfs: directory at cluster %d: two entries named %s: %w", dir, short, ErrCorrupt)
				}
				found, foundOff = append([]byte(nil), e...), off+int64(o)
			}
		}
		next, err := f.fatEntry(c)
		if err != nil {
			return 0, nil, err
		}
		if next&fatMask >= fatEOC {
			break
		}
		c = next & fatMask
	}
	if found == nil {
		return 0, nil, fmt.Errorf("blockfs: no entry %s in the directory at cluster %d: %w", short, dir, fs.ErrNotExist)
	}
	return foundOff, found, nil
}

// locate returns the volume offset and bytes of name's directory entry,
// walking from the root with go-diskfs's names (long or short, any
// case) and finding each entry on the disk by its 8.3 name.
func (f *FS) locate(name string) (int64, []byte, error) {
	dir, dirPath := uint32(2), "."
	parts := strings.Split(name, "/")
	for i, el := range parts {
		ents, err := f.lib.ReadDir(dirPath)
		if err != nil {
			return 0, nil, err
		}
		var found fs.DirEntry
		for _, e := range ents {
			if strings.EqualFold(e.Name(), el) || strings.EqualFold(shortName(e), el) {
				found = e
				break
			}
		}
		if found == nil {
			return 0, nil, fmt.Errorf("blockfs: %s: %w", name, fs.ErrNotExist)
		}
		short := shortName(found)
		if short == "" {
			return 0, nil, fmt.Errorf("blockfs: %s has no 8.3 name: %w", name, ErrCorrupt)
		}
		off, ent, err := f.findShort(dir, short)
		if err != nil || i == len(parts)-1 {
			return off, ent, err
		}
		if ent[11]&attrDir == 0 {
			return 0, nil, fmt.Errorf("blockfs: %s is not a directory: %w", path.Join(parts[:i+1]...), fs.ErrNotExist)
		}
		dir, dirPath = entryCluster(ent), path.Join(dirPath, found.Name())
	}
	panic("unreachable")
}

// fixDotDot makes the ".." entry of the top directory of name (made in
// the root by go-diskfs) name cluster 0, as FAT wants for the root.
func (f *FS) fixDotDot(name string) error {
	top, _, _ := strings.Cut(name, "/")
	_, ent, err := f.locate(top)
	if err != nil {
		return err
	}
	if ent[11]&attrDir == 0 {
		return nil
	}
	c := entryCluster(ent)
	if c < 2 || c >= f.l.clusters+2 {
		return fmt.Errorf("blockfs: directory %s at cluster %d: %w", top, c, ErrCorrupt)
	}
	b := make([]byte, f.l.bps) // "." and ".." are the first two entries
	off := f.clusterOff(c)
	if _, err := f.v.ReadAt(b, off); err != nil {
		return err
	}
	dd := b[dirEntry : 2*dirEntry]
	if string(dd[:11]) != dotDotName || dd[11]&attrDir == 0 || entryCluster(dd) != 2 {
		return nil
	}
	setEntryCluster(dd, 0)
	_, err = f.v.WriteAt(b, off)
	return err
}

// dropEmpty gives name no cluster if it is an empty file that has one
// (go-diskfs allocates one when it creates or truncates a file).
func (f *FS) dropEmpty(name string) error {
	off, ent, err := f.locate(name)
	if errors.Is(err, fs.ErrNotExist) {
		return nil // removed since
	}
	if err != nil {
		return err
	}
	first := entryCluster(ent)
	if ent[11]&attrDir != 0 || le32(ent[dirEntrySize:]) != 0 || first == 0 {
		return nil
	}
	// the entry first: a crash in between leaves a lost cluster, not a
	// cluster shared by a file
	setEntryCluster(ent, 0)
	if _, err := f.v.WriteAt(ent, off); err != nil {
		return err
	}
	return f.freeClusterChain(first)
}

// emptyCluster reports whether name is an empty file with no cluster,
// which go-diskfs cannot write to.
func (f *FS) emptyCluster(name string) (bool, error) {
	_, ent, err := f.locate(name)
	if err != nil {
		return false, err
	}
	return ent[11]&attrDir == 0 && le32(ent[dirEntrySize:]) == 0 && entryCluster(ent) == 0, nil
}

// dropEmptiesLocked gives the files created or truncated since the last
// call no cluster if they are still empty.
func (f *FS) dropEmptiesLocked() error {
	var errs []error
	for name := range f.empties {
		errs = append(errs, f.dropEmpty(name))
		delete(f.empties, name)
	}
	return errors.Join(errs...)
}
