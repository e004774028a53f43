package blkfront

import (
	"bytes"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/gozen-dev/gozen/drivers/blkback"
)

func pattern(n int, seed uint64) []byte {
	var key [32]byte
	key[0], key[1] = byte(seed), byte(seed>>8)
	b := make([]byte, n)
	rand.NewChaCha8(key).Read(b)
	return b
}

func TestReadWrite(t *testing.T) {
	sizes := []int{512, 4096, 4096 + 512, 11 * 4096, 11*4096 + 1024, 64 << 10, 1 << 20, 3<<20 + 512}
	for _, tc := range []struct {
		name       string
		persistent bool
		indirect   int // offered and wanted
		order      int
	}{
		{"plain", false, 0, 0},
		{"persistent", true, 0, 0},
		{"indirect", false, 256, 0},
		{"persistent+indirect", true, 64, 1},
		{"order1", false, 0, 1},
		{"order2", true, 32, 2},
		{"order3", false, 512, 3},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, blkback.Config{Persistent: true, MaxIndirectSegments: tc.indirect, MaxRingOrder: 3})
			d, f := r.connect(Config{Persistent: tc.persistent, MaxIndirectSegments: tc.indirect, MaxRingOrder: tc.order})
			in := d.Info()
			wantSegs := max(11, tc.indirect)
			if in.Persistent != tc.persistent || in.RingOrder != tc.order || in.MaxSegments != wantSegs || in.Indirect != (tc.indirect > 11) {
				t.Fatalf("negotiated %+v", in)
			}
			if d.Size() != 8<<20 || d.SectorSize() != 512 || d.ReadOnly() {
				t.Fatalf("size %d sector %d ro %v", d.Size(), d.SectorSize(), d.ReadOnly())
			}
			off := int64(0)
			for i, n := range sizes {
				off = (off + int64(i)*4096*3 + 512) % (d.Size() - int64(n))
				off -= off % 512
				want := pattern(n, uint64(i))
				if _, err := d.WriteAt(want, off); err != nil {
					t.Fatalf("write %d at %d: %v", n, off, err)
				}
				got := make([]byte, n)
				if k, err := d.ReadAt(got, off); err != nil || k != n {
					t.Fatalf("read %d at %d: %d, %v", n, off, k, err)
				}
				if !bytes.Equal(got, want) {
					t.Fatalf("read %d at %d: crc %08x, want %08x", n, off, crc32.ChecksumIEEE(got), crc32.ChecksumIEEE(want))
				}
				onDisk := make([]byte, n)
				r.file.ReadAt(onDisk, off)
				if !bytes.Equal(onDisk, want) {
					t.Fatalf("file at %d differs", off)
				}
			}
			st := r.srv.Stats()
			if tc.persistent && (st.PersistentMaps == 0 || st.Copies != 0) || !tc.persistent && (st.PersistentMaps != 0 || st.Copies == 0) {
				t.Errorf("persistent %v: server %+v", tc.persistent, st)
			}
			if (tc.indirect > 11) != (st.Indirect > 0) || st.RingOrder != tc.order || st.Errors != 0 {
				t.Errorf("server %+v", st)
			}
			r.close(d, f)
			r.leftovers()
		})
	}
}

