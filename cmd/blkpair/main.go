//go:build !tamago

// Command blkpair runs Xen's block split driver between two Linux
// processes, with no Xen: blkback serving a file in one, blkfront in the
// other, over event channels on Unix sockets (evtchn/evunix), grants in
// shared-memory files (gnttab/gntunix) and a xenstore served on a Unix
// socket (xenbus/memstore, spoken to by the real xenbus client); see
// package internal/devpair for the rendezvous directory.
//
// In one terminal, serve a disk image (created with -size if missing; its
// size must be a multiple of 512 bytes); blkpair creates a rendezvous
// directory (or uses -dir) and prints the command that connects to it:
//
//	blkpair serve -file disk.img -size 16M
//	blkpair: serving vbd/51712 (disk.img, 16777216 bytes); connect with:
//	blkpair client -dir /tmp/bp123
//
// In another, run the frontend: it reads the whole disk, then for -n
// rounds (0: until interrupted) writes random data at a random
// sector-aligned offset (up to 256 KiB), reads it back and compares,
// flushing now and then; at the end it flushes, reads the whole disk
// again and checks it against what it wrote. It prints the SHA-256 of
// the disk before and after, so the image can be checked independently
// (sha256sum disk.img):
//
//	blkpair client -dir /tmp/bp123 -n 200
//
// With -queues N the server offers N queues (multi-queue-max-queues) and
// the client uses at most N; the client prints how many requests each
// queue carried.
//
// Each side serves one session: when the frontend has closed the device
// (or either side dies: the other notices through the store, reports the
// error and exits with status 1), both print "leftovers: none" if they
// released every grant, mapping and event channel, and the rendezvous
// directory is removed by whichever leaves last.
package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/gozen-dev/gozen/drivers/blkback"
	"github.com/gozen-dev/gozen/drivers/blkfront"
	"github.com/gozen-dev/gozen/internal/devpair"
	"github.com/gozen-dev/gozen/xenbus/device"
)

// devID is the device's id: xvda's virtual device number.
const devID = "51712"

// closeWait bounds each wait of the close handshake.
const closeWait = 5 * time.Second

// maxIO is the largest write of a round.
const maxIO = 256 << 10

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "blkpair:", err)
		os.Exit(1)
	}
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: blkpair serve [-dir DIR] -file IMAGE [-size SIZE] [-ro] [-queues N]")
	fmt.Fprintln(w, "       blkpair client -dir DIR [-n ROUNDS] [-seed N] [-queues N]")
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		usage(stderr)
		return errors.New("want serve or client")
	}
	fs := flag.NewFlagSet("blkpair "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", "", "rendezvous directory (serve: created if empty)")
	queues := fs.Int("queues", 1, "serve: queues offered (multi-queue-max-queues; 1 offers none); client: most queues used")
	switch args[0] {
	case "serve":
		file := fs.String("file", "", "disk image to serve")
		size := fs.String("size", "16M", "size of the image if it is created (bytes, or with K, M or G)")
		ro := fs.Bool("ro", false, "serve the disk read-only")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		if *file == "" {
			return errors.New("serve: -file is required")
		}
		n, err := parseSize(*size)
		if err != nil {
			return err
		}
		if *queues < 1 || *queues > blkback.MaxQueues {
			return fmt.Errorf("serve: -queues %d, want 1..%d", *queues, blkback.MaxQueues)
		}
		return serve(ctx, *dir, *file, n, *ro, *queues, stdout)
	case "client":
		n := fs.Int("n", 100, "rounds of write, read back and compare (0: until interrupted)")
		seed := fs.Uint64("seed", 1, "seed of the offsets, sizes and data")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		if *dir == "" {
			return errors.New("client: -dir is required")
		}
		if *queues < 1 {
			return fmt.Errorf("client: -queues %d, want 1 or more", *queues)
		}
		return client(ctx, *dir, *n, *seed, *queues, stdout)
	}
	usage(stderr)
	return fmt.Errorf("unknown command %q", args[0])
}

