//go:build tamago

// Command blktest is the tier-B block test guest: blkfront against Linux's
// blkback serving loop devices in dom0. It expects three disks: xvda (rw,
// at least -size + 2 MiB), xvdb (read-only) and xvdc (a FAT32 file system
// made by dom0's mkfs.fat, holding config.txt). It prints one line per case:
//
//	BLKTEST PASS name detail
//	BLKTEST FAIL name: reason
//	BLKTEST BENCH name value unit
//	BLKTEST DONE pass=N fail=M
//
// and powers off; dom0 then checks what it wrote.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/gozen-dev/gozen/blockfs"
	"github.com/gozen-dev/gozen/drivers/blkfront"
	"github.com/gozen-dev/gozen/internal/teststream"
	"github.com/gozen-dev/gozen/platform"
	"github.com/gozen-dev/gozen/xenbus/device"
)

var pass, fail int

func check(name string, err error, detail string) {
	if err != nil {
		fail++
		fmt.Printf("BLKTEST FAIL %s: %v\n", name, err)
		return
	}
	pass++
	fmt.Printf("BLKTEST PASS %s %s\n", name, detail)
}

func bench(name string, v float64, unit string) {
	fmt.Printf("BLKTEST BENCH %s %.1f %s\n", name, v, unit)
}

const chunk = 1 << 20

func main() {
	size := flag.Int64("size", 64<<20, "bytes written to xvda and checked")
	seed := flag.Uint64("seed", 9, "test-stream seed of the data written")
	flag.Parse()

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	disks, err := start(ctx)
	cancel()
	check("disks", err, fmt.Sprintf("%d vbd devices connected", len(disks)))
	if err != nil {
		done()
	}
	data, ro, fat := disks["vbd/51712"], disks["vbd/51728"], disks["vbd/51744"]
	i := data.Info()
	fmt.Printf("BLKTEST xvda %d bytes, sector %d, persistent=%v indirect=%v segments=%d ring-order=%d flush=%v barrier=%v discard=%v\n",
		data.Size(), data.SectorSize(), i.Persistent, i.Indirect, i.MaxSegments, i.RingOrder, i.FlushCache, i.Barrier, i.Discard)

	check("write", writeAll(data, *size, *seed), fmt.Sprintf("%d bytes of the test stream, flushed", *size))
	check("read", readAll(data, *size, *seed), "read back and compared")
	check("discard", discard(data, *size), "a discarded MiB reads back as zeros")
	check("readonly", readOnly(ro), "xvdb refuses writes and serves reads")
	check("fat", useFAT(fat), "config.txt read, log.txt appended, d/big.bin written, synced")
	benchmarks(data, *size)
	done()
}

func done() {
	fmt.Printf("BLKTEST DONE pass=%d fail=%d\n", pass, fail)
	if fail > 0 {
		os.Exit(1)
	}
	os.Exit(0)
}

// start connects every vbd and returns them by name; it wants three.
func start(ctx context.Context) (map[string]*blkfront.Disk, error) {
	p := platform.Domain()
	mem, err := p.Grants()
	if err != nil {
		return nil, err
	}
	drv := &blkfront.Driver{Config: blkfront.Config{Events: p.Events(), Memory: mem,
		Persistent: true, MaxIndirectSegments: 64, MaxRingOrder: 2}}
	bus, err := p.StartDevices(ctx, func(e *device.DeviceError) { fmt.Println("BLKTEST device:", e) }, drv)
	if err != nil {
		return nil, err
	}
	out := map[string]*blkfront.Disk{}
	var names []string
	for _, d := range bus.Devices() {
		if b, ok := d.(*device.Bound); ok {
			if disk, ok := b.Conn().(*blkfront.Disk); ok {
				out[disk.Name()] = disk
				names = append(names, disk.Name())
			}
		}
	}
	sort.Strings(names)
	for _, n := range []string{"vbd/51712", "vbd/51728", "vbd/51744"} {
		if out[n] == nil {
			return nil, fmt.Errorf("have %v, want vbd/51712 (xvda), vbd/51728 (xvdb) and vbd/51744 (xvdc)", names)
		}
	}
	return out, nil
}

// writeAll writes the stream in 1 MiB chunks, four in flight, then flushes.
func writeAll(d *blkfront.Disk, size int64, seed uint64) error {
	start := time.Now()
	err := parallel(4, size, func(off int64, buf []byte) error {
		stream(seed, off, buf)
		_, err := d.WriteAt(buf, off)
		return err
	})
	if err != nil {
		return err
	}
	if err := d.Flush(context.Background()); err != nil {
		return fmt.Errorf("flush: %w", err)
	}
	bench("write-mbs", float64(size)/time.Since(start).Seconds()/1e6, "MB/s")
	return nil
}

