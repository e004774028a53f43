//go:build linux

// Package evlinux implements [evtchn.Events] in a Linux domain (dom0 or a
// domU) through the kernel's event-channel device, /dev/xen/evtchn, so that
// Gozen's drivers run as ordinary Linux programs.
//
// Each [Events] holds one open device. Ports are bound with the device's
// ioctls (IOCTL_EVTCHN_BIND_UNBOUND_PORT, IOCTL_EVTCHN_BIND_INTERDOMAIN),
// notified with IOCTL_EVTCHN_NOTIFY and unbound with IOCTL_EVTCHN_UNBIND.
// One reader goroutine reads pending ports from the device (4-byte port
// numbers, in the host's byte order), counts each in the port's
// generation (package evtchn/evtable, shared with the guest's evxen) and
// writes the ports back, which unmasks them: the kernel masks a port when
// it queues it, so an event arriving meanwhile stays pending in Xen and is
// queued again once unmasked; none is lost, several may be coalesced.
//
// If the kernel's queue overflows (read fails with EFBIG), the reader
// resets the queue (IOCTL_EVTCHN_RESET), counts one notification on every
// bound port (a spurious wake-up, which drivers tolerate: they check their
// ring before waiting) and unmasks them all.
//
// Closing the device (Shutdown) unbinds whatever is left, as the kernel
// does for a process that exits.
package evlinux

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/gozen-dev/gozen/domid"
	"github.com/gozen-dev/gozen/evtchn"
	"github.com/gozen-dev/gozen/evtchn/evtable"
	"github.com/gozen-dev/gozen/internal/xenioctl"
)

// DevicePath is the kernel's event-channel device.
const DevicePath = "/dev/xen/evtchn"

// MaxPorts bounds the port numbers accepted from the kernel: the FIFO ABI
// has 2^17 ports (the 2-level ABI 4096).
const MaxPorts = 1 << 17

// readBatch is how many ports one read takes at most.
const readBatch = 256

// device is what Events needs of /dev/xen/evtchn: reads of pending ports,
// writes that unmask, and ioctls. Tests stand in a fake for it.
type device interface {
	io.ReadWriteCloser
	// ioctl performs request req with argument arg and returns the
	// kernel's non-negative result.
	ioctl(req uintptr, arg unsafe.Pointer) (uintptr, error)
}

// Events is the event-channel service of this Linux domain, over one open
// /dev/xen/evtchn. It implements [evtchn.Events]; its methods are safe for
// concurrent use.
type Events struct {
	dev  device
	tab  *evtable.Table
	quit chan struct{} // reader done

	mu     sync.Mutex // serialises binds and unbinds with Shutdown
	closed bool
	err    atomic.Pointer[error] // why the reader stopped, if not Shutdown

	// Reads counts reads of the device, Delivered ports read,
	// Overflows queue overflows recovered from, Absorbed the bind-time
	// notifications dropped (see BindInterdomain).
	Reads, Delivered, Overflows, Absorbed atomic.Uint64

	// absorbMu orders the reader's deliveries with BindInterdomain's
	// registration of the port it bound; absorb holds, per port just
	// bound, until when its first notification is Xen's bind-time one.
	absorbMu sync.Mutex
	absorb   map[evtchn.Port]time.Time
}

// bindNoticeWindow bounds how long after a bind the first notification of
// the port is taken for Xen's conservative bind-time one (Linux delivers
// it within microseconds; a kernel that did not deliver it at all would
// otherwise have a real notification dropped).
const bindNoticeWindow = 2 * time.Second

var _ evtchn.Events = (*Events)(nil)

// Open opens DevicePath and starts the reader.
func Open() (*Events, error) { return OpenPath(DevicePath) }

// OpenPath opens the event-channel device at path and starts the reader.
func OpenPath(path string) (*Events, error) {
	f, err := os.OpenFile(path, os.O_RDWR|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("evlinux: %w", err)
	}
	return newEvents(fileDevice{f}), nil
}

// newEvents starts the service over dev.
func newEvents(dev device) *Events {
	e := &Events{dev: dev, tab: newTable(), quit: make(chan struct{})}
	go e.readLoop()
	return e
}

// fileDevice is the real device: an *os.File in the runtime's poller
// (the driver supports poll and O_NONBLOCK), so Close wakes the reader.
// Reads (non-blocking), unmasking writes and notifies never block, and
// are made as raw system calls: the usual ones would wake the Go
// runtime's monitor thread on every event and have it hand the process's
// P to another thread during the notify's hypercall (see package
// internal/xenioctl).
type fileDevice struct{ f *os.File }

func (d fileDevice) Read(b []byte) (int, error)  { return xenioctl.ReadRaw(d.f, b) }
func (d fileDevice) Write(b []byte) (int, error) { return xenioctl.WriteRaw(d.f, b) }
func (d fileDevice) Close() error                { return d.f.Close() }