// parseSize reads a size: digits, then optionally K, M or G.
func parseSize(s string) (int64, error) {
	mul, num := int64(1), s
	for i, suf := range []string{"K", "M", "G"} {
		if strings.HasSuffix(s, suf) {
			mul, num = 1<<(10*(i+1)), strings.TrimSuffix(s, suf)
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n <= 0 || n > (1<<50)/mul {
		return 0, fmt.Errorf("size %q: want bytes, or a number with K, M or G", s)
	}
	return n * mul, nil
}

// serve runs the backend for one session.
func serve(ctx context.Context, dir, file string, size int64, ro bool, queues int, out io.Writer) (err error) {
	flags := os.O_RDWR | os.O_CREATE
	if ro {
		flags = os.O_RDONLY
	}
	img, err := os.OpenFile(file, flags, 0o644)
	if err != nil {
		return err
	}
	defer img.Close()
	st, err := img.Stat()
	if err != nil {
		return err
	}
	if st.Size() == 0 && !ro {
		if err := img.Truncate(size); err != nil {
			return err
		}
	} else {
		size = st.Size()
	}
	if size%512 != 0 {
		return fmt.Errorf("%s: %d bytes, not a multiple of 512", file, size)
	}
	if dir == "" {
		if dir, err = os.MkdirTemp("", "bp"); err != nil {
			return err
		}
	}
	b, err := devpair.OpenBack(dir)
	if err != nil {
		return err
	}
	defer func() {
		fmt.Fprintf(out, "blkpair: leftovers: %s\n", b.Leftovers())
		err = errors.Join(err, b.Close())
	}()
	offer := 0 // one queue: no multi-queue-max-queues, as before
	if queues > 1 {
		offer = queues
	}
	srv, err := blkback.NewServer(blkback.Config{
		Events: b.Events(), Memory: b.Grants(),
		Disk: img, Size: size, ReadOnly: ro,
		Persistent: true, MaxIndirectSegments: 64, MaxRingOrder: 2,
		FlushCache: true, MaxQueues: offer,
	})
	if err != nil {
		return err
	}
	be, err := b.AddDevice(ctx, "vbd", devID, nil)
	if err != nil {
		return err
	}
	sctx, stopServing := context.WithCancel(ctx)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(sctx, be) }()
	fmt.Fprintf(out, "blkpair: serving vbd/%s (%s, %d bytes); connect with:\nblkpair client -dir %s\n", devID, file, size, b.Dir())
	conn, err := b.AcceptGuest(ctx)
	if err == nil {
		err = b.GuestGone(ctx, conn, be)
	}
	stopServing()
	if serr := <-served; serr != nil && !errors.Is(serr, context.Canceled) && err == nil {
		err = fmt.Errorf("serving: %w", serr)
	}
	b.DestroyGuest()
	if serr := img.Sync(); serr != nil && !ro && err == nil {
		err = serr
	}
	ss := srv.Stats()
	fmt.Fprintf(out, "blkpair: %+v\n", ss)
	return err
}

// client runs the frontend for n rounds.
func client(ctx context.Context, dir string, n int, seed uint64, queues int, out io.Writer) (err error) {
	f, err := devpair.OpenFront(ctx, dir)
	if err != nil {
		return err
	}
	defer func() {
		fmt.Fprintf(out, "blkpair: leftovers: %s\n", f.Leftovers())
		err = errors.Join(err, f.Close())
	}()
	fe, err := device.Open(ctx, f.Client, "vbd", devID)
	if err != nil {
		return err
	}
	disk, err := blkfront.Connect(ctx, blkfront.Config{
		Events: f.Events(), Memory: f.Grants(),
		Persistent: true, MaxIndirectSegments: 64, MaxRingOrder: 2,
		MaxQueues: queues,
	}, fe)
	if err == nil {
		wctx, stopWatch := context.WithCancel(ctx)
		pctx, stopPeer := devpair.WithPeer(wctx, f.WatchBackend(wctx, fe))
		err = devpair.Blame(pctx, exercise(pctx, disk, n, seed, out))
		st := disk.Stats()
		for i, q := range st.Queues {
			fmt.Fprintf(out, "blkpair: queue %d: %d requests\n", i, q.Requests)
		}
		stopPeer()
		stopWatch()
	}
	if disk != nil {
		dctx, cancel := context.WithTimeout(context.Background(), closeWait)
		derr := fe.Disconnect(dctx, closeWait)
		cancel()
		cerr := f.Release(disk.Close)
		if err == nil {
			err = errors.Join(derr, cerr)
		}
	}
	return err
}

// exercise runs the rounds on disk until done or ctx ends.
func exercise(ctx context.Context, disk *blkfront.Disk, n int, seed uint64, out io.Writer) error {
	size := disk.Size()
	model := make([]byte, size)
	if _, err := disk.ReadAtContext(ctx, model, 0); err != nil {
		return fmt.Errorf("reading the disk: %w", err)
	}
	fmt.Fprintf(out, "blkpair: %d bytes, sha256 before %x\n", size, sha256.Sum256(model))
	rng := rand.New(rand.NewPCG(seed, 1))
	sectors := size / 512
	buf, back := make([]byte, maxIO), make([]byte, maxIO)
	for i := 0; n == 0 || i < n; i++ {
		off := rng.Int64N(sectors) * 512
		l := min(int64(1+rng.IntN(maxIO/512))*512, size-off)
		w, r := buf[:l], back[:l]
		for j := range w {
			w[j] = byte(rng.Uint32())
		}
		if _, err := disk.WriteAtContext(ctx, w, off); err != nil {
			return fmt.Errorf("round %d: writing %d bytes at %d: %w", i, l, off, err)
		}
		copy(model[off:], w)
		if _, err := disk.ReadAtContext(ctx, r, off); err != nil {
			return fmt.Errorf("round %d: reading %d bytes at %d: %w", i, l, off, err)
		}
		if !bytes.Equal(w, r) {
			return fmt.Errorf("round %d: %d bytes at %d read back differ", i, l, off)
		}
		if i%16 == 15 {
			if err := disk.Flush(ctx); err != nil {
				return fmt.Errorf("round %d: flush: %w", i, err)
			}
		}
		if i == 0 || (i+1)%50 == 0 {
			fmt.Fprintf(out, "blkpair: %d rounds verified\n", i+1)
		}
	}
	if err := disk.Flush(ctx); err != nil {
		return fmt.Errorf("flush: %w", err)
	}
	all := make([]byte, size)
	if _, err := disk.ReadAtContext(ctx, all, 0); err != nil {
		return fmt.Errorf("reading the disk back: %w", err)
	}
	if !bytes.Equal(all, model) {
		return errors.New("the disk differs from what was written")
	}
	fmt.Fprintf(out, "blkpair: sha256 after %x\n", sha256.Sum256(all))
	return nil
}
