//go:build linux

package evlinux

import (
	"context"
	"errors"
	"fmt"
	"os"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/gozen-dev/gozen/domid"
	"github.com/gozen-dev/gozen/evtchn"
	"github.com/gozen-dev/gozen/evtchn/evtchntest"
)

// TestIoctlNumbers checks the request numbers against the values Linux's
// include/uapi/xen/evtchn.h yields (_IOC(_IOC_NONE, 'E', nr, size)).
func TestIoctlNumbers(t *testing.T) {
	for _, c := range []struct {
		name string
		got  uintptr
		want uintptr
	}{
		{"IOCTL_EVTCHN_BIND_INTERDOMAIN", ioctlBindInterdomain, 0x00084501},
		{"IOCTL_EVTCHN_BIND_UNBOUND_PORT", ioctlBindUnboundPort, 0x00044502},
		{"IOCTL_EVTCHN_UNBIND", ioctlUnbind, 0x00044503},
		{"IOCTL_EVTCHN_NOTIFY", ioctlNotify, 0x00044504},
		{"IOCTL_EVTCHN_RESET", ioctlReset, 0x00004505},
	} {
		if c.got != c.want {
			t.Errorf("%s = %#x, want %#x", c.name, c.got, c.want)
		}
	}
	for _, c := range []struct {
		name string
		size uintptr
		want uintptr
	}{
		{"struct ioctl_evtchn_bind_interdomain", unsafe.Sizeof(bindInterdomainArg{}), 8},
		{"struct ioctl_evtchn_bind_unbound_port", unsafe.Sizeof(bindUnboundArg{}), 4},
		{"struct ioctl_evtchn_notify", unsafe.Sizeof(portArg{}), 4},
	} {
		if c.size != c.want {
			t.Errorf("sizeof(%s) = %d, want %d", c.name, c.size, c.want)
		}
	}
}

// fakeDomain opens an Events over a fake device of domain id.
func fakeDomain(t *testing.T, x *fakeXen, id domid.ID) (evtchntest.Domain, *Events, *fakeDev) {
	d := x.dev(id)
	e := newEvents(d)
	t.Cleanup(func() { e.Shutdown() })
	leftovers := func() string {
		if n, k := e.Stats().Ports, d.nports(); n != 0 || k != 0 {
			return fmt.Sprintf("%d ports in the service, %d in the kernel", n, k)
		}
		return ""
	}
	return evtchntest.Domain{Svc: e, ID: id, Leftovers: leftovers}, e, d
}

// TestConformance runs the evtchn suite over the fake kernel device: the
// reader's dispatch, masking and unmasking, and the ioctl arguments.
func TestConformance(t *testing.T) {
	evtchntest.Run(t, func(t *testing.T) (a, b evtchntest.Domain) {
		x := newFakeXen()
		a, _, _ = fakeDomain(t, x, 1)
		b, _, _ = fakeDomain(t, x, 2)
		return a, b
	})
}

// pair binds a port of a to a port of b.
func pair(t *testing.T, a, b *Events, ida, idb domid.ID) (pa, pb evtchn.Port) {
	t.Helper()
	pa, err := a.AllocUnbound(idb)
	if err != nil {
		t.Fatal(err)
	}
	pb, err = b.BindInterdomain(ida, pa)
	if err != nil {
		t.Fatal(err)
	}
	return pa, pb
}

// TestOverflow: after EFBIG the queue is reset and every bound port
// counts a notification, then works as before.
func TestOverflow(t *testing.T) {
	x := newFakeXen()
	_, a, da := fakeDomain(t, x, 1)
	_, b, _ := fakeDomain(t, x, 2)
	pa1, pb1 := pair(t, a, b, 1, 2)
	pa2, _ := pair(t, a, b, 1, 2)
	x.mu.Lock()
	da.efbig = true
	da.cond.Broadcast()
	x.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, p := range []evtchn.Port{pa1, pa2} {
		if g, err := a.Wait(ctx, p, 0); err != nil || g != 1 {
			t.Fatalf("Wait(%d) after overflow = %d, %v; want 1", p, g, err)
		}
	}
	if a.Overflows.Load() != 1 || da.resets != 1 {
		t.Errorf("overflows %d, resets %d; want 1, 1", a.Overflows.Load(), da.resets)
	}
	if err := b.Notify(pb1); err != nil {
		t.Fatal(err)
	}
	if g, err := a.Wait(ctx, pa1, 1); err != nil || g != 2 {
		t.Fatalf("Wait after a notification = %d, %v; want 2", g, err)
	}
}

