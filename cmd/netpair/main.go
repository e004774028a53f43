//go:build !tamago

// Command netpair runs Xen's network split driver between two Linux
// processes, with no Xen: netback in one, netfront in the other, over
// event channels on Unix sockets (evtchn/evunix), grants in shared-memory
// files (gnttab/gntunix) and a xenstore served on a Unix socket
// (xenbus/memstore, spoken to by the real xenbus client); see package
// internal/devpair for the rendezvous directory.
//
// In one terminal, start the backend; it creates a rendezvous directory
// (or uses -dir), prints the command that connects to it, and echoes back
// every frame the frontend sends:
//
//	netpair serve
//	netpair: serving vif/0; connect with:
//	netpair client -dir /tmp/np123
//
// In another, run the frontend: it connects the NIC and sends -n frames
// (0: until interrupted) of sizes cycling through small, page-sized and
// 64 KiB frames (at most -max bytes), each carrying its sequence number,
// length and a CRC-32; it checks that every frame comes back whole and
// in order, and prints its progress and statistics:
//
//	netpair client -dir /tmp/np123 -n 1000
//
// With -queues N on both sides the backend offers N queues and the
// frontend uses them: the frames then belong to 16 flows (IPv4 and TCP
// headers after the sequence number and length), each flow's frames
// must come back in order, and both sides print each queue's counts.
//
// The backend checks every frame's CRC too. Each side serves one
// session: when the frontend has closed the device (or either side
// dies: the other notices through the store, reports the error and exits
// with status 1), both print "leftovers: none" if they released every
// grant, mapping and event channel, and the rendezvous directory is
// removed by whichever leaves last.
package main

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/gozen-dev/gozen/drivers/netback"
	"github.com/gozen-dev/gozen/drivers/netfront"
	"github.com/gozen-dev/gozen/internal/devpair"
	"github.com/gozen-dev/gozen/xenbus/device"
)

// The device.
const (
	devID = "0"
	mac   = "00:16:3e:00:00:01"
)

// closeWait bounds each wait of the close handshake.
const closeWait = 5 * time.Second

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "netpair:", err)
		os.Exit(1)
	}
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: netpair serve [-dir DIR] [-queues N]")
	fmt.Fprintln(w, "       netpair client -dir DIR [-n FRAMES] [-max BYTES] [-seed N] [-queues N]")
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		usage(stderr)
		return errors.New("want serve or client")
	}
	fs := flag.NewFlagSet("netpair "+args[0], flag.ContinueOnError)
	fs.SetOutput(stderr)
	dir := fs.String("dir", "", "rendezvous directory (serve: created if empty)")
	queues := fs.Int("queues", 1, "serve: queues offered (multi-queue-max-queues; 1 offers none); client: most queues used")
	switch args[0] {
	case "serve":
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		if *queues < 1 || *queues > maxQueues {
			return fmt.Errorf("serve: -queues %d: want 1 to %d", *queues, maxQueues)
		}
		return serve(ctx, *dir, *queues, stdout)
	case "client":
		n := fs.Int("n", 1000, "frames to send (0: until interrupted)")
		max := fs.Int("max", netfront.MaxFrameSize, "largest frame, in bytes")
		seed := fs.Uint64("seed", 1, "seed of the frame sizes and contents")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		if *dir == "" {
			return errors.New("client: -dir is required")
		}
		if *max < minFrame || *max > netfront.MaxFrameSize {
			return fmt.Errorf("client: -max %d: want %d to %d", *max, minFrame, netfront.MaxFrameSize)
		}
		if *queues < 1 || *queues > maxQueues {
			return fmt.Errorf("client: -queues %d: want 1 to %d", *queues, maxQueues)
		}
		return client(ctx, *dir, *n, *max, *seed, *queues, stdout)
	}
	usage(stderr)
	return fmt.Errorf("unknown command %q", args[0])
}

