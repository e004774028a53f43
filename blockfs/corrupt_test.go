package blockfs

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"testing"
)

// memDevice is an in-memory Device that, like blkfront, refuses
// unaligned access.
type memDevice struct {
	b        []byte
	ss       int
	readOnly bool
	flushes  int
}

func (m *memDevice) check(p []byte, off int64) error {
	if off%int64(m.ss) != 0 || len(p)%m.ss != 0 {
		return fmt.Errorf("memDevice: %d bytes at %d: unaligned", len(p), off)
	}
	if off < 0 || off > int64(len(m.b)) || int64(len(p)) > int64(len(m.b))-off {
		return fmt.Errorf("memDevice: %d bytes at %d: out of range", len(p), off)
	}
	return nil
}

func (m *memDevice) ReadAt(p []byte, off int64) (int, error) {
	if err := m.check(p, off); err != nil {
		return 0, err
	}
	return copy(p, m.b[off:]), nil
}

func (m *memDevice) WriteAt(p []byte, off int64) (int, error) {
	if m.readOnly {
		return 0, errors.New("memDevice: read-only")
	}
	if err := m.check(p, off); err != nil {
		return 0, err
	}
	return copy(m.b[off:], p), nil
}

func (m *memDevice) Size() int64                 { return int64(len(m.b)) }
func (m *memDevice) SectorSize() int             { return m.ss }
func (m *memDevice) ReadOnly() bool              { return m.readOnly }
func (m *memDevice) Flush(context.Context) error { m.flushes++; return nil }

