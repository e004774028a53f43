package blockfs

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"sync"
	"time"

	"github.com/diskfs/go-diskfs/backend"

	"github.com/gozen-dev/gozen/drivers/blkfront"
)

// Device is a sector-addressed disk: offsets and lengths of ReadAt and
// WriteAt may have to be multiples of SectorSize (as *blkfront.Disk
// requires). Flush makes completed writes durable. If the device also
// has a ReadOnly() bool method (as *blkfront.Disk has), a true result
// makes the file system read-only.
type Device interface {
	io.ReaderAt
	io.WriterAt
	// Size is the device's size in bytes.
	Size() int64
	// SectorSize is the unit of ReadAt and WriteAt, a power of two.
	SectorSize() int
	// Flush makes the writes completed so far durable.
	Flush(ctx context.Context) error
}

// volume is a byte-addressed window [base, base+size) of a Device, with
// read-modify-write of whole sectors for unaligned access. It is what the
// file-system library reads and writes (backend.Storage). The first I/O
// error since the last take is kept: the library ignores some of them.
type volume struct {
	dev      Device
	ss       int64
	base     int64
	size     int64
	readOnly bool

	// fatLo and fatHi bound both FATs; a write there sets fatWritten.
	fatLo, fatHi int64

	mu         sync.Mutex
	err        error // first I/O error since take
	pos        int64 // for Read and Seek
	fatWritten bool
}

var _ backend.Storage = (*volume)(nil)

func newVolume(dev Device, base, size int64, readOnly bool) (*volume, error) {
	ss := int64(dev.SectorSize())
	if ss <= 0 || ss&(ss-1) != 0 || ss > 1<<16 {
		return nil, fmt.Errorf("blockfs: device sector size %d: %w", ss, ErrUnsupported)
	}
	if base < 0 || size < 0 || base > dev.Size() || size > dev.Size()-base {
		return nil, fmt.Errorf("blockfs: volume of %d bytes at %d on a disk of %d: %w", size, base, dev.Size(), ErrCorrupt)
	}
	return &volume{dev: dev, ss: ss, base: base, size: size, readOnly: readOnly}, nil
}

// note records the first I/O error.
func (v *volume) note(err error) error {
	if err != nil {
		v.mu.Lock()
		if v.err == nil {
			v.err = err
		}
		v.mu.Unlock()
	}
	return err
}

// take returns and clears the recorded I/O error.
func (v *volume) take() error {
	v.mu.Lock()
	defer v.mu.Unlock()
	err := v.err
	v.err = nil
	return err
}

// ReadAt reads len(p) bytes at off within the volume; past its end it
// returns what there is and io.EOF.
func (v *volume) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, v.note(fmt.Errorf("blockfs: read at offset %d: %w", off, ErrRange))
	}
	if off >= v.size {
		return 0, io.EOF
	}
	n := len(p)
	if int64(n) > v.size-off {
		n = int(v.size - off)
	}
	if err := v.rw(p[:n], v.base+off, false); err != nil {
		return 0, v.note(fmt.Errorf("blockfs: read of %d bytes at %d: %w", n, off, err))
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// WriteAt writes p at off within the volume; a write past its end writes
// nothing and fails with ErrRange.
func (v *volume) WriteAt(p []byte, off int64) (int, error) {
	if v.readOnly {
		return 0, v.note(fmt.Errorf("blockfs: write: %w", ErrReadOnly))
	}
	if off < 0 || off > v.size || int64(len(p)) > v.size-off {
		return 0, v.note(fmt.Errorf("blockfs: write of %d bytes at %d, volume of %d: %w", len(p), off, v.size, ErrRange))
	}
	if off < v.fatHi && off+int64(len(p)) > v.fatLo {
		v.mu.Lock()
		v.fatWritten = true
		v.mu.Unlock()
	}
	if err := v.rw(p, v.base+off, true); err != nil {
		return 0, v.note(fmt.Errorf("blockfs: write of %d bytes at %d: %w", len(p), off, err))
	}
	return len(p), nil
}

// takeFATWritten reports and clears whether a write reached a FAT.
func (v *volume) takeFATWritten() bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	w := v.fatWritten
	v.fatWritten = false
	return w
}