func (d fileDevice) ioctl(req uintptr, arg unsafe.Pointer) (uintptr, error) {
	if req == ioctlNotify {
		return xenioctl.IoctlRaw(d.f, req, arg)
	}
	return xenioctl.Ioctl(d.f, req, arg)
}

// readLoop delivers the ports the kernel queues until the device is
// closed or fails.
func (e *Events) readLoop() {
	defer close(e.quit)
	buf := make([]byte, 4*readBatch)
	for {
		n, err := e.dev.Read(buf)
		e.Reads.Add(1)
		switch {
		case errors.Is(err, unix.EFBIG):
			if err := e.overflow(); err != nil {
				e.stop(err)
				return
			}
			continue
		case errors.Is(err, unix.EINTR), errors.Is(err, unix.EAGAIN):
			continue
		case err != nil:
			e.stop(err)
			return
		case n%4 != 0:
			e.stop(fmt.Errorf("evlinux: read of %d bytes is not a whole number of ports", n))
			return
		}
		e.deliver(buf[:n])
		if err := e.unmask(buf[:n]); err != nil {
			e.stop(err)
			return
		}
	}
}

// deliver counts a notification on each port in b (4-byte port numbers);
// ports not bound through this service are counted as dropped.
func (e *Events) deliver(b []byte) {
	e.absorbMu.Lock()
	defer e.absorbMu.Unlock()
	for i := 0; i+4 <= len(b); i += 4 {
		p := evtchn.Port(binary.NativeEndian.Uint32(b[i:]))
		e.Delivered.Add(1)
		if until, ok := e.absorb[p]; ok {
			delete(e.absorb, p)
			if time.Now().Before(until) {
				e.Absorbed.Add(1)
				continue
			}
		}
		e.tab.Deliver(p) // an unknown port only counts in Dropped
	}
}

// unmask writes ports back to the device, which re-enables them.
func (e *Events) unmask(b []byte) error {
	for len(b) > 0 {
		n, err := e.dev.Write(b)
		if err != nil {
			return fmt.Errorf("evlinux: unmasking ports: %w", err)
		}
		if n <= 0 || n%4 != 0 {
			return fmt.Errorf("evlinux: unmasking ports: short write of %d bytes", n)
		}
		b = b[n:]
	}
	return nil
}

// overflow recovers from a full kernel queue: the ports it lost are
// unknown, so every bound port counts one notification and is unmasked.
func (e *Events) overflow() error {
	e.Overflows.Add(1)
	if _, err := e.dev.ioctl(ioctlReset, nil); err != nil {
		return fmt.Errorf("evlinux: resetting the overflowed event queue: %w", err)
	}
	ports, _ := e.tab.AppendPorts(nil, math.MaxInt)
	b := make([]byte, 4*len(ports))
	for i, p := range ports {
		binary.NativeEndian.PutUint32(b[4*i:], p)
	}
	e.deliver(b)
	return e.unmask(b)
}

// stop records why the reader stopped; unless the device was closed by
// Shutdown, every port's waiters wake with ErrClosed.
func (e *Events) stop(err error) {
	e.mu.Lock()
	shut := e.closed
	e.mu.Unlock()
	if shut && errors.Is(err, os.ErrClosed) {
		return
	}
	err = fmt.Errorf("evlinux: reading %s: %w", DevicePath, err)
	e.err.Store(&err)
	e.tab.Fail(err)
}

// Err returns why the reader stopped, or nil while it runs (or after a
// clean Shutdown).
func (e *Events) Err() error {
	if p := e.err.Load(); p != nil {
		return *p
	}
	return nil
}

// mapErr turns an errno of the device into the portable errors.
func mapErr(op string, err error) error {
	switch {
	case errors.Is(err, unix.ENOSPC), errors.Is(err, unix.EMFILE), errors.Is(err, unix.ENOMEM):
		return fmt.Errorf("evlinux: %s: %w (%w)", op, evtchn.ErrNoSpace, err)
	case errors.Is(err, unix.ESRCH), errors.Is(err, unix.EINVAL), errors.Is(err, unix.EPERM),
		errors.Is(err, unix.EACCES), errors.Is(err, unix.ENOENT):
		return fmt.Errorf("evlinux: %s: %w (%w)", op, evtchn.ErrNoPeer, err)
	case errors.Is(err, unix.ENOTCONN):
		return fmt.Errorf("evlinux: %s: %w (%w)", op, evtchn.ErrBadPort, err)
	}
	return fmt.Errorf("evlinux: %s: %w", op, err)
}

// bound registers a port the kernel just bound, unbinding it again if it
// cannot be tracked.
func (e *Events) bound(r uintptr) (evtchn.Port, error) {
	if r == 0 || r >= MaxPorts {
		a := portArg{Port: uint32(r)}
		e.dev.ioctl(ioctlUnbind, unsafe.Pointer(&a))
		return 0, fmt.Errorf("evlinux: the kernel bound port %d, outside 1..%d: %w", r, MaxPorts-1, evtchn.ErrBadPort)
	}
	p := evtchn.Port(r)
	if err := e.tab.Add(p, nil); err != nil {
		a := portArg{Port: uint32(p)}
		e.dev.ioctl(ioctlUnbind, unsafe.Pointer(&a))
		return 0, err
	}
	return p, nil
}

