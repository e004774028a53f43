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
// and powers off; dom0 then checks what it wrote. With -hotplug N it first
// follows N cycles of dom0's xl block-attach and block-detach of xvdd (see
// hotplug).
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
	"github.com/gozen-dev/gozen/qemu/guests/internal/report"
	"github.com/gozen-dev/gozen/xenbus/device"
)

var rep = report.New("BLKTEST")

const chunk = 1 << 20

func main() {
	size := flag.Int64("size", 64<<20, "bytes written to xvda and checked")
	seed := flag.Uint64("seed", 9, "test-stream seed of the data written")
	cycles := flag.Int("hotplug", 0, "cycles of xl block-attach/block-detach of xvdd to follow")
	cfg := blkfront.Config{}
	flag.BoolVar(&cfg.Persistent, "persistent", true, "ask for persistent grants")
	flag.IntVar(&cfg.MaxIndirectSegments, "indirect", 64, "most segments of an indirect request (0: no indirect requests)")
	flag.IntVar(&cfg.MaxRingOrder, "ring-order", 2, "largest ring order to ask for")
	flag.IntVar(&cfg.MaxQueues, "queues", 1, "most queues to use where blkback offers them")
	flag.Parse()

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	bus, disks, err := start(ctx, cfg)
	cancel()
	rep.Check("disks", err, fmt.Sprintf("%d vbd devices connected", len(disks)))
	if err != nil {
		done()
	}
	if *cycles > 0 {
		rep.Check("hotplug", hotplug(bus, *cycles), fmt.Sprintf("%d cycles of xvdd attached, read and detached; no grant or port left", *cycles))
	}
	data, ro, fat := disks["vbd/51712"], disks["vbd/51728"], disks["vbd/51744"]
	i := data.Info()
	fmt.Printf("BLKTEST xvda %d bytes, sector %d, persistent=%v indirect=%v segments=%d ring-order=%d queues=%d flush=%v barrier=%v discard=%v\n",
		data.Size(), data.SectorSize(), i.Persistent, i.Indirect, i.MaxSegments, i.RingOrder, i.Queues, i.FlushCache, i.Barrier, i.Discard)

	rep.Check("write", writeAll(data, *size, *seed), fmt.Sprintf("%d bytes of the test stream, flushed", *size))
	rep.Check("read", readAll(data, *size, *seed), "read back and compared")
	rep.Check("discard", discard(data, *size), "a discarded MiB reads back as zeros")
	rep.Check("readonly", readOnly(ro), "xvdb refuses writes and serves reads")
	rep.Check("fat", useFAT(fat), "config.txt read, log.txt appended, d/big.bin written, synced")
	benchmarks(data, *size)
	for q, st := range data.Stats().Queues {
		fmt.Printf("BLKTEST queue %d requests=%d\n", q, st.Requests)
	}
	done()
}

func done() {
	if rep.Done() > 0 {
		os.Exit(1)
	}
	os.Exit(0)
}

// start connects every vbd with the frontend options of cfg and returns
// the bus and the disks by name; it wants three.
func start(ctx context.Context, cfg blkfront.Config) (*device.Bus, map[string]*blkfront.Disk, error) {
	p := platform.Domain()
	mem, err := p.Grants()
	if err != nil {
		return nil, nil, err
	}
	cfg.Events, cfg.Memory = p.Events(), mem
	drv := &blkfront.Driver{Config: cfg}
	bus, err := p.StartDevices(ctx, func(e *device.DeviceError) { fmt.Println("BLKTEST device:", e) }, drv)
	if err != nil {
		return nil, nil, err
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
			return nil, nil, fmt.Errorf("have %v, want vbd/51712 (xvda), vbd/51728 (xvdb) and vbd/51744 (xvdc)", names)
		}
	}
	return bus, out, nil
}

// hotplugName is the device dom0 attaches and detaches: xvdd.
const hotplugName = "vbd/51760"

// hotplugMagic starts the read-only image dom0 attaches as xvdd.
const hotplugMagic = "GOZEN-HOTPLUG"

// holdings is what the domain holds of Xen: grants and bound ports.
func holdings() (string, error) {
	p := platform.Domain()
	g, err := p.Grants()
	if err != nil {
		return "", err
	}
	s := g.Stats()
	return fmt.Sprintf("grants=%d shares=%d mappings=%d ports=%d", s.Grants, s.Shares, s.Mappings, p.Events().Stats().Ports), nil
}

// hotplug follows cycles of dom0 attaching xvdd (a read-only image that
// starts with hotplugMagic) and detaching it: it prints "BLKTEST HOTPLUG
// READY", then for each cycle waits for the disk to connect, reads its
// first sector, prints "BLKTEST hotplug I ok", waits for the disk to be
// gone and prints "BLKTEST hotplug I gone". At the end the domain must
// hold the grants and ports it held before the first cycle.
func hotplug(bus *device.Bus, cycles int) error {
	before, err := holdings()
	if err != nil {
		return err
	}
	find := func() *blkfront.Disk {
		for _, d := range bus.Devices() {
			if b, ok := d.(*device.Bound); ok && b.Name() == hotplugName {
				if disk, ok := b.Conn().(*blkfront.Disk); ok {
					return disk
				}
			}
		}
		return nil
	}
	// await waits until cond holds, re-checking at each change of the bus
	await := func(what string, cond func() bool) error {
		deadline := time.After(2 * time.Minute)
		for {
			ch := bus.Changed()
			if cond() {
				return nil
			}
			select {
			case <-ch:
			case <-deadline:
				return fmt.Errorf("%s: not within 2 minutes", what)
			}
		}
	}
	fmt.Println("BLKTEST HOTPLUG READY", before)
	for i := 1; i <= cycles; i++ {
		var disk *blkfront.Disk
		if err := await(fmt.Sprintf("cycle %d: %s to connect", i, hotplugName), func() bool { disk = find(); return disk != nil }); err != nil {
			return err
		}
		buf := make([]byte, disk.SectorSize())
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		_, err := disk.ReadAtContext(ctx, buf, 0)
		cancel()
		if err != nil {
			return fmt.Errorf("cycle %d: reading %s: %w", i, hotplugName, err)
		}
		if !bytes.HasPrefix(buf, []byte(hotplugMagic)) {
			return fmt.Errorf("cycle %d: %s starts %q, want %q", i, hotplugName, buf[:len(hotplugMagic)], hotplugMagic)
		}
		fmt.Printf("BLKTEST hotplug %d ok\n", i)
		if err := await(fmt.Sprintf("cycle %d: %s to go", i, hotplugName), func() bool { return find() != disk }); err != nil {
			return err
		}
		fmt.Printf("BLKTEST hotplug %d gone\n", i)
	}
	// the bus stops listing a device when it starts closing; its grants
	// and port go with the close, which a backend may take a moment over
	var after string
	for end := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if after, err = holdings(); err != nil {
			return err
		}
		if after == before || time.Now().After(end) {
			break
		}
	}
	if after != before {
		return fmt.Errorf("after %d cycles the domain holds %s, before %s", cycles, after, before)
	}
	fmt.Println("BLKTEST HOTPLUG holdings", after)
	return nil
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
	rep.Bench("write-mbs", float64(size)/time.Since(start).Seconds()/1e6, "MB/s")
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
	rep.Bench("read-mbs", float64(size)/time.Since(start).Seconds()/1e6, "MB/s")
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
		rep.Bench(fmt.Sprintf("randread-4k-qd%d", depth), float64(per*depth)/time.Since(start).Seconds(), "IOPS")
	}
}