// rw moves p at the device offset off: the aligned middle directly, a
// partial first or last sector through a sector buffer (read, then
// modified and written back for a write).
func (v *volume) rw(p []byte, off int64, write bool) error {
	ss := v.ss
	for len(p) > 0 {
		head := off % ss
		if head == 0 && int64(len(p)) >= ss {
			n := int64(len(p)) / ss * ss
			if err := v.full(p[:n], off, write); err != nil {
				return err
			}
			p, off = p[n:], off+n
			continue
		}
		// a partial sector
		sec := make([]byte, ss)
		start := off - head
		if _, err := v.dev.ReadAt(sec, start); err != nil {
			return err
		}
		n := min(int64(len(p)), ss-head)
		if write {
			copy(sec[head:], p[:n])
			if _, err := v.dev.WriteAt(sec, start); err != nil {
				return err
			}
		} else {
			copy(p[:n], sec[head:])
		}
		p, off = p[n:], off+n
	}
	return nil
}

// full moves whole sectors.
func (v *volume) full(p []byte, off int64, write bool) error {
	var n int
	var err error
	if write {
		n, err = v.dev.WriteAt(p, off)
	} else {
		n, err = v.dev.ReadAt(p, off)
	}
	if err == nil && n != len(p) {
		err = io.ErrUnexpectedEOF
	}
	return err
}

// Read reads at the position Seek set (io.Reader, for backend.File).
func (v *volume) Read(p []byte) (int, error) {
	v.mu.Lock()
	pos := v.pos
	v.mu.Unlock()
	n, err := v.ReadAt(p, pos)
	v.mu.Lock()
	v.pos = pos + int64(n)
	v.mu.Unlock()
	return n, err
}

// Seek sets the position of Read (io.Seeker); SeekEnd is relative to the
// volume's size.
func (v *volume) Seek(offset int64, whence int) (int64, error) {
	v.mu.Lock()
	defer v.mu.Unlock()
	var pos int64
	switch whence {
	case io.SeekStart:
		pos = offset
	case io.SeekCurrent:
		pos = v.pos + offset
	case io.SeekEnd:
		pos = v.size + offset
	default:
		return 0, fmt.Errorf("blockfs: seek whence %d: %w", whence, fs.ErrInvalid)
	}
	if pos < 0 {
		return 0, fmt.Errorf("blockfs: seek to %d: %w", pos, fs.ErrInvalid)
	}
	v.pos = pos
	return pos, nil
}

// Stat describes the volume as a file of its size.
func (v *volume) Stat() (fs.FileInfo, error) { return volumeInfo{v.size}, nil }

// Close does nothing: the FS owns the device.
func (v *volume) Close() error { return nil }

// Sys reports that there is no OS file (no ioctls).
func (v *volume) Sys() (*os.File, error) { return nil, backend.ErrNotSuitable }

// Writable returns the volume unless it is read-only.
func (v *volume) Writable() (backend.WritableFile, error) {
	if v.readOnly {
		return nil, fmt.Errorf("blockfs: %w", ErrReadOnly)
	}
	return v, nil
}

// Path is empty: the volume is not a host file.
func (v *volume) Path() string { return "" }

// flush flushes the device; a device without a cache flush
// (blkfront.ErrNotSupported or errors.ErrUnsupported) is write-through
// and needs none.
func (v *volume) flush(ctx context.Context) error {
	err := v.dev.Flush(ctx)
	if err != nil && !isFlushUnsupported(err) {
		return fmt.Errorf("blockfs: flush: %w", err)
	}
	return nil
}

type volumeInfo struct{ size int64 }

func (i volumeInfo) Name() string       { return "volume" }
func (i volumeInfo) Size() int64        { return i.size }
func (i volumeInfo) Mode() fs.FileMode  { return 0o600 }
func (i volumeInfo) ModTime() time.Time { return time.Time{} }
func (i volumeInfo) IsDir() bool        { return false }
func (i volumeInfo) Sys() any           { return nil }

// isFlushUnsupported reports a device without a cache flush: its writes
// are durable once completed (Linux treats such a disk as write-through).
func isFlushUnsupported(err error) bool {
	return errors.Is(err, blkfront.ErrNotSupported) || errors.Is(err, errors.ErrUnsupported)
}
