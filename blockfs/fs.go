package blockfs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"slices"
	"strings"
	"sync"

	"github.com/diskfs/go-diskfs/filesystem"
	"github.com/diskfs/go-diskfs/filesystem/fat32"
)

// Errors of this package, wrapped with context; test with errors.Is.
// Missing and existing files are reported with fs.ErrNotExist and
// fs.ErrExist (in an *fs.PathError).
var (
	// ErrCorrupt means the disk's content is not a valid file system or
	// partition table (or the library failed on it).
	ErrCorrupt = errors.New("blockfs: corrupt file system")
	// ErrUnsupported means a valid layout this package does not handle.
	ErrUnsupported = errors.New("blockfs: unsupported file system or layout")
	// ErrReadOnly means a write to a read-only file system.
	ErrReadOnly = errors.New("blockfs: read-only file system")
	// ErrTooLarge means a file or FAT beyond the limits.
	ErrTooLarge = errors.New("blockfs: too large")
	// ErrRange means an access outside the volume.
	ErrRange = errors.New("blockfs: access outside the volume")
	// ErrClosed means the file system or file was closed.
	ErrClosed = errors.New("blockfs: closed")
)

// MaxFileSize is the largest FAT32 file: 4 GiB - 1.
const MaxFileSize = 1<<32 - 1

// maxName is the longest file name (VFAT long names).
const maxName = 255

// WholeDisk as Options.Partition opens a file system that fills the
// disk, without a partition table.
const WholeDisk = -1

// Options says which volume to open and how.
type Options struct {
	// Partition selects the volume: 0 finds it (the whole disk if it
	// starts with a FAT32 boot sector, else the first MBR or GPT
	// partition that does), N ≥ 1 is partition N of the MBR or GPT,
	// WholeDisk is the whole disk.
	Partition int
	// ReadOnly refuses every write. A device with a ReadOnly() bool
	// method that reports true is always opened read-only.
	ReadOnly bool
	// MaxFATBytes bounds the FAT (held in memory); DefaultMaxFATBytes if
	// zero.
	MaxFATBytes int64
}

// FS is a FAT32 file system on a Device. Names are fs.FS paths
// (slash-separated, unrooted, "." for the root), matched without regard
// to case as FAT does. Its methods are safe for concurrent use (they
// are serialized).
type FS struct {
	mu       sync.Mutex
	v        *volume
	l        *layout
	lib      *fat32.FileSystem
	part     Partition
	readOnly bool
	closed   bool
	broken   error // a library panic during a write: refuse everything
	// gen counts changes (and mounts) of the library: an open File's
	// library file holds a snapshot of its directory, opened again when
	// gen moved.
	gen uint64
	// empties are the files created or truncated since they were last
	// checked for an empty file holding a cluster (dropEmpty).
	empties map[string]bool
}

var (
	_ fs.FS         = (*FS)(nil)
	_ fs.ReadFileFS = (*FS)(nil)
	_ fs.ReadDirFS  = (*FS)(nil)
	_ fs.StatFS     = (*FS)(nil)
)