func TestConcurrent(t *testing.T) {
	for _, persistent := range []bool{false, true} {
		t.Run(fmt.Sprint("persistent=", persistent), func(t *testing.T) {
			r := newRig(t, blkback.Config{Persistent: true, MaxIndirectSegments: 64, MaxRingOrder: 1, Size: 32 << 20})
			d, f := r.connect(Config{Persistent: persistent, MaxIndirectSegments: 64, MaxRingOrder: 1, MaxPages: 256})
			const workers = 32
			region := d.Size() / workers
			var wg sync.WaitGroup
			errs := make(chan error, workers)
			for w := range workers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					rng := rand.New(rand.NewPCG(uint64(w), 7))
					base := int64(w) * region
					for i := range 20 {
						n := 512 * (1 + rng.IntN(600))
						off := base + 512*rng.Int64N((region-int64(n))/512)
						want := pattern(n, uint64(w*100+i))
						if _, err := d.WriteAt(want, off); err != nil {
							errs <- err
							return
						}
						got := make([]byte, n)
						if _, err := d.ReadAt(got, off); err != nil {
							errs <- err
							return
						}
						if !bytes.Equal(got, want) {
							errs <- fmt.Errorf("worker %d: %d bytes at %d differ", w, n, off)
							return
						}
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			r.close(d, f)
			r.leftovers()
		})
	}
}

func TestBounds(t *testing.T) {
	r := newRig(t, blkback.Config{Size: 1 << 20, SectorSize: 4096})
	d, f := r.connect(Config{})
	if d.SectorSize() != 4096 {
		t.Fatalf("sector size %d", d.SectorSize())
	}
	buf := make([]byte, 8192)
	for _, tc := range []struct {
		name string
		err  error
		f    func() error
	}{
		{"read unaligned offset", ErrUnaligned, func() error { _, err := d.ReadAt(buf[:4096], 512); return err }},
		{"read unaligned length", ErrUnaligned, func() error { _, err := d.ReadAt(buf[:512], 0); return err }},
		{"write unaligned", ErrUnaligned, func() error { _, err := d.WriteAt(buf[:100], 0); return err }},
		{"negative", ErrRange, func() error { _, err := d.ReadAt(buf[:4096], -4096); return err }},
		{"write past end", ErrRange, func() error { _, err := d.WriteAt(buf, 1<<20-4096); return err }},
		{"read at end", io.EOF, func() error { _, err := d.ReadAt(buf[:4096], 1<<20); return err }},
		{"discard unsupported", ErrNotSupported, func() error { return d.Discard(r.ctx, 0, 4096) }},
		{"flush unsupported", ErrNotSupported, func() error { return d.Flush(r.ctx) }},
	} {
		if err := tc.f(); !errors.Is(err, tc.err) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.err)
		}
	}
	n, err := d.ReadAt(buf, 1<<20-4096)
	if n != 4096 || err != io.EOF {
		t.Errorf("read across the end: %d, %v", n, err)
	}
	r.close(d, f)
	r.leftovers()
}

func TestFlushDiscard(t *testing.T) {
	for _, tc := range []struct {
		name            string
		flush, barrier  bool
		wantFlushErr    error
		discard, secure bool
	}{
		{"flush-cache", true, false, nil, true, true},
		{"barrier only", false, true, nil, true, false},
		{"neither", false, false, ErrNotSupported, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, blkback.Config{FlushCache: tc.flush, Barrier: tc.barrier, Discard: tc.discard, DiscardSecure: tc.secure, DiscardGranularity: 4096})
			d, f := r.connect(Config{})
			if err := d.Flush(r.ctx); !errors.Is(err, tc.wantFlushErr) {
				t.Errorf("flush: %v", err)
			}
			data := pattern(64<<10, 1)
			if _, err := d.WriteAt(data, 1<<20); err != nil {
				t.Fatal(err)
			}
			err := d.Discard(r.ctx, 1<<20+4096, 8192)
			if !tc.discard {
				if !errors.Is(err, ErrNotSupported) {
					t.Errorf("discard: %v", err)
				}
			} else {
				if err != nil {
					t.Fatal(err)
				}
				if in := d.Info(); in.DiscardGranularity != 4096 || in.DiscardSecure != tc.secure {
					t.Errorf("info %+v", in)
				}
				got := make([]byte, len(data))
				d.ReadAt(got, 1<<20)
				clear(data[4096 : 4096+8192])
				if !bytes.Equal(got, data) {
					t.Error("discarded range does not read as zeros, or more was discarded")
				}
				if err := d.SecureDiscard(r.ctx, 0, 512); tc.secure != (err == nil) {
					t.Errorf("secure discard: %v", err)
				}
			}
			r.close(d, f)
			r.leftovers()
		})
	}
}

func TestReadOnly(t *testing.T) {
	r := newRig(t, blkback.Config{ReadOnly: true, Discard: true})
	want := pattern(8192, 3)
	r.file.WriteAt(want, 4096)
	d, f := r.connect(Config{})
	if !d.ReadOnly() {
		t.Fatal("not read-only")
	}
	if _, err := d.WriteAt(make([]byte, 512), 4096); !errors.Is(err, ErrReadOnly) {
		t.Errorf("write: %v", err)
	}
	if err := d.Discard(r.ctx, 0, 512); !errors.Is(err, ErrReadOnly) {
		t.Errorf("discard: %v", err)
	}
	got := make([]byte, 8192)
	if _, err := d.ReadAt(got, 4096); err != nil || !bytes.Equal(got, want) {
		t.Errorf("read: %v", err)
	}
	r.close(d, f)
	r.leftovers()
}
