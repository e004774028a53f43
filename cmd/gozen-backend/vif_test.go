//go:build linux

package main

import (
	"bytes"
	"context"
	"errors"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gozen-dev/gozen/drivers/netfront"
	"github.com/gozen-dev/gozen/netstack"
	"github.com/gozen-dev/gozen/xenbus/device"
)

// fakeTap returns the two ends of a SOCK_SEQPACKET socket pair: like a
// TAP device opened with IFF_NO_PI, each read returns one whole frame and
// each write sends one. Both are non-blocking in the runtime's poller, so
// Close interrupts a Read.
func fakeTap(t *testing.T) (tap, host *os.File) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	must(t, err)
	tap, host = os.NewFile(uintptr(fds[0]), "tap"), os.NewFile(uintptr(fds[1]), "host")
	t.Cleanup(func() { tap.Close(); host.Close() })
	return tap, host
}

// readFrame reads one frame from the host end, with a deadline.
func readFrame(t *testing.T, host *os.File) []byte {
	t.Helper()
	host.SetReadDeadline(time.Now().Add(20 * time.Second))
	buf := make([]byte, maxTapFrame)
	n, err := host.Read(buf)
	must(t, err)
	return buf[:n]
}

// TestVIF serves a vif to a guest running netfront on a device.Bus and
// moves frames both ways through a fake TAP device; a checksum-blank
// frame from the guest reaches the TAP with its checksum completed. Then
// the command is interrupted: the guest's bus closes the device, the
// command removes it and leaves nothing behind.
func TestVIF(t *testing.T) {
	r := newRig(t)
	tap, host := fakeTap(t)
	mac, _ := net.ParseMAC("00:16:3e:00:00:07")
	ctx, cancel := context.WithCancelCause(r.ctx)
	c := vifConfig{Dom: guestDom, MAC: mac, ID: 0, Tap: "gzvif7.0", BackendClass: "vif"}
	done := make(chan error, 1)
	go func() { done <- runVIF(ctx, r.env, c, tap, "gzvif7.0") }()
	r.waitNode("/local/domain/7/device/vif/0/state")

	gev, _ := r.ev.Domain(guestDom)
	ggn, _ := r.gn.Domain(guestDom)
	bus := device.NewBus(r.guest)
	must(t, bus.Register(netfront.Driver{Config: netfront.Config{Events: gev, Grants: ggn}}))
	must(t, bus.Start(r.ctx))
	defer bus.Close()
	r.waitOutput("connected: mac 00:16:3e:00:00:07, tap gzvif7.0")
	nic, ok := netfront.FromDevice(bus.Devices()[0])
	if !ok {
		t.Fatal("no NIC")
	}
	if f := nic.Features(); f.SG || f.GSOTCPv4 || f.GSOTCPv6 {
		t.Errorf("offloads negotiated: %+v", f)
	}

	// Guest to TAP: checksum-blank frames get their checksum.
	for _, s := range []frameSpec{{proto: protoUDP, l4len: 8 + 300}, {v6: true, proto: protoTCP, l4len: 20 + 1000}} {
		frame := build(s)
		must(t, nic.Send(r.ctx, netfront.Frame{Data: frame, Flags: netfront.CsumBlank}))
		got := readFrame(t, host)
		if len(got) != len(frame) {
			t.Fatalf("tap got %d bytes, want %d", len(got), len(frame))
		}
		validL4(t, got, s)
	}
	// A plain frame crosses unchanged.
	plain := bytes.Repeat([]byte{0xab}, 60)
	must(t, nic.Send(r.ctx, netfront.Frame{Data: plain}))
	if got := readFrame(t, host); !bytes.Equal(got, plain) {
		t.Errorf("plain frame changed")
	}

	// TAP to guest: frames keep their boundaries.
	sent := [][]byte{bytes.Repeat([]byte{1}, 60), bytes.Repeat([]byte{2}, 1514), bytes.Repeat([]byte{3}, 61)}
	for _, f := range sent {
		if _, err := host.Write(f); err != nil {
			t.Fatal(err)
		}
	}
	var got [][]byte
	for len(got) < len(sent) {
		_, err := nic.Receive(r.ctx, 8, func(f netfront.Frame) error {
			got = append(got, bytes.Clone(f.Data))
			return nil
		})
		must(t, err)
	}
	for i := range sent {
		if !bytes.Equal(got[i], sent[i]) {
			t.Errorf("frame %d: %d bytes, want %d", i, len(got[i]), len(sent[i]))
		}
	}

	cancel(errors.New("got terminated"))
	if err := <-done; err != nil {
		t.Fatalf("runVIF: %v", err)
	}
	out := r.out.String()
	for _, want := range []string{"stopping: got terminated", "closed: backend Closed, frontend Closed", "removed",
		"stats: 1 connections, 3 frames from the guest, 3 to it", "tap: 3 written, 3 read, 2 checksums completed", "leftovers: none"} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in the output:\n%s", want, out)
		}
	}
	must(t, bus.Close())
	r.checkClean()
}