// Open opens the FAT32 file system on dev selected by opts. The volume's
// metadata is checked first, as the disk is untrusted: the boot sector's
// fields against the volume, the FAT (every chain in the data area, no
// loop) and every directory (a valid chain of at most 2 MiB, entries
// pointing at allocated chains, no directory reached twice). Failures
// wrap ErrCorrupt, ErrUnsupported or ErrTooLarge.
func Open(dev Device, opts Options) (*FS, error) {
	ro := opts.ReadOnly
	if r, ok := dev.(interface{ ReadOnly() bool }); ok && r.ReadOnly() {
		ro = true
	}
	maxFAT := opts.MaxFATBytes
	if maxFAT <= 0 {
		maxFAT = DefaultMaxFATBytes
	}
	part, l, err := findVolume(dev, opts.Partition, maxFAT)
	if err != nil {
		return nil, err
	}
	v, err := newVolume(dev, part.Offset, l.size, ro)
	if err != nil {
		return nil, err
	}
	raw := make([]byte, l.fatBytes)
	if _, err := v.ReadAt(raw, l.fatOff); err != nil {
		return nil, fmt.Errorf("blockfs: reading the FAT: %w", err)
	}
	c, err := checkFAT(l, raw)
	if err != nil {
		return nil, err
	}
	if !ro {
		// go-diskfs ends every chain it writes with FAT[1]'s value
		if fat1 := le32(raw[4:]); fat1&fatMask < fatEOC {
			return nil, fmt.Errorf("blockfs: FAT[1] is %#x, not an end-of-chain mark (volume not cleanly unmounted? run fsck.fat): %w", fat1, ErrUnsupported)
		}
		if l.unsafeBackup {
			return nil, fmt.Errorf("blockfs: the backup boot sector field places the FSInfo copy outside the reserved sectors: %w", ErrUnsupported)
		}
	}
	raw = nil
	err = c.checkDirs(func(p []byte, off int64) error {
		_, err := v.ReadAt(p, off)
		return err
	})
	if err != nil {
		return nil, err
	}
	c = nil
	v.fatLo, v.fatHi = l.fatOff, l.fatOff+2*l.fatBytes
	f := &FS{v: v, l: l, part: part, readOnly: ro, empties: map[string]bool{}}
	err = f.do("mount", ".", true, func() error {
		lib, err := fat32.Read(v, l.size, 0, 0)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrCorrupt, err)
		}
		f.lib = lib
		return nil
	})
	if err != nil {
		return nil, err
	}
	return f, nil
}

// findVolume returns the selected volume's place and checked layout.
func findVolume(dev Device, sel int, maxFAT int64) (Partition, *layout, error) {
	whole := Partition{Index: 0, Offset: 0, Size: dev.Size()}
	try := func(p Partition) (*layout, error) {
		v, err := newVolume(dev, p.Offset, p.Size, true)
		if err != nil {
			return nil, err
		}
		b := make([]byte, 512)
		if _, err := v.ReadAt(b, 0); err != nil {
			return nil, fmt.Errorf("blockfs: reading the boot sector: %w", err)
		}
		return checkBootSector(b, p.Size, maxFAT)
	}
	if sel == WholeDisk {
		l, err := try(whole)
		return whole, l, err
	}
	if sel < 0 {
		return Partition{}, nil, fmt.Errorf("blockfs: partition %d: %w", sel, fs.ErrInvalid)
	}
	var firstErr error
	if sel == 0 {
		l, err := try(whole)
		if err == nil {
			return whole, l, nil
		}
		firstErr = err
	}
	parts, err := Partitions(dev)
	if err != nil {
		return Partition{}, nil, err
	}
	for _, p := range parts {
		if sel != 0 && p.Index != sel {
			continue
		}
		l, err := try(p)
		if err == nil || sel != 0 {
			return p, l, err
		}
	}
	if sel != 0 {
		return Partition{}, nil, fmt.Errorf("blockfs: no partition %d among %d: %w", sel, len(parts), fs.ErrNotExist)
	}
	return Partition{}, nil, fmt.Errorf("blockfs: no FAT32 volume on the disk or its %d partitions (whole disk: %w)", len(parts), firstErr)
}

// do runs fn, a call into the library, with the lock held, turning a
// panic into an error wrapping ErrCorrupt (and, if mutates, refusing
// every later call: the in-memory FAT may no longer match the disk) and
// reporting an I/O error the library ignored. A call that mutates moves
// gen before fn, and rewrites FSInfo after it (tidyLocked).
func (f *FS) do(op, name string, mutates bool, fn func() error) (err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case f.closed:
		return &fs.PathError{Op: op, Path: name, Err: ErrClosed}
	case f.broken != nil:
		return &fs.PathError{Op: op, Path: name, Err: f.broken}
	case mutates && f.readOnly && op != "mount":
		return &fs.PathError{Op: op, Path: name, Err: ErrReadOnly}
	}
	f.v.take()
	if mutates {
		f.gen++
	}
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("blockfs: go-diskfs failed: %v: %w", r, ErrCorrupt)
			if mutates {
				f.broken = err
			}
		}
		if ioErr := f.v.take(); ioErr != nil && err == nil {
			err = ioErr
		}
		if err != nil {
			var pe *fs.PathError
			if !errors.As(err, &pe) {
				err = &fs.PathError{Op: op, Path: name, Err: err}
			}
		}
	}()
	err = fn()
	if mutates && !f.readOnly {
		if terr := f.tidyLocked(); terr != nil && err == nil {
			err = terr
		}
	}
	return err
}