// TestDeviceFailure: a failing device wakes every waiter with ErrClosed
// and the cause; Close still releases the ports.
func TestDeviceFailure(t *testing.T) {
	x := newFakeXen()
	_, a, da := fakeDomain(t, x, 1)
	p, err := a.AllocUnbound(2)
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() {
		_, err := a.Wait(context.Background(), p, 0)
		errc <- err
	}()
	x.mu.Lock()
	da.readErr = unix.EIO
	da.cond.Broadcast()
	x.mu.Unlock()
	select {
	case err := <-errc:
		if !errors.Is(err, evtchn.ErrClosed) || !errors.Is(err, unix.EIO) {
			t.Errorf("Wait on a failed device: %v, want ErrClosed and EIO", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Wait not woken by the device failure")
	}
	if !errors.Is(a.Err(), unix.EIO) {
		t.Errorf("Err() = %v, want EIO", a.Err())
	}
	if err := a.Close(p); err != nil {
		t.Errorf("Close after failure: %v", err)
	}
	if a.Stats().Ports != 0 || da.nports() != 0 {
		t.Errorf("leftovers: %d ports, %d in the kernel", a.Stats().Ports, da.nports())
	}
}

// TestShutdown unbinds what is left and makes later calls fail.
func TestShutdown(t *testing.T) {
	x := newFakeXen()
	da := x.dev(1)
	a := newEvents(da)
	p, err := a.AllocUnbound(2)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Shutdown(); err != nil {
		t.Fatal(err)
	}
	if da.nports() != 0 {
		t.Errorf("%d ports left in the kernel", da.nports())
	}
	if _, err := a.Wait(context.Background(), p, 0); !errors.Is(err, evtchn.ErrBadPort) {
		t.Errorf("Wait after Shutdown: %v, want ErrBadPort", err)
	}
	if _, err := a.AllocUnbound(2); !errors.Is(err, evtchn.ErrClosed) {
		t.Errorf("AllocUnbound after Shutdown: %v, want ErrClosed", err)
	}
	if err := a.Shutdown(); !errors.Is(err, evtchn.ErrClosed) {
		t.Errorf("second Shutdown: %v, want ErrClosed", err)
	}
}

// TestErrorMapping maps the device's errnos to the portable errors.
func TestErrorMapping(t *testing.T) {
	for _, c := range []struct {
		errno error
		want  error
	}{
		{unix.ENOSPC, evtchn.ErrNoSpace},
		{unix.EMFILE, evtchn.ErrNoSpace},
		{unix.ESRCH, evtchn.ErrNoPeer},
		{unix.EINVAL, evtchn.ErrNoPeer},
		{unix.EPERM, evtchn.ErrNoPeer},
		{unix.EACCES, evtchn.ErrNoPeer},
		{unix.ENOTCONN, evtchn.ErrBadPort},
	} {
		err := mapErr("op", c.errno)
		if !errors.Is(err, c.want) || !errors.Is(err, c.errno) {
			t.Errorf("mapErr(%v) = %v, want %v wrapping the errno", c.errno, err, c.want)
		}
	}
	if err := mapErr("op", unix.EIO); errors.Is(err, evtchn.ErrNoPeer) || !errors.Is(err, unix.EIO) {
		t.Errorf("mapErr(EIO) = %v", err)
	}
}

// TestBadKernelPorts: ports the reader gets that are not ours are
// dropped, not delivered.
func TestBadKernelPorts(t *testing.T) {
	x := newFakeXen()
	_, a, da := fakeDomain(t, x, 1)
	x.mu.Lock()
	da.queue = append(da.queue, 0, 77, MaxPorts, ^uint32(0))
	da.cond.Broadcast()
	x.mu.Unlock()
	deadline := time.Now().Add(10 * time.Second)
	for a.Dropped() < 4 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if a.Dropped() != 4 {
		t.Errorf("dropped %d, want 4", a.Dropped())
	}
}

// TestDevice runs the suite's loopback over the real /dev/xen/evtchn.
func TestDevice(t *testing.T) {
	if _, err := os.Stat(DevicePath); err != nil {
		t.Skipf("%s absent (not a Xen domain): %v", DevicePath, err)
	}
	e, err := Open()
	if err != nil {
		t.Fatal(err)
	}
	defer e.Shutdown()
	p, err := e.AllocUnbound(domid.Self)
	if err != nil {
		t.Fatal(err)
	}
	q, err := e.BindInterdomain(domid.Self, p)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Notify(q); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if g, err := e.Wait(ctx, p, 0); err != nil || g < 1 {
		t.Fatalf("Wait = %d, %v", g, err)
	}
	for _, port := range []evtchn.Port{p, q} {
		if err := e.Close(port); err != nil {
			t.Error(err)
		}
	}
}
