package blockfs

import (
	"bytes"
	"io"
	"os"
	"testing"

	"github.com/gozen-dev/gozen/drivers/blkback"
)

// memStorage is an in-memory blkback.Storage, so that the benchmark
// measures the stack rather than the host's file system.
type memStorage []byte

func (m memStorage) ReadAt(p []byte, off int64) (int, error)  { return copy(p, m[off:]), nil }
func (m memStorage) WriteAt(p []byte, off int64) (int, error) { return copy(m[off:], p), nil }

// BenchmarkFile writes, then reads, a 4 MiB file in 64 KiB calls through
// blockfs, go-diskfs, blkfront and blkback (in memory); MB/s is the
// file's bytes.
func BenchmarkFile(b *testing.B) {
	const size, chunk = 4 << 20, 64 << 10
	img := newImage(b, layoutWhole, 64<<20, nil)
	raw, err := os.ReadFile(img.path)
	if err != nil {
		b.Fatal(err)
	}
	r := serve(b, memStorage(raw), img.size, blkback.Config{FlushCache: true, Persistent: true, MaxIndirectSegments: 64, MaxRingOrder: 1})
	b.Cleanup(r.close)
	fsys, err := Open(r.disk, Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { fsys.Close() })
	data := bytes.Repeat([]byte("gozen-blockfs-bench\n"), size/20+1)[:size]
	b.Run("write", func(b *testing.B) {
		b.SetBytes(size)
		for b.Loop() {
			f, err := fsys.Create("bench.bin")
			if err != nil {
				b.Fatal(err)
			}
			for o := 0; o < size; o += chunk {
				if _, err := f.Write(data[o : o+chunk]); err != nil {
					b.Fatal(err)
				}
			}
			f.Close()
		}
	})
	b.Run("read", func(b *testing.B) {
		b.SetBytes(size)
		buf := make([]byte, chunk)
		for b.Loop() {
			f, err := fsys.OpenFile("bench.bin", os.O_RDONLY)
			if err != nil {
				b.Fatal(err)
			}
			n, err := io.CopyBuffer(io.Discard, struct{ io.Reader }{f}, buf)
			if err != nil || n != size {
				b.Fatal(n, err)
			}
		}
	})
}
