//go:build tamago

// Command survive is the tier-B guest of the lifecycle tests with drivers
// (qemu/survive_test.go): a network and a disk in use across xl save,
// xl restore and xl migrate.
//
// It brings the vif up (network.Up: DHCP or ip=), serves HTTP on :80
//
//	GET /ping   "pong seq=N" (N: records written so far)
//	GET /stop   stops the disk loop (the answer waits for it)
//
// and, with a disk xvda, writes numbered 4 KiB records to it one after
// another (record N at offset N*4096: its number, the domain's resume
// count, then the test stream of seed N; a flush and a 25 ms pause every
// 16), printing
//
//	SURVIVE seq=N
//
// every 200 records, and, after each resume,
//
//	SURVIVE resumed kind=KIND seq=N
//
// With -vchan NAME it also serves a vchan to dom0 at data/vchan/0/NAME
// and streams decimal line numbers to each client (0, 1, 2, ... one every
// 20 ms). A checkpoint leaves the channel running. A resume into a new
// domain loses it: the stream ends with vchan.ErrResumed, the guest closes
// the channel and listens again in its new domain, printing
//
//	SURVIVE vchan listening domid=D
//	SURVIVE vchan lost lines=N resumed=BOOL close=ERR err=ERR
//
// On /stop it flushes and prints "SURVIVE stopped last=N" (N records
// written, 0..N-1), then exits. dom0 checks the disk (dom0tool seqcheck).
package main

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"os"
	"sync/atomic"
	"time"

	"github.com/gozen-dev/gozen/domid"
	"github.com/gozen-dev/gozen/drivers/blkfront"
	"github.com/gozen-dev/gozen/drivers/vchan"
	"github.com/gozen-dev/gozen/internal/teststream"
	"github.com/gozen-dev/gozen/network"
	"github.com/gozen-dev/gozen/platform"
	"github.com/gozen-dev/gozen/xenbus/control"
	"github.com/gozen-dev/gozen/xenbus/device"
)

// recordSize is the size of one record.
const recordSize = 4096

func main() {
	vchanPort := flag.String("vchan", "", "serve a vchan of this name to dom0")
	flag.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	n, err := network.Up(ctx)
	cancel()
	if err != nil {
		fmt.Println("SURVIVE FAIL network:", err)
		os.Exit(1)
	}
	var seq, resumes atomic.Int64
	control.OnResume(func(k platform.Kind) {
		resumes.Add(1)
		fmt.Printf("SURVIVE resumed kind=%s seq=%d link=%v\n", k, seq.Load(), n.Link.Stats().Up)
	})
	disk, err := openDisk()
	if err != nil {
		fmt.Println("SURVIVE FAIL disk:", err)
		os.Exit(1)
	}
	stop := make(chan struct{})
	stopped := make(chan struct{})
	http.HandleFunc("/ping", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "pong seq=%d\n", seq.Load())
	})
	http.HandleFunc("/stop", func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-stop:
		default:
			close(stop)
		}
		<-stopped
		fmt.Fprintf(w, "stopped last=%d\n", seq.Load())
	})
	go func() {
		fmt.Println("SURVIVE FAIL http:", http.ListenAndServe(":80", nil))
		os.Exit(1)
	}()
	select {
	case <-control.Ready():
	case <-time.After(20 * time.Second):
		fmt.Println("SURVIVE FAIL control never became ready")
		os.Exit(1)
	}
	if *vchanPort != "" {
		go serveVchan(*vchanPort, &resumes)
	}
	fmt.Printf("SURVIVE ready %s disk=%v\n", n.Stack.Addressing(), disk != nil)
	err = loop(disk, &seq, &resumes, stop)
	close(stopped)
	if err != nil {
		fmt.Printf("SURVIVE FAIL disk loop at seq=%d: %v\n", seq.Load(), err)
		time.Sleep(time.Second) // let /stop answer
		os.Exit(1)
	}
	fmt.Printf("SURVIVE stopped last=%d\n", seq.Load())
	time.Sleep(time.Second) // let /stop answer
}

