// Package blockfs gives an appliance the files of a FAT32 file system on
// a sector device, such as a *blkfront.Disk: Open finds the volume (the
// whole disk, or an MBR or GPT partition), checks it, and returns an FS
// with an fs.FS/os-like API (Open, ReadFile, ReadDir, Stat, OpenFile,
// Create, WriteFile, AppendFile, Mkdir, MkdirAll, Remove, Sync, Close).
//
// The file system code is github.com/diskfs/go-diskfs (v1.9.4), whose
// packages filesystem/fat32 and backend build for GOOS=tamago (its root
// package and package disk do not: they need os files, ioctls, logrus).
// This package adapts the device to go-diskfs's backend.Storage: byte
// offsets within the volume, with read-modify-write of whole sectors for
// unaligned access (blkfront refuses it), writes bounded to the volume,
// and I/O errors that go-diskfs ignores reported by the call that met
// them. Sync and Close flush the device (a device without a cache flush
// is write-through and needs none).
//
// # Untrusted disks
//
// The disk's content is untrusted (a hostile backend can give any
// bytes). The partition table is parsed here, strictly (CRCs, bounds,
// a bounded GPT entry array). Before go-diskfs sees the volume, Open
// checks the boot sector against the volume, bounds the FAT (held in
// memory; Options.MaxFATBytes), checks that every FAT chain stays in the
// data area and ends, and walks every directory (at most 2 MiB each, as
// FAT allows; entries pointing at allocated chains; no directory reached
// twice): go-diskfs follows chains and sizes its buffers without such
// checks. Every call into go-diskfs runs under recover: a panic is an
// error wrapping ErrCorrupt, and after one in a write the FS refuses
// further calls. Metadata the backend changes after Open is not checked
// again: it can still make a call fail or use memory, but not panic.
//
// # Consistency for fsck.fat
//
// go-diskfs leaves volumes that Debian's fsck.fat -n rejects; this
// package mends them (tidy.go), so that after every completed call that
// writes (and, for files still open, after Sync or Close) the volume
// passes fsck.fat -n: the FSInfo free-cluster count and next-free hint
// (and their backup copy) are rewritten from the FAT whenever a call
// wrote the FAT; Remove frees the removed file's or directory's
// clusters; a file left empty gets no cluster (when its handle closes,
// or on Sync); the ".." entry of a directory made in the root names
// cluster 0. go-diskfs's files hold a snapshot of their directory,
// which their writes store back: an open File opens its go-diskfs file
// again when anything changed the volume since its last call, so that
// writes through two open files, or a file and the FS, do not undo
// each other.
//
// # Limits
//
//   - FAT32 only, with two FATs and the root directory at cluster 2 (as
//     mkfs.fat makes it); FAT12/16 and exFAT are refused (ErrUnsupported).
//   - Files up to 4 GiB - 1 (MaxFileSize; ErrTooLarge beyond).
//   - Long (VFAT) names up to 255 bytes; names are matched without regard
//     to case. go-diskfs writes ASCII names; others may be refused.
//   - Not journaled: a crash during a write can leave the volume needing
//     fsck.fat. go-diskfs rewrites the whole FAT on every allocation and
//     the parent directory on every write, so appends are slow on big
//     volumes.
//   - Rename is not offered (go-diskfs renames within a directory only,
//     and drops the clusters of a file it replaces).
//   - A writable open refuses (ErrUnsupported) a volume whose FAT[1] is
//     not an end-of-chain mark (not cleanly unmounted: go-diskfs would
//     end chains with it) or whose backup boot sector field would make
//     go-diskfs write its FSInfo copy outside the reserved sectors.
//   - ext4 is not supported: go-diskfs's ext4 follows symbolic links by
//     unbounded recursion (a link loop overflows the stack, which no
//     recover catches), does not replay the journal and writes without
//     one.
package blockfs