// serve runs the backend for one session.
func serve(ctx context.Context, dir string, queues int, out io.Writer) (err error) {
	if dir == "" {
		if dir, err = os.MkdirTemp("", "np"); err != nil {
			return err
		}
	}
	b, err := devpair.OpenBack(dir)
	if err != nil {
		return err
	}
	defer func() {
		fmt.Fprintf(out, "netpair: leftovers: %s\n", b.Leftovers())
		err = errors.Join(err, b.Close())
	}()
	be, err := b.AddDevice(ctx, "vif", devID, map[string]string{"mac": mac})
	if err != nil {
		return err
	}
	offer := 0 // one queue: no multi-queue-max-queues
	if queues > 1 {
		offer = queues
	}
	echo := make(chan []byte, 64)
	ectx, stopEcho := context.WithCancel(ctx)
	defer stopEcho()
	var bad, frames int
	vif, err := netback.Serve(ctx, be, netback.Options{
		Events: b.Events(), Grants: b.Grants(), SG: true,
		MaxQueues: offer,
		OnFrame: func(f netback.Frame) {
			frames++
			if _, _, ferr := checkFrame(f.Data); ferr != nil {
				bad++
				return
			}
			select {
			case echo <- append([]byte(nil), f.Data...):
			case <-ectx.Done():
			}
		},
	})
	if err != nil {
		return err
	}
	echoed := make(chan error, 1)
	go func() {
		for {
			select {
			case d := <-echo:
				if err := vif.Send(ectx, netback.Frame{Data: d}); err != nil {
					echoed <- err
					return
				}
			case <-ectx.Done():
				echoed <- nil
				return
			}
		}
	}()
	fmt.Fprintf(out, "netpair: serving vif/%s; connect with:\nnetpair client -dir %s\n", devID, b.Dir())
	conn, err := b.AcceptGuest(ctx)
	if err == nil {
		err = b.GuestGone(ctx, conn, be)
	}
	stopEcho()
	if eerr := <-echoed; eerr != nil && err == nil && ctx.Err() == nil {
		err = fmt.Errorf("echoing: %w", eerr)
	}
	vif.Close()
	b.DestroyGuest()
	st := vif.Stats()
	fmt.Fprintf(out, "netpair: %d connections, %d frames received (%d bad), %d sent\n", st.Connections, frames, bad, st.RXFrames)
	for i := range st.QueueTXFrames {
		fmt.Fprintf(out, "netpair: queue %d: %d frames received, %d sent\n", i, st.QueueTXFrames[i], st.QueueRXFrames[i])
	}
	for _, e := range vif.Errors() {
		fmt.Fprintf(out, "netpair: backend error: %v\n", e)
	}
	if err == nil && bad > 0 {
		err = fmt.Errorf("%d frames failed their checksum", bad)
	}
	return err
}

// client runs the frontend: it sends n frames and checks their echoes.
func client(ctx context.Context, dir string, n, max int, seed uint64, queues int, out io.Writer) (err error) {
	f, err := devpair.OpenFront(ctx, dir)
	if err != nil {
		return err
	}
	defer func() {
		fmt.Fprintf(out, "netpair: leftovers: %s\n", f.Leftovers())
		err = errors.Join(err, f.Close())
	}()
	fe, err := device.Open(ctx, f.Client, "vif", devID)
	if err != nil {
		return err
	}
	nic, err := netfront.Connect(ctx, fe, netfront.Config{Events: f.Events(), Grants: f.Grants(), MaxQueues: queues})
	if err != nil {
		return err
	}
	wctx, stopWatch := context.WithCancel(ctx)
	pctx, stopPeer := devpair.WithPeer(wctx, f.WatchBackend(wctx, fe))
	err = devpair.Blame(pctx, exchange(pctx, nic, n, max, seed, out))
	stopPeer()
	stopWatch()
	dctx, cancel := context.WithTimeout(context.Background(), closeWait)
	derr := fe.Disconnect(dctx, closeWait)
	cancel()
	cerr := f.Release(nic.Close)
	if err == nil {
		err = errors.Join(derr, cerr)
	}
	st := nic.Stats()
	fmt.Fprintf(out, "netpair: sent %d frames (%d bytes), received %d (%d bytes)\n", st.TXFrames, st.TXBytes, st.RXFrames, st.RXBytes)
	if len(st.Queues) > 1 {
		for i, q := range st.Queues {
			fmt.Fprintf(out, "netpair: queue %d: sent %d frames, received %d\n", i, q.TXFrames, q.RXFrames)
		}
	}
	return err
}