// openDisk connects xvda, if the domain has one.
func openDisk() (*blkfront.Disk, error) {
	p := platform.Domain()
	mem, err := p.Grants()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	drv := &blkfront.Driver{Config: blkfront.Config{Events: p.Events(), Memory: mem,
		Persistent: true, MaxIndirectSegments: 64, MaxRingOrder: 2}}
	bus, err := p.StartDevices(ctx, func(e *device.DeviceError) { fmt.Println("SURVIVE device:", e) }, drv)
	if err != nil {
		return nil, err
	}
	for _, d := range bus.Devices() {
		if b, ok := d.(*device.Bound); ok && b.Name() == "vbd/51712" {
			if disk, ok := b.Conn().(*blkfront.Disk); ok {
				return disk, nil
			}
		}
	}
	return nil, nil
}

// record fills buf with record n: its number, the resume count when it
// was written, then the test stream of seed n.
func record(buf []byte, n, resumes int64) {
	teststream.New(uint64(n) + 1).Fill(buf)
	binary.LittleEndian.PutUint64(buf[0:], uint64(n))
	binary.LittleEndian.PutUint64(buf[8:], uint64(resumes))
}

// loop writes records until stop is closed or the disk is full.
func loop(disk *blkfront.Disk, seq, resumes *atomic.Int64, stop <-chan struct{}) error {
	if disk == nil {
		<-stop
		return nil
	}
	buf := make([]byte, recordSize)
	max := disk.Size() / recordSize
	for {
		select {
		case <-stop:
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			return disk.Flush(ctx)
		default:
		}
		n := seq.Load()
		if n >= max {
			return errors.New("disk full")
		}
		record(buf, n, resumes.Load())
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		_, err := disk.WriteAtContext(ctx, buf, n*recordSize)
		if err == nil && n%16 == 15 {
			err = disk.Flush(ctx)
			time.Sleep(25 * time.Millisecond) // a steady writer, not a disk filler
		}
		cancel()
		if err != nil {
			return err
		}
		seq.Add(1)
		if (n+1)%200 == 0 {
			fmt.Printf("SURVIVE seq=%d\n", n+1)
		}
	}
}

// serveVchan serves the line stream to dom0 at data/vchan/0/port, one
// client after another; after a lost channel it waits for the resume to
// finish (the resume count to move) before it listens again.
func serveVchan(port string, resumes *atomic.Int64) {
	p := platform.Domain()
	for {
		self, ok := p.Self()
		mem, err := p.Grants()
		xs, serr := p.Store()
		if !ok || err != nil || serr != nil {
			fmt.Println("SURVIVE FAIL vchan: no domid, grants or store:", err, serr)
			return
		}
		cfg := vchan.Config{Events: p.Events(), Memory: mem, Store: vchan.NewXenStore(xs, self),
			Remote: domid.ID(0), Self: self, Path: vchan.ServerPath(0, port)}
		ctx := context.Background()
		before := resumes.Load()
		l, err := vchan.Listen(ctx, cfg)
		if err != nil {
			fmt.Println("SURVIVE FAIL vchan listen:", err)
			return
		}
		fmt.Printf("SURVIVE vchan listening domid=%d\n", self)
		c, err := l.Accept(ctx)
		if err != nil {
			cerr := l.Close()
			fmt.Printf("SURVIVE vchan lost lines=0 resumed=%v close=%v err=%v\n", errors.Is(err, vchan.ErrResumed), cerr, err)
		} else {
			var n int
			for ; ; n++ {
				if _, err = fmt.Fprintf(c, "%d\n", n); err != nil {
					break
				}
				time.Sleep(20 * time.Millisecond)
			}
			cerr := c.Close()
			fmt.Printf("SURVIVE vchan lost lines=%d resumed=%v close=%v err=%v\n", n, errors.Is(err, vchan.ErrResumed), cerr, err)
		}
		for i := 0; i < 1200 && resumes.Load() == before; i++ {
			time.Sleep(50 * time.Millisecond)
		}
	}
}