func readAll(d *blkfront.Disk, size int64, seed uint64) error {
	start := time.Now()
	err := parallel(4, size, func(off int64, buf []byte) error {
		if _, err := d.ReadAt(buf, off); err != nil {
			return err
		}
		want := make([]byte, len(buf))
		stream(seed, off, want)
		if !bytes.Equal(buf, want) {
			return fmt.Errorf("the MiB at %d differs from what was written", off)
		}
		return nil
	})
	bench("read-mbs", float64(size)/time.Since(start).Seconds()/1e6, "MB/s")
	return err
}

// stream fills buf with the test stream of seed from byte off (a multiple
// of chunk: each chunk restarts the stream of seed+chunk index, so chunks
// can be made in any order).
func stream(seed uint64, off int64, buf []byte) {
	teststream.New(seed + uint64(off/chunk)).Fill(buf)
}

// parallel runs fn over [0, size) in chunks, n at a time.
func parallel(n int, size int64, fn func(off int64, buf []byte) error) error {
	offs := make(chan int64)
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			buf := make([]byte, chunk)
			for off := range offs {
				if err := fn(off, buf[:min(chunk, size-off)]); err != nil {
					errs <- err
					for range offs {
					}
					return
				}
			}
		})
	}
	for off := int64(0); off < size; off += chunk {
		offs <- off
	}
	close(offs)
	wg.Wait()
	select {
	case err := <-errs:
		return err
	default:
		return nil
	}
}

// discard discards the MiB after the data; it must read back as zeros.
func discard(d *blkfront.Disk, size int64) error {
	if !d.Info().Discard {
		return errors.New("the backend offers no feature-discard")
	}
	off := size
	buf := bytes.Repeat([]byte{0xa5}, chunk)
	if _, err := d.WriteAt(buf, off); err != nil {
		return err
	}
	if err := d.Discard(context.Background(), off, chunk); err != nil {
		return err
	}
	if _, err := d.ReadAt(buf, off); err != nil {
		return err
	}
	if i := bytes.IndexFunc(buf, func(r rune) bool { return r != 0 }); i >= 0 {
		return fmt.Errorf("byte %d of the discarded MiB is not zero", i)
	}
	return nil
}

func readOnly(d *blkfront.Disk) error {
	if !d.ReadOnly() {
		return errors.New("xvdb is not read-only")
	}
	buf := make([]byte, 4096)
	if _, err := d.WriteAt(buf, 0); !errors.Is(err, blkfront.ErrReadOnly) {
		return fmt.Errorf("write to a read-only disk: %v, want ErrReadOnly", err)
	}
	if _, err := d.ReadAt(buf, 0); err != nil {
		return fmt.Errorf("read: %w", err)
	}
	return nil
}

func useFAT(d *blkfront.Disk) error {
	fsys, err := blockfs.Open(d, blockfs.Options{})
	if err != nil {
		return err
	}
	cfg, err := fsys.ReadFile("config.txt")
	if err != nil {
		fsys.Close()
		return err
	}
	if string(cfg) != "greeting=hello from dom0\n" {
		fsys.Close()
		return fmt.Errorf("config.txt is %q", cfg)
	}
	for i := range 100 {
		if err := fsys.AppendFile("log.txt", fmt.Appendf(nil, "line %d from the guest\n", i)); err != nil {
			fsys.Close()
			return err
		}
	}
	if err := fsys.MkdirAll("d"); err != nil {
		fsys.Close()
		return err
	}
	if err := fsys.WriteFile("d/big.bin", teststream.Bytes(11, 1<<20)); err != nil {
		fsys.Close()
		return err
	}
	if err := fsys.Sync(context.Background()); err != nil {
		fsys.Close()
		return err
	}
	return fsys.Close()
}

// benchmarks measures 4 KiB random reads at queue depth 1 and 32.
func benchmarks(d *blkfront.Disk, size int64) {
	for _, depth := range []int{1, 32} {
		const total = 4096
		var wg sync.WaitGroup
		start := time.Now()
		per := total / depth
		for w := range depth {
			wg.Go(func() {
				r := rand.New(rand.NewPCG(uint64(w), 1))
				buf := make([]byte, 4096)
				for range per {
					d.ReadAt(buf, r.Int64N(size/4096)*4096)
				}
			})
		}
		wg.Wait()
		bench(fmt.Sprintf("randread-4k-qd%d", depth), float64(per*depth)/time.Since(start).Seconds(), "IOPS")
	}
}
