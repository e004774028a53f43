//go:build linux

// Package xenioctl holds what the Linux-domain implementations (evlinux,
// gntlinux) share to drive the kernel's Xen devices: Linux's _IOC request
// encoding and an ioctl on an *os.File.
package xenioctl

import (
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