// exchange sends the frames from one goroutine and receives their echoes
// in this one, until n came back (forever if n is 0) or ctx ends. With
// several queues the frames belong to flows (frame i to flow i mod
// flows, see makeFrame), which the queues may reorder among themselves:
// each flow's frames must come back in order, checked by their CRC.
func exchange(ctx context.Context, nic *netfront.NIC, n, max int, seed uint64, out io.Writer) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	mq := nic.Features().Queues > 1
	sent := make(chan error, 1)
	go func() {
		rng := rand.New(rand.NewPCG(seed, 0))
		var buf []byte
		for i := 0; n == 0 || i < n; i++ {
			buf = makeFrame(buf, uint32(i), frameSize(rng, i, max), rng, mq)
			if err := nic.Send(ctx, netfront.Frame{Data: buf}); err != nil {
				sent <- fmt.Errorf("sending frame %d: %w", i, err)
				cancel(err)
				return
			}
		}
		sent <- nil
	}()
	rng := rand.New(rand.NewPCG(seed, 0))
	got := 0
	var want []byte
	var next [flows]uint32 // by flow, the next frame expected
	for i := range next {
		next[i] = uint32(i)
	}
	for n == 0 || got < n {
		_, err := nic.Receive(ctx, 0, func(f netfront.Frame) error {
			seq, size, err := checkFrame(f.Data)
			switch {
			case err != nil:
				return fmt.Errorf("frame %d: %w", got, err)
			case mq:
				if seq != next[seq%flows] {
					return fmt.Errorf("flow %d: got frame %d, want %d", seq%flows, seq, next[seq%flows])
				}
				next[seq%flows] += flows
			default:
				want = makeFrame(want, uint32(got), frameSize(rng, got, max), rng, false)
				if seq != uint32(got) || size != len(want) || string(f.Data) != string(want) {
					return fmt.Errorf("frame %d: got frame %d of %d bytes, want %d bytes", got, seq, size, len(want))
				}
			}
			got++
			if got == 1 || got%100 == 0 {
				fmt.Fprintf(out, "netpair: %d frames echoed\n", got)
			}
			return nil
		})
		if err != nil {
			if c := context.Cause(ctx); c != nil && !errors.Is(c, context.Canceled) {
				err = c // sending failed first
			}
			return fmt.Errorf("receiving: %w", err)
		}
	}
	return <-sent
}

// Frame layout: sequence number and length (little-endian uint32), the
// payload, then the CRC-32 (IEEE) of everything before it.
const minFrame = 12

// frameSize returns the size of frame i: a cycle of edge sizes, then
// random ones.
func frameSize(rng *rand.Rand, i, max int) int {
	edges := []int{minFrame, 60, 1514, 4095, 4096, 4097, 9000, 32768, 65535}
	s := edges[i%len(edges)]
	if i%(2*len(edges)) >= len(edges) {
		s = minFrame + rng.IntN(max-minFrame+1)
	}
	return min(s, max)
}

// flows is the number of flows of the frames with several queues.
const flows = 16

// maxQueues bounds -queues.
const maxQueues = 64

// minFlowFrame is the smallest frame of a flow: up to the TCP ports and
// the CRC.
const minFlowFrame = 38 + 4

// makeFrame builds frame seq of size bytes into buf's storage. With flow
// set it carries, after the sequence number and length, an IPv4 EtherType
// and header and TCP ports that put it in flow seq mod flows (and is at
// least minFlowFrame bytes), so that the NICs' flow hash keeps a flow on
// one queue.
func makeFrame(buf []byte, seq uint32, size int, rng *rand.Rand, flow bool) []byte {
	if flow {
		size = max(size, minFlowFrame)
	}
	if cap(buf) < size {
		buf = make([]byte, size)
	}
	buf = buf[:size]
	binary.LittleEndian.PutUint32(buf[0:], seq)
	binary.LittleEndian.PutUint32(buf[4:], uint32(size))
	for i := 8; i < size-4; i++ {
		buf[i] = byte(rng.Uint32())
	}
	if flow {
		copy(buf[12:], []byte{0x08, 0x00, 0x45, 0, 0, 0, 0, 0, 0, 0, 64, 6, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2})
		binary.BigEndian.PutUint16(buf[34:], 10000+uint16(seq%flows))
		binary.BigEndian.PutUint16(buf[36:], 80)
	}
	binary.LittleEndian.PutUint32(buf[size-4:], crc32.ChecksumIEEE(buf[:size-4]))
	return buf
}

// checkFrame checks a frame's length and CRC and returns its sequence
// number and size.
func checkFrame(b []byte) (seq uint32, size int, err error) {
	if len(b) < minFrame {
		return 0, len(b), fmt.Errorf("frame of %d bytes", len(b))
	}
	seq, n := binary.LittleEndian.Uint32(b[0:]), binary.LittleEndian.Uint32(b[4:])
	if uint64(n) != uint64(len(b)) {
		return seq, len(b), fmt.Errorf("frame %d: %d bytes, header says %d", seq, len(b), n)
	}
	if c := binary.LittleEndian.Uint32(b[len(b)-4:]); c != crc32.ChecksumIEEE(b[:len(b)-4]) {
		return seq, len(b), fmt.Errorf("frame %d: bad CRC", seq)
	}
	return seq, len(b), nil
}