// smallImage returns a 1 MiB whole-disk FAT32 image with config.txt and
// etc/motd (512-byte clusters; FAT at 16 KiB; root directory at 32 KiB).
func smallImage(t testing.TB) []byte {
	t.Helper()
	img := newImage(t, layoutWhole, 1<<20, map[string]string{"config.txt": "name=gozen\n", "etc/motd": "hello\n"})
	b, err := os.ReadFile(img.path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// rootEntry returns the offset of the root directory entry whose 8.3
// name is name (11 bytes, padded).
func rootEntry(t testing.TB, b []byte, name string) int {
	t.Helper()
	l, err := checkBootSector(b[:512], int64(len(b)), DefaultMaxFATBytes)
	if err != nil {
		t.Fatal(err)
	}
	for o := int(l.dataOff); o < int(l.dataOff+l.clusterSize); o += 32 {
		if string(b[o:o+11]) == name {
			return o
		}
	}
	t.Fatalf("no root entry %q", name)
	return 0
}

func TestCorrupt(t *testing.T) {
	const fat = 16 << 10
	cfg := func(t testing.TB, b []byte) (entry int, cluster uint32) {
		o := rootEntry(t, b, "CONFIG  TXT")
		return o, uint32(binary.LittleEndian.Uint16(b[o+26:]))
	}
	for _, tc := range []struct {
		name  string
		patch func(t testing.TB, b []byte)
		want  error // from Open; nil: Open works, then ReadFile("config.txt") must fail cleanly
	}{
		{"no boot signature", func(_ testing.TB, b []byte) { b[510] = 0 }, ErrCorrupt},
		{"zero bytes per sector", func(_ testing.TB, b []byte) { b[0x0b], b[0x0c] = 0, 0 }, ErrCorrupt},
		{"3 sectors per cluster", func(_ testing.TB, b []byte) { b[0x0d] = 3 }, ErrCorrupt},
		{"one FAT", func(_ testing.TB, b []byte) { b[0x10] = 1 }, ErrUnsupported},
		{"root at cluster 3", func(_ testing.TB, b []byte) { b[0x2c] = 3 }, ErrUnsupported},
		{"huge FAT", func(_ testing.TB, b []byte) { binary.LittleEndian.PutUint32(b[0x24:], 0xffffffff) }, ErrTooLarge},
		{"FAT beyond the volume", func(_ testing.TB, b []byte) { binary.LittleEndian.PutUint32(b[0x24:], 4000) }, ErrCorrupt},
		{"more sectors than the disk", func(_ testing.TB, b []byte) { binary.LittleEndian.PutUint32(b[0x20:], 1<<30) }, ErrCorrupt},
		{"FSInfo outside reserved", func(_ testing.TB, b []byte) { b[0x30] = 200 }, ErrCorrupt},
		{"FAT16 volume", func(_ testing.TB, b []byte) { b[0x16] = 1 }, ErrUnsupported},
		{"FAT chain loop", func(t testing.TB, b []byte) {
			_, c := cfg(t, b)
			binary.LittleEndian.PutUint32(b[fat+4*int(c):], c)
		}, ErrCorrupt},
		{"FAT entry past the clusters", func(t testing.TB, b []byte) {
			_, c := cfg(t, b)
			binary.LittleEndian.PutUint32(b[fat+4*int(c):], 0x0ffffff0)
		}, ErrCorrupt},
		{"entry at a free cluster", func(t testing.TB, b []byte) {
			o, _ := cfg(t, b)
			binary.LittleEndian.PutUint16(b[o+26:], 1500)
		}, ErrCorrupt},
		{"directory loop", func(t testing.TB, b []byte) {
			o := rootEntry(t, b, "ETC        ")
			binary.LittleEndian.PutUint16(b[o+26:], 2) // etc is the root
		}, ErrCorrupt},
		{"file larger than its chain", func(t testing.TB, b []byte) {
			o, _ := cfg(t, b)
			binary.LittleEndian.PutUint32(b[o+28:], 100000)
		}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := smallImage(t)
			tc.patch(t, b)
			fsys, err := Open(&memDevice{b: b, ss: 512}, Options{})
			if tc.want != nil {
				if !errors.Is(err, tc.want) {
					t.Fatalf("Open: %v, want %v", err, tc.want)
				}
				return
			}
			if err != nil {
				t.Fatalf("Open: %v", err)
			}
			if data, err := fsys.ReadFile("config.txt"); err == nil {
				t.Errorf("ReadFile gave %d bytes and no error", len(data))
			}
		})
	}
}

// TestCorruptThroughStack serves corrupt images through blkback and
// blkfront: Open fails with ErrCorrupt.
func TestCorruptThroughStack(t *testing.T) {
	for _, tc := range []struct {
		layout string
		part   int
	}{{layoutWhole, 0}, {layoutGPT, 1}} {
		layout := tc.layout
		t.Run(layout, func(t *testing.T) {
			img := newImage(t, layout, 8<<20, map[string]string{"config.txt": "x"})
			f, err := os.OpenFile(img.path, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			off := img.start + 510 // the boot signature
			if layout == layoutGPT {
				off = 512 + 50 // inside the GPT header: its checksum fails
			}
			if _, err := f.WriteAt([]byte{0x12}, off); err != nil {
				t.Fatal(err)
			}
			f.Close()
			r := serveImage(t, img, false)
			defer r.close()
			_, err = Open(r.disk, Options{Partition: tc.part})
			if !errors.Is(err, ErrCorrupt) {
				t.Errorf("Open: %v, want ErrCorrupt", err)
			}
		})
	}
}

// TestUnaligned checks the read-modify-write of partial sectors against
// a plain byte slice, for sectors of 512 and 4096 bytes.
func TestUnaligned(t *testing.T) {
	for _, ss := range []int{512, 4096} {
		dev := &memDevice{b: make([]byte, 64<<10), ss: ss}
		want := make([]byte, len(dev.b))
		v, err := newVolume(dev, int64(ss), int64(len(dev.b)-2*ss), false)
		if err != nil {
			t.Fatal(err)
		}
		for i, w := range []struct{ off, n int }{{0, 1}, {1, 1}, {511, 2}, {100, 5000}, {4095, 4098}, {3, 20000}, {8192, 4096}, {0, 50 << 10}} {
			p := bytes.Repeat([]byte{byte(i + 1)}, w.n)
			if _, err := v.WriteAt(p, int64(w.off)); err != nil {
				t.Fatalf("ss %d write %+v: %v", ss, w, err)
			}
			copy(want[ss+w.off:], p)
			got := make([]byte, w.n+7)
			n, err := v.ReadAt(got, int64(w.off))
			if err != nil || n != len(got) || !bytes.Equal(got, want[ss+w.off:ss+w.off+len(got)]) {
				t.Fatalf("ss %d read back %+v: %d, %v", ss, w, n, err)
			}
		}
		if !bytes.Equal(dev.b, want) {
			t.Errorf("ss %d: device differs (outside the volume?)", ss)
		}
		if _, err := v.WriteAt([]byte{1}, v.size); !errors.Is(err, ErrRange) {
			t.Errorf("ss %d: write past the end: %v", ss, err)
		}
	}
}

// TestFlush checks that Close flushes the device and that a read-only
// file system reports no error.
func TestFlush(t *testing.T) {
	dev := &memDevice{b: smallImage(t), ss: 512}
	fsys, err := Open(dev, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if err := fsys.AppendFile("log.txt", []byte("x\n")); err != nil {
		t.Fatal(err)
	}
	if err := fsys.Close(); err != nil || dev.flushes != 1 {
		t.Errorf("close: %v, %d flushes", err, dev.flushes)
	}
	if _, err := fsys.Stat("log.txt"); !errors.Is(err, ErrClosed) {
		t.Errorf("stat after close: %v", err)
	}
	if _, err := fsys.Stat("x"); !errors.Is(err, fs.ErrNotExist) && !errors.Is(err, ErrClosed) {
		t.Error(err)
	}
}
