//go:build linux

// Package xenioctl holds what the Linux-domain implementations (evlinux,
// gntlinux) share to drive the kernel's Xen devices: Linux's _IOC request
// encoding, an ioctl on an *os.File, and raw reads, writes and ioctls
// for the requests on the hot path that never block.
//
// # Raw system calls
//
// A system call made the usual way (syscall.Syscall) tells the Go
// scheduler it may block: it wakes the runtime's monitor thread (sysmon)
// if that was asleep, and sysmon, polling every 20 µs from then on, hands
// the caller's P to another thread once the call has lasted a tick, so
// that other goroutines run meanwhile. For a call that returns at once
// that is pure cost, and a large one in a dom0 with one vCPU: each
// request then pays thread wake-ups and switches, where a hypercall
// (an event-channel notify, a grant copy) makes the call last long enough
// for the handoff. The Raw functions use syscall.RawSyscall, which
// does none of that; they are only for requests that never wait (a
// non-blocking read, an unmask, a notify, a grant copy).
package xenioctl

import (
	"errors"
	"fmt"
	"io"
	"os"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Bit positions of Linux's _IOC (include/uapi/asm-generic/ioctl.h).
const (
	nrShift   = 0
	typeShift = 8
	sizeShift = 16
	dirShift  = 30
)

// None is _IOC_NONE, the direction every Xen device request uses.
const None = 0

// IOC builds an ioctl request number like Linux's _IOC(dir, typ, nr,
// size).
func IOC(dir, typ, nr, size uintptr) uintptr {
	return dir<<dirShift | size<<sizeShift | typ<<typeShift | nr<<nrShift
}

// Ioctl performs request req on f with argument arg and returns the
// kernel's non-negative result, or the errno. arg must point to memory
// the garbage collector keeps in place (heap memory, pinned if it holds
// pointers hidden in integers).
func Ioctl(f *os.File, req uintptr, arg unsafe.Pointer) (uintptr, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return 0, err
	}
	var r uintptr
	var errno syscall.Errno
	cerr := rc.Control(func(fd uintptr) {
		r, _, errno = unix.Syscall(unix.SYS_IOCTL, fd, req, uintptr(arg))
	})
	if cerr != nil {
		return 0, cerr
	}
	if errno != 0 {
		return 0, errno
	}
	return r, nil
}

// IoctlRaw is Ioctl for a request that never blocks, made with
// RawSyscall (see the package doc). Like ReadRaw and WriteRaw, it fails
// with an error wrapping os.ErrClosed once f is closed.
func IoctlRaw(f *os.File, req uintptr, arg unsafe.Pointer) (uintptr, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return 0, err
	}
	var r uintptr
	var errno syscall.Errno
	cerr := rc.Control(func(fd uintptr) {
		r, _, errno = unix.RawSyscall(unix.SYS_IOCTL, fd, req, uintptr(arg))
	})
	if cerr != nil {
		return 0, closedErr(cerr)
	}
	if errno != 0 {
		return 0, errno
	}
	return r, nil
}

// ReadRaw reads from f, a file in the runtime's poller (non-blocking),
// with a raw read(2), waiting in the poller while there is nothing to
// read (as f.Read does, without its blocking-call bookkeeping). End of
// file is io.EOF.
func ReadRaw(f *os.File, b []byte) (int, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return 0, err
	}
	var n int
	var errno syscall.Errno
	rerr := rc.Read(func(fd uintptr) bool {
		for {
			var r uintptr
			r, _, errno = unix.RawSyscall(unix.SYS_READ, fd, uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)))
			n = int(r)
			if errno != unix.EINTR {
				return errno != unix.EAGAIN
			}
		}
	})
	if rerr != nil {
		return 0, closedErr(rerr)
	}
	if errno != 0 {
		return 0, errno
	}
	if n == 0 && len(b) > 0 {
		return 0, io.EOF // as os.File's Read
	}
	return n, nil
}

// WriteRaw writes b to f with one raw write(2), for a device whose writes
// never block; it returns what the device took.
func WriteRaw(f *os.File, b []byte) (int, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return 0, err
	}
	var n int
	var errno syscall.Errno
	cerr := rc.Control(func(fd uintptr) {
		for {
			var r uintptr
			r, _, errno = unix.RawSyscall(unix.SYS_WRITE, fd, uintptr(unsafe.Pointer(unsafe.SliceData(b))), uintptr(len(b)))
			n = int(r)
			if errno != unix.EINTR {
				return
			}
		}
	})
	if cerr != nil {
		return 0, closedErr(cerr)
	}
	if errno != 0 {
		return 0, errno
	}
	return n, nil
}

// closedErr is what a RawConn's Read or Control failed with: on a file
// of ours, that it is closed (the poller's own error, which os.File's
// methods turn into os.ErrClosed, is not exported).
func closedErr(err error) error {
	if errors.Is(err, os.ErrClosed) {
		return err
	}
	return fmt.Errorf("%w (%w)", os.ErrClosed, err)
}