// fakeNIC is the guest's side of a tapLink in a test: frames to receive
// come from in, frames sent go to out.
type fakeNIC struct {
	in  chan netstack.Frame
	mu  sync.Mutex
	out [][]byte
}

func (n *fakeNIC) Receive(ctx context.Context, frames []netstack.Frame) (int, error) {
	select {
	case f, ok := <-n.in:
		if !ok {
			return 0, netstack.ErrNICClosed
		}
		frames[0] = f
		return 1, nil
	case <-ctx.Done():
		return 0, ctx.Err()
	}
}

func (n *fakeNIC) Send(ctx context.Context, frames ...netstack.Frame) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, f := range frames {
		n.out = append(n.out, bytes.Clone(f.Data[0]))
	}
	return nil
}

// TestTapLinkFraming runs the link's two pumps over a fake TAP device:
// frames keep their boundaries, checksum-blank frames are completed, GSO
// frames, unfixable checksum-blank frames and frames larger than a page
// are dropped and counted, and closing the TAP ends the reading pump.
func TestTapLinkFraming(t *testing.T) {
	tap, host := fakeTap(t)
	nic := &fakeNIC{in: make(chan netstack.Frame)}
	l := &tapLink{nic: nic, tap: tap}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	errs := make(chan error, 2)
	go func() { errs <- l.guestToTap(ctx) }()
	go func() { errs <- l.tapToGuest(ctx) }()

	udp := frameSpec{proto: protoUDP, l4len: 8 + 20}
	for _, f := range []netstack.Frame{
		{Data: [][]byte{build(udp)}, Flags: netstack.ChecksumBlank},
		{Data: [][]byte{build(frameSpec{proto: 1, l4len: 20})}, Flags: netstack.ChecksumBlank},       // dropped
		{Data: [][]byte{make([]byte, 3000)}, GSO: netstack.GSO{Type: netstack.GSOTCPv4, Size: 1448}}, // dropped
		{Data: [][]byte{[]byte("a small frame")}},
	} {
		nic.in <- f
	}
	validL4(t, readFrame(t, host), udp)
	if got := readFrame(t, host); string(got) != "a small frame" {
		t.Errorf("second frame %q", got)
	}

	for _, f := range [][]byte{[]byte("one"), make([]byte, maxGuestFrame+1), []byte("three")} {
		if _, err := host.Write(f); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for l.FromTap.Load() < 2 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	nic.mu.Lock()
	if len(nic.out) != 2 || string(nic.out[0]) != "one" || string(nic.out[1]) != "three" {
		t.Errorf("the guest got %q", nic.out)
	}
	nic.mu.Unlock()
	if l.ToTap.Load() != 2 || l.Filled.Load() != 1 || l.DroppedBadCsum.Load() != 1 || l.DroppedGSO.Load() != 1 || l.DroppedBig.Load() != 1 {
		t.Errorf("counters: to tap %d, filled %d, bad csum %d, gso %d, big %d",
			l.ToTap.Load(), l.Filled.Load(), l.DroppedBadCsum.Load(), l.DroppedGSO.Load(), l.DroppedBig.Load())
	}
	tap.Close()
	if err := <-errs; !errors.Is(err, os.ErrClosed) {
		t.Errorf("tapToGuest after Close: %v", err)
	}
	close(nic.in)
	if err := <-errs; !errors.Is(err, netstack.ErrNICClosed) {
		t.Errorf("guestToTap after the NIC closed: %v", err)
	}
}
