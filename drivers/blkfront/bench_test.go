package blkfront

import (
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"

	"github.com/gozen-dev/gozen/drivers/blkback"
)

// memDisk is an in-memory Storage, so that benchmarks measure the
// protocol rather than the file system.
type memDisk []byte

func (m memDisk) ReadAt(p []byte, off int64) (int, error)  { return copy(p, m[off:]), nil }
func (m memDisk) WriteAt(p []byte, off int64) (int, error) { return copy(m[off:], p), nil }

const benchSize = 64 << 20

func benchRig(b *testing.B, persistent bool, indirect int) (*rig, *Disk) {
	r := newRig(b, blkback.Config{Size: benchSize, Disk: make(memDisk, benchSize), Persistent: true, MaxIndirectSegments: 256, MaxRingOrder: 2})
	d, f := r.connect(Config{Persistent: persistent, MaxIndirectSegments: indirect, MaxRingOrder: 2, MaxPages: 4096})
	b.Cleanup(func() { r.close(d, f); r.leftovers() })
	return r, d
}

var benchModes = []struct {
	name       string
	persistent bool
	indirect   int
}{{"copy", false, 0}, {"persistent", true, 0}, {"persistent+indirect", true, 256}}

// BenchmarkSequential reads and writes 1 MiB at a time through the disk.
func BenchmarkSequential(b *testing.B) {
	for _, m := range benchModes {
		for _, op := range []string{"read", "write"} {
			b.Run(m.name+"/"+op, func(b *testing.B) {
				_, d := benchRig(b, m.persistent, m.indirect)
				buf := make([]byte, 1<<20)
				b.SetBytes(int64(len(buf)))
				off := int64(0)
				for b.Loop() {
					var err error
					if op == "read" {
						_, err = d.ReadAt(buf, off)
					} else {
						_, err = d.WriteAt(buf, off)
					}
					if err != nil {
						b.Fatal(err)
					}
					off = (off + int64(len(buf))) % benchSize
				}
			})
		}
	}
}

// BenchmarkRandomRead4K reads 4 KiB at random offsets with 1 and 32
// requests in flight; ns/op is per read (IOPS = 1e9 / ns/op).
func BenchmarkRandomRead4K(b *testing.B) {
	for _, m := range benchModes[:2] {
		for _, qd := range []int{1, 32} {
			b.Run(fmt.Sprintf("%s/qd%d", m.name, qd), func(b *testing.B) {
				_, d := benchRig(b, m.persistent, m.indirect)
				b.SetBytes(4096)
				b.ResetTimer()
				var wg sync.WaitGroup
				per := b.N / qd
				for w := range qd {
					n := per
					if w == 0 {
						n += b.N % qd
					}
					wg.Add(1)
					go func() {
						defer wg.Done()
						rng := rand.New(rand.NewPCG(uint64(w), 1))
						buf := make([]byte, 4096)
						for range n {
							if _, err := d.ReadAt(buf, 4096*rng.Int64N(benchSize/4096)); err != nil {
								b.Error(err)
								return
							}
						}
					}()
				}
				wg.Wait()
			})
		}
	}
}
