//go:build linux

package main

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"
	"unsafe"
)

// blkBench measures a block device as qemu/guests/blktest measures a
// Gozen disk, with O_DIRECT (no page cache): N bytes written sequentially
// in 1 MiB requests, four in flight, then fsync; read back the same way;
// 4096 random 4 KiB reads at queue depth 1 and 32. It prints
// "GOZEN-BLKBENCH name value unit" lines.
func blkBench(args []string) error {
	if len(args) != 2 {
		return errors.New("want DEVICE N")
	}
	n, err := strconv.ParseInt(args[1], 0, 64)
	if err != nil || n <= 0 || n%chunk != 0 {
		return errors.New("bad N (a positive multiple of 1 MiB)")
	}
	f, err := os.OpenFile(args[0], os.O_RDWR|syscall.O_DIRECT, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	seq := func(write bool) (float64, error) {
		start := time.Now()
		offs := make(chan int64)
		errs := make(chan error, 4)
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				buf := aligned(chunk)
				for i := range buf {
					buf[i] = byte(i)
				}
				for off := range offs {
					var err error
					if write {
						_, err = f.WriteAt(buf, off)
					} else {
						_, err = f.ReadAt(buf, off)
					}
					if err != nil {
						errs <- err
						for range offs {
						}
						return
					}
				}
			})
		}
		for off := int64(0); off < n; off += chunk {
			offs <- off
		}
		close(offs)
		wg.Wait()
		if write {
			if err := f.Sync(); err != nil {
				return 0, err
			}
		}
		select {
		case err := <-errs:
			return 0, err
		default:
		}
		return float64(n) / time.Since(start).Seconds() / 1e6, nil
	}
	w, err := seq(true)
	if err != nil {
		return fmt.Errorf("write: %w", err)
	}
	fmt.Printf("GOZEN-BLKBENCH write-mbs %.1f MB/s\n", w)
	r, err := seq(false)
	if err != nil {
		return fmt.Errorf("read: %w", err)
	}
	fmt.Printf("GOZEN-BLKBENCH read-mbs %.1f MB/s\n", r)
	for _, depth := range []int{1, 32} {
		const total = 4096
		per := total / depth
		var wg sync.WaitGroup
		start := time.Now()
		for w := range depth {
			wg.Go(func() {
				rnd := rand.New(rand.NewPCG(uint64(w), 1))
				buf := aligned(4096)
				for range per {
					f.ReadAt(buf, rnd.Int64N(n/4096)*4096)
				}
			})
		}
		wg.Wait()
		fmt.Printf("GOZEN-BLKBENCH randread-4k-qd%d %.1f IOPS\n", depth, float64(per*depth)/time.Since(start).Seconds())
	}
	return nil
}

// aligned returns n bytes aligned to 4 KiB, as O_DIRECT wants.
func aligned(n int) []byte {
	b := make([]byte, n+4096)
	off := int(4096 - uintptr(unsafe.Pointer(&b[0]))%4096)
	if off == 4096 {
		off = 0
	}
	return b[off : off+n]
}