// checkOpen fails once Shutdown ran; e.mu is held.
func (e *Events) checkOpen() error {
	if e.closed {
		return fmt.Errorf("evlinux: service shut down: %w", evtchn.ErrClosed)
	}
	return nil
}

// AllocUnbound allocates a port that domain remote may bind.
func (e *Events) AllocUnbound(remote domid.ID) (evtchn.Port, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.checkOpen(); err != nil {
		return 0, err
	}
	a := bindUnboundArg{RemoteDomain: uint32(remote)}
	r, err := e.dev.ioctl(ioctlBindUnboundPort, unsafe.Pointer(&a))
	if err != nil {
		return 0, mapErr(fmt.Sprintf("alloc unbound for domain %d", remote), err)
	}
	return e.bound(r)
}

// BindInterdomain binds a local port to remotePort of domain remote.
func (e *Events) BindInterdomain(remote domid.ID, remotePort evtchn.Port) (evtchn.Port, error) {
	if remotePort == 0 || remotePort >= MaxPorts {
		return 0, fmt.Errorf("evlinux: bind to %d:%d: remote port outside 1..%d: %w", remote, remotePort, MaxPorts-1, evtchn.ErrNoPeer)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.checkOpen(); err != nil {
		return 0, err
	}
	// Xen sets a freshly bound interdomain port pending ("in case
	// notifications were lost on the remote unbound port"), and Linux
	// passes it on: counted, it is a notification nobody sent (measured:
	// dom0's half of evtchn/BindQuiet saw generation 1 on a quiet port,
	// and PingPong against a Gozen domU stalled in its last round).
	// Holding absorbMu across the bind and the registration, the reader
	// delivers it only once the port is marked, and drops it.
	e.absorbMu.Lock()
	defer e.absorbMu.Unlock()
	a := bindInterdomainArg{RemoteDomain: uint32(remote), RemotePort: uint32(remotePort)}
	r, err := e.dev.ioctl(ioctlBindInterdomain, unsafe.Pointer(&a))
	if err != nil {
		return 0, mapErr(fmt.Sprintf("bind to %d:%d", remote, remotePort), err)
	}
	p, err := e.bound(r)
	if err == nil {
		if e.absorb == nil {
			e.absorb = map[evtchn.Port]time.Time{}
		}
		e.absorb[p] = time.Now().Add(bindNoticeWindow)
	}
	return p, err
}

// Notify notifies the other end of port.
func (e *Events) Notify(port evtchn.Port) error {
	if err := e.tab.Check(port); err != nil {
		return err
	}
	a := portArg{Port: uint32(port)}
	if _, err := e.dev.ioctl(ioctlNotify, unsafe.Pointer(&a)); err != nil {
		return mapErr(fmt.Sprintf("notify port %d", port), err)
	}
	return nil
}

// Wait blocks until port's generation passes seen.
func (e *Events) Wait(ctx context.Context, port evtchn.Port, seen evtchn.Generation) (evtchn.Generation, error) {
	return e.tab.Wait(ctx, port, seen)
}

// Close unbinds port; its waiters wake with ErrClosed.
func (e *Events) Close(port evtchn.Port) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.tab.Remove(port); err != nil {
		return err
	}
	if e.closed {
		return nil // the device is closed: the kernel unbound it
	}
	a := portArg{Port: uint32(port)}
	if _, err := e.dev.ioctl(ioctlUnbind, unsafe.Pointer(&a)); err != nil {
		return mapErr(fmt.Sprintf("unbind port %d", port), err)
	}
	return nil
}

// Stats counts the ports bound through this service.
func (e *Events) Stats() evtchn.Stats { return evtchn.Stats{Ports: e.tab.Len()} }

// Dropped counts notifications read for ports not bound through this
// service.
func (e *Events) Dropped() uint64 { return e.tab.Dropped.Load() }

// Shutdown unbinds every port (waking waiters with ErrClosed), closes the
// device and waits for the reader to stop.
func (e *Events) Shutdown() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return fmt.Errorf("evlinux: shutdown: %w", evtchn.ErrClosed)
	}
	ports, _ := e.tab.AppendPorts(nil, math.MaxInt)
	var errs []error
	for _, p := range ports {
		e.tab.Remove(evtchn.Port(p))
		a := portArg{Port: p}
		if _, err := e.dev.ioctl(ioctlUnbind, unsafe.Pointer(&a)); err != nil {
			errs = append(errs, mapErr(fmt.Sprintf("unbind port %d", p), err))
		}
	}
	e.closed = true
	e.mu.Unlock()
	if err := e.dev.Close(); err != nil {
		errs = append(errs, fmt.Errorf("evlinux: closing the device: %w", err))
	}
	<-e.quit
	return errors.Join(errs...)
}

// newTable returns the port table of an Events.
func newTable() *evtable.Table { return evtable.New("evlinux", MaxPorts) }
