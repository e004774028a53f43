package evunix_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"testing"
	"time"

	"github.com/gozen-dev/gozen/domid"
	"github.com/gozen-dev/gozen/evtchn"
	"github.com/gozen-dev/gozen/evtchn/evtchntest"
	"github.com/gozen-dev/gozen/evtchn/evunix"
)

// open opens domain id in dir, closing it when the test ends.
func open(t testing.TB, dir string, id domid.ID) evtchntest.Domain {
	d, err := evunix.Open(dir, id)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Shutdown() })
	return evtchntest.Domain{Svc: d, ID: id, Leftovers: func() string {
		if n := d.Stats().Ports; n != 0 {
			return fmt.Sprintf("%d ports open", n)
		}
		return ""
	}}
}

func tempDir(t testing.TB) string {
	dir, err := os.MkdirTemp("", "gz")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// TestConformance runs the suite with both domains in this process, over
// real sockets.
func TestConformance(t *testing.T) {
	evtchntest.Run(t, func(t *testing.T) (a, b evtchntest.Domain) {
		dir := tempDir(t)
		return open(t, dir, 1), open(t, dir, 2)
	})
}

// TestConformanceProcesses runs the suite with domain B in a child process.
func TestConformanceProcesses(t *testing.T) {
	evtchntest.RunProcesses(t, func(t *testing.T, dir string, id domid.ID) evtchntest.Domain {
		return open(t, dir, id)
	})
}

func BenchmarkRoundTrip(b *testing.B) {
	dir := tempDir(b)
	evtchntest.BenchmarkRoundTrip(b, open(b, dir, 1), open(b, dir, 2))
}

// rawPeer connects to domain to, to speak the wire protocol by hand.
func rawPeer(t *testing.T, dir string, to domid.ID) net.Conn {
	c, err := net.Dial("unix", evunix.SocketPath(dir, to))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func msg(op uint8, from domid.ID, dst, src evtchn.Port) []byte {
	b := make([]byte, 20)
	binary.LittleEndian.PutUint32(b[0:], 0x76457a47)
	b[4] = op
	binary.LittleEndian.PutUint16(b[6:], uint16(from))
	binary.LittleEndian.PutUint32(b[8:], uint32(dst))
	binary.LittleEndian.PutUint32(b[12:], uint32(src))
	return b
}

// TestUntrustedPeer sends malformed and spoofed messages: they must be
// dropped (or end the connection) without harm.
func TestUntrustedPeer(t *testing.T) {
	dir := tempDir(t)
	a := open(t, dir, 1)
	b := open(t, dir, 2)
	pa, err := a.Svc.AllocUnbound(2)
	if err != nil {
		t.Fatal(err)
	}
	pb, err := b.Svc.BindInterdomain(1, pa)
	if err != nil {
		t.Fatal(err)
	}
	// Connections that must be cut: no hello, garbage, spoofed sender.
	garbage := [][]byte{
		[]byte("hello, world, this is not a message"),
		append(msg(1, 2, 0, 0), msg(5, 3, pa, pb)...), // from changes
		append(msg(1, 2, 0, 0), msg(1, 2, 0, 0)...),   // second hello
		msg(5, 2, pa, pb),                // no hello
		append(msg(1, 2, 0, 0), 1, 2, 3), // truncated
	}
	for _, g := range garbage {
		c := rawPeer(t, dir, 1)
		c.Write(g)
		c.Close()
	}
	// Well-formed messages that do not match the port table are dropped.
	c := rawPeer(t, dir, 1)
	c.Write(msg(1, 2, 0, 0))
	for _, m := range [][]byte{
		msg(5, 2, pa, pb+1),  // wrong source port
		msg(5, 2, pa+50, pb), // unknown port
		msg(5, 2, 0, pb),     // port 0
		msg(5, 2, 1<<31, pb), // huge port
		msg(3, 2, pa, pb),    // unsolicited bind reply
		msg(2, 2, pa, pb+1),  // bind to a bound port
		msg(6, 2, pa, pb+1),  // close, wrong source
	} {
		c.Write(m)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if g, err := a.Svc.Wait(ctx, pa, 0); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait after bogus messages = %d, %v; want no notification", g, err)
	}
	// The genuine peer still gets through, and so does a correct raw one.
	if err := b.Svc.Notify(pb); err != nil {
		t.Fatal(err)
	}
	ctx2, cancel2 := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel2()
	if g, err := a.Svc.Wait(ctx2, pa, 0); err != nil || g != 1 {
		t.Fatalf("Wait = %d, %v; want 1", g, err)
	}
	c.Write(msg(5, 2, pa, pb))
	if g, err := a.Svc.Wait(ctx2, pa, 1); err != nil || g != 2 {
		t.Fatalf("Wait = %d, %v; want 2", g, err)
	}
	a.Svc.Close(pa)
	b.Svc.Close(pb)
}

func TestOpen(t *testing.T) {
	dir := tempDir(t)
	d, err := evunix.Open(dir, 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := evunix.Open(dir, 1); err == nil {
		t.Errorf("second Open of a live domain succeeded")
	}
	if err := d.Shutdown(); err != nil {
		t.Fatal(err)
	}
	if err := d.Shutdown(); !errors.Is(err, evtchn.ErrClosed) {
		t.Errorf("second Shutdown: err = %v, want ErrClosed", err)
	}
	// A stale socket (nobody listening) is replaced.
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: evunix.SocketPath(dir, 3), Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	d3, err := evunix.Open(dir, 3)
	if err != nil {
		t.Fatalf("Open over a stale socket: %v", err)
	}
	d3.Shutdown()
	if _, err := evunix.Open(dir, domid.Self); err == nil {
		t.Errorf("Open(DomIDSelf) succeeded")
	}
}

// TestShutdownWakesWaiters checks that Shutdown closes ports and tells the
// peer.
func TestShutdownWakesWaiters(t *testing.T) {
	dir := tempDir(t)
	a, err := evunix.Open(dir, 1)
	if err != nil {
		t.Fatal(err)
	}
	b := open(t, dir, 2)
	pa, _ := a.AllocUnbound(2)
	pb, err := b.Svc.BindInterdomain(1, pa)
	if err != nil {
		t.Fatal(err)
	}
	errs := make(chan error, 2)
	go func() { _, err := a.Wait(context.Background(), pa, 0); errs <- err }()
	go func() { _, err := b.Svc.Wait(context.Background(), pb, 0); errs <- err }()
	time.Sleep(20 * time.Millisecond)
	a.Shutdown()
	for range 2 {
		select {
		case err := <-errs:
			if !errors.Is(err, evtchn.ErrClosed) {
				t.Errorf("waiter: err = %v, want ErrClosed", err)
			}
		case <-time.After(5 * time.Second):
			t.Fatal("waiter not woken by Shutdown")
		}
	}
	b.Svc.Close(pb)
}

func BenchmarkRoundTripProcesses(b *testing.B) {
	evtchntest.BenchmarkRoundTripProcesses(b, open)
}