// Partition returns where the volume is (Index 0 for the whole disk).
func (f *FS) Partition() Partition { return f.part }

// ReadOnly reports whether writes are refused.
func (f *FS) ReadOnly() bool { return f.readOnly }

// check validates an fs.FS name.
func check(op, name string) error {
	if !fs.ValidPath(name) || strings.ContainsAny(name, `\`) {
		return &fs.PathError{Op: op, Path: name, Err: fs.ErrInvalid}
	}
	if len(path.Base(name)) > maxName {
		return &fs.PathError{Op: op, Path: name, Err: fmt.Errorf("name longer than %d bytes: %w", maxName, fs.ErrInvalid)}
	}
	return nil
}

// statLocked finds name walking from the root, with the lock held (in do).
func (f *FS) statLocked(op, name string) (fs.FileInfo, error) {
	if name == "." {
		info, err := f.lib.Stat(".")
		if err != nil {
			return nil, err
		}
		return fileInfo{info}, nil
	}
	dir := "."
	parts := strings.Split(name, "/")
	for i, el := range parts {
		ents, err := f.lib.ReadDir(dir)
		if err != nil {
			return nil, err
		}
		var found fs.DirEntry
		for _, e := range ents {
			if strings.EqualFold(e.Name(), el) || strings.EqualFold(shortName(e), el) {
				found = e
				break
			}
		}
		if found == nil {
			return nil, &fs.PathError{Op: op, Path: name, Err: fs.ErrNotExist}
		}
		if i < len(parts)-1 && !found.IsDir() {
			return nil, &fs.PathError{Op: op, Path: name, Err: fmt.Errorf("%s is not a directory: %w", path.Join(parts[:i+1]...), fs.ErrNotExist)}
		}
		if i == len(parts)-1 {
			return entryInfo(found)
		}
		dir = path.Join(dir, found.Name())
	}
	panic("unreachable")
}

// shortName returns e's 8.3 name, if the library reports one.
func shortName(e fs.DirEntry) string {
	info, err := e.Info()
	if err != nil {
		return ""
	}
	if s, ok := info.(interface{ ShortName() string }); ok {
		return s.ShortName()
	}
	return ""
}

// Stat describes the named file or directory.
func (f *FS) Stat(name string) (fs.FileInfo, error) {
	if err := check("stat", name); err != nil {
		return nil, err
	}
	var info fs.FileInfo
	err := f.do("stat", name, false, func() (err error) {
		info, err = f.statLocked("stat", name)
		return err
	})
	return info, err
}

// ReadDir lists the named directory, sorted by name.
func (f *FS) ReadDir(name string) ([]fs.DirEntry, error) {
	if err := check("readdir", name); err != nil {
		return nil, err
	}
	var ents []fs.DirEntry
	err := f.do("readdir", name, false, func() error {
		info, err := f.statLocked("readdir", name)
		if err != nil {
			return err
		}
		if !info.IsDir() {
			return errors.New("not a directory")
		}
		ents, err = f.lib.ReadDir(name)
		for i, e := range ents {
			ents[i] = wrapEntry{e}
		}
		return err
	})
	slices.SortFunc(ents, func(a, b fs.DirEntry) int { return strings.Compare(a.Name(), b.Name()) })
	return ents, err
}

// ReadFile returns the named file's content.
func (f *FS) ReadFile(name string) ([]byte, error) {
	file, err := f.OpenFile(name, os.O_RDONLY)
	if err != nil {
		return nil, err
	}
	defer file.Close()
	return io.ReadAll(file)
}

// Open opens the named file for reading (fs.FS); a directory gives an
// fs.ReadDirFile.
func (f *FS) Open(name string) (fs.File, error) {
	if err := check("open", name); err != nil {
		return nil, err
	}
	var info fs.FileInfo
	err := f.do("open", name, false, func() (err error) {
		info, err = f.statLocked("open", name)
		return err
	})
	if err != nil {
		return nil, err
	}
	if info.IsDir() {
		ents, err := f.ReadDir(name)
		if err != nil {
			return nil, err
		}
		return &dirFile{info: info, ents: ents}, nil
	}
	return f.OpenFile(name, os.O_RDONLY)
}

// Create creates or truncates the named file, open for reading and
// writing.
func (f *FS) Create(name string) (*File, error) {
	return f.OpenFile(name, os.O_RDWR|os.O_CREATE|os.O_TRUNC)
}

// OpenFile opens the named regular file with os.O_* flags: O_RDONLY,
// O_WRONLY or O_RDWR, with O_CREATE, O_EXCL, O_TRUNC and O_APPEND.
// The parent directory must exist.
func (f *FS) OpenFile(name string, flag int) (*File, error) {
	if err := check("open", name); err != nil {
		return nil, err
	}
	write := flag&(os.O_WRONLY|os.O_RDWR) != 0 || flag&(os.O_CREATE|os.O_TRUNC|os.O_APPEND) != 0
	file := &File{fs: f, name: name, write: write, appendOnly: flag&os.O_APPEND != 0}
	err := f.do("open", name, write, func() error {
		info, err := f.statLocked("open", name)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			if flag&os.O_CREATE == 0 {
				return err
			}
			if dir := path.Dir(name); dir != "." {
				d, err := f.statLocked("open", dir)
				if err != nil {
					return err
				}
				if !d.IsDir() {
					return fmt.Errorf("%s is not a directory: %w", dir, fs.ErrNotExist)
				}
			}
		case err != nil:
			return err
		case info.IsDir():
			return errors.New("is a directory")
		case flag&(os.O_CREATE|os.O_EXCL) == os.O_CREATE|os.O_EXCL:
			return fs.ErrExist
		}
		lflag := os.O_RDONLY
		if write {
			lflag = os.O_RDWR | flag&(os.O_CREATE|os.O_TRUNC|os.O_APPEND)
		}
		file.f, err = f.lib.OpenFile(name, lflag)
		file.gen = f.gen
		if err == nil && flag&(os.O_CREATE|os.O_TRUNC) != 0 && write {
			f.empties[name] = true
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return file, nil
}

// WriteFile writes data to the named file, creating or truncating it.
func (f *FS) WriteFile(name string, data []byte) error {
	file, err := f.Create(name)
	if err != nil {
		return err
	}
	_, err = file.Write(data)
	return errors.Join(err, file.Close())
}

// AppendFile appends data to the named file, creating it if needed.
func (f *FS) AppendFile(name string, data []byte) error {
	file, err := f.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_APPEND)
	if err != nil {
		return err
	}
	_, err = file.Write(data)
	return errors.Join(err, file.Close())
}

// Mkdir creates the named directory; its parent must exist.
func (f *FS) Mkdir(name string) error {
	if err := check("mkdir", name); err != nil {
		return err
	}
	return f.do("mkdir", name, true, func() error {
		if name == "." {
			return fs.ErrExist
		}
		if _, err := f.statLocked("mkdir", name); err == nil {
			return fs.ErrExist
		} else if !errors.Is(err, fs.ErrNotExist) {
			return err
		}
		if dir := path.Dir(name); dir != "." {
			d, err := f.statLocked("mkdir", dir)
			if err != nil {
				return err
			}
			if !d.IsDir() {
				return fmt.Errorf("%s is not a directory: %w", dir, fs.ErrNotExist)
			}
		}
		if err := f.lib.Mkdir(name); err != nil {
			return err
		}
		return f.fixDotDot(name)
	})
}

// MkdirAll creates the named directory and its missing parents.
func (f *FS) MkdirAll(name string) error {
	if err := check("mkdir", name); err != nil {
		return err
	}
	return f.do("mkdir", name, true, func() error {
		if name == "." {
			return nil
		}
		if err := f.lib.Mkdir(name); err != nil {
			return err
		}
		return f.fixDotDot(name)
	})
}

// Remove removes the named file or empty directory and frees its
// clusters (go-diskfs v1.9.4 only drops the entry).
func (f *FS) Remove(name string) error {
	if err := check("remove", name); err != nil {
		return err
	}
	return f.do("remove", name, true, func() error {
		if name == "." {
			return fs.ErrInvalid
		}
		if _, err := f.statLocked("remove", name); err != nil {
			return err
		}
		_, ent, err := f.locate(name)
		if err != nil {
			return err
		}
		if err := f.lib.Remove(name); err != nil {
			return err
		}
		delete(f.empties, name)
		if first := entryCluster(ent); first != 0 {
			return f.freeClusterChain(first)
		}
		return nil
	})
}

// Sync makes every completed write durable (the device's Flush), after
// giving files created or truncated and still empty no cluster, so that
// the volume is as fsck.fat wants it.
func (f *FS) Sync(ctx context.Context) error {
	if f.readOnly {
		f.mu.Lock()
		defer f.mu.Unlock()
		if f.closed {
			return fmt.Errorf("blockfs: sync: %w", ErrClosed)
		}
		return nil
	}
	return f.do("sync", ".", true, func() error {
		err := errors.Join(f.dropEmptiesLocked(), f.tidyLocked())
		return errors.Join(err, f.v.flush(ctx))
	})
}

// Close syncs and closes the file system; the device stays open (it is
// the caller's). Files still open fail with ErrClosed.
func (f *FS) Close() error {
	err := f.Sync(context.Background())
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil
	}
	f.closed = true
	return err
}

// File is an open file of an FS.
type File struct {
	fs         *FS
	name       string
	f          filesystem.File
	gen        uint64 // the FS's gen when f was (re)opened or last used
	write      bool
	appendOnly bool
	closed     bool
}

// Name returns the name the file was opened with.
func (fl *File) Name() string { return fl.name }

// op runs fn under the FS's lock, first opening the library file again
// if the file system changed since the file's last call: go-diskfs's
// file holds a snapshot of its directory, which its writes store back.
func (fl *File) op(op string, mutates bool, fn func() error) error {
	if fl.closed {
		return &fs.PathError{Op: op, Path: fl.name, Err: ErrClosed}
	}
	return fl.fs.do(op, fl.name, mutates, func() error {
		want := fl.gen
		if mutates {
			want++ // do's own move
		}
		if fl.fs.gen != want {
			if err := fl.reopenLocked(); err != nil {
				return err
			}
		}
		err := fn()
		fl.gen = fl.fs.gen
		return err
	})
}

// reopenLocked opens the library file again at the same offset.
func (fl *File) reopenLocked() error {
	off, err := fl.f.Seek(0, io.SeekCurrent)
	if err != nil {
		return err
	}
	if _, err := fl.fs.statLocked("open", fl.name); err != nil {
		return err
	}
	lflag := os.O_RDONLY
	if fl.write {
		lflag = os.O_RDWR
	}
	nf, err := fl.fs.lib.OpenFile(fl.name, lflag)
	if err != nil {
		return err
	}
	if _, err := nf.Seek(off, io.SeekStart); err != nil {
		return err
	}
	fl.f = nf
	return nil
}

// recreateLocked replaces the empty file with no cluster (as dropEmpty
// leaves it) by a new one through go-diskfs, which gives it a cluster,
// keeping the offset.
func (fl *File) recreateLocked() error {
	f := fl.fs
	info, err := fl.f.Stat()
	if err != nil {
		return err
	}
	off, err := fl.f.Seek(0, io.SeekCurrent)
	if err != nil {
		return err
	}
	name := path.Join(path.Dir(fl.name), info.Name()) // the name on disk
	if err := f.lib.Remove(name); err != nil {
		return err
	}
	nf, err := f.lib.OpenFile(name, os.O_RDWR|os.O_CREATE)
	if err != nil {
		return err
	}
	if _, err := nf.Seek(off, io.SeekStart); err != nil {
		return err
	}
	fl.f = nf
	return nil
}

// Read reads from the file's offset.
func (fl *File) Read(p []byte) (n int, err error) {
	err = fl.op("read", false, func() error {
		// go-diskfs v1.9.4 reads past the end of the file from an
		// offset within a cluster: never ask it for more than is left
		off, err := fl.f.Seek(0, io.SeekCurrent)
		if err != nil {
			return err
		}
		info, err := fl.f.Stat()
		if err != nil {
			return err
		}
		if off >= info.Size() {
			return io.EOF
		}
		if rest := info.Size() - off; int64(len(p)) > rest {
			p = p[:rest]
		}
		n, err = fl.f.Read(p)
		return err
	})
	if errors.Is(err, io.EOF) {
		err = io.EOF
	}
	return n, err
}

// Write writes at the file's offset (at its end if opened with
// O_APPEND). A file cannot grow beyond MaxFileSize.
func (fl *File) Write(p []byte) (n int, err error) {
	if !fl.write {
		return 0, &fs.PathError{Op: "write", Path: fl.name, Err: fmt.Errorf("not open for writing: %w", fs.ErrPermission)}
	}
	if len(p) == 0 {
		return 0, nil
	}
	err = fl.op("write", true, func() error {
		if info, err := fl.f.Stat(); err != nil {
			return err
		} else if info.Size() == 0 {
			none, err := fl.fs.emptyCluster(fl.name)
			if err != nil {
				return err
			}
			if none {
				if err := fl.recreateLocked(); err != nil {
					return err
				}
			}
		}
		whence := io.SeekCurrent
		if fl.appendOnly {
			whence = io.SeekEnd
		}
		off, err := fl.f.Seek(0, whence)
		if err != nil {
			return err
		}
		if off > MaxFileSize || int64(len(p)) > MaxFileSize-off {
			return fmt.Errorf("%d bytes at %d: %w (FAT32 files end at 4 GiB)", len(p), off, ErrTooLarge)
		}
		n, err = fl.f.Write(p)
		return err
	})
	return n, err
}

// Seek sets the offset of the next Read or Write.
func (fl *File) Seek(offset int64, whence int) (pos int64, err error) {
	err = fl.op("seek", false, func() (err error) {
		pos, err = fl.f.Seek(offset, whence)
		return err
	})
	return pos, err
}

// Stat describes the file.
func (fl *File) Stat() (info fs.FileInfo, err error) {
	err = fl.op("stat", false, func() (err error) {
		info, err = fl.f.Stat()
		if err == nil {
			info = fileInfo{info}
		}
		return err
	})
	return info, err
}

// Close closes the file; a file created or truncated and left empty
// gets no cluster, as fsck.fat wants. Writes are on the device already;
// FS.Sync or FS.Close makes them durable.
func (fl *File) Close() error {
	if fl.closed {
		return &fs.PathError{Op: "close", Path: fl.name, Err: ErrClosed}
	}
	fl.closed = true
	if !fl.write {
		return nil
	}
	err := fl.fs.do("close", fl.name, true, func() error {
		if !fl.fs.empties[fl.name] {
			return nil
		}
		delete(fl.fs.empties, fl.name)
		return fl.fs.dropEmpty(fl.name)
	})
	if errors.Is(err, ErrClosed) {
		return nil // the FS's Close tidied up
	}
	return err
}

// fileInfo adds fs.ModeDir to the mode of a directory (go-diskfs leaves
// it out).
type fileInfo struct{ fs.FileInfo }

func (i fileInfo) Mode() fs.FileMode {
	if i.IsDir() {
		return i.FileInfo.Mode() | fs.ModeDir
	}
	return i.FileInfo.Mode()
}

// wrapEntry returns a fileInfo from Info.
type wrapEntry struct{ fs.DirEntry }

func (e wrapEntry) Info() (fs.FileInfo, error) { return entryInfo(e.DirEntry) }

func entryInfo(e fs.DirEntry) (fs.FileInfo, error) {
	info, err := e.Info()
	if err != nil {
		return nil, err
	}
	return fileInfo{info}, nil
}

// dirFile is an opened directory (fs.ReadDirFile).
type dirFile struct {
	info fs.FileInfo
	ents []fs.DirEntry
	off  int
}

func (d *dirFile) Stat() (fs.FileInfo, error) { return d.info, nil }
func (d *dirFile) Close() error               { return nil }
func (d *dirFile) Read([]byte) (int, error) {
	return 0, &fs.PathError{Op: "read", Path: d.info.Name(), Err: errors.New("is a directory")}
}

func (d *dirFile) ReadDir(n int) ([]fs.DirEntry, error) {
	rest := d.ents[d.off:]
	if n <= 0 {
		d.off = len(d.ents)
		return rest, nil
	}
	if len(rest) == 0 {
		return nil, io.EOF
	}
	n = min(n, len(rest))
	d.off += n
	return rest[:n], nil
}
