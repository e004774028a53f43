//go:build linux

package main

import (
	"io"
	"os"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Magic numbers of statfs's f_type (include/uapi/linux/magic.h).
const (
	tmpfsMagic = 0x01021994
	ramfsMagic = 0x858458f6
)

// inMemory reports whether f is in tmpfs or ramfs, whose reads never wait
// for a device.
func inMemory(f *os.File) bool {
	rc, err := f.SyscallConn()
	if err != nil {
		return false
	}
	var st unix.Statfs_t
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.Fstatfs(int(fd), &st) }); err != nil || serr != nil {
		return false
	}
	return st.Type == tmpfsMagic || uint32(st.Type) == ramfsMagic
}

// memFile reads and writes a file in memory with raw system calls: the usual ones
// tell the Go scheduler they may block, which wakes its monitor thread
// and lets it hand the process's P to another thread mid-read, a cost
// per read that counts in a dom0 with one vCPU (see package
// internal/xenioctl).
type memFile struct{ f *os.File }

func (m memFile) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	rc, err := m.f.SyscallConn()
	if err != nil {
		return 0, err
	}
	var n uintptr
	var errno unix.Errno
	if err := rc.Control(func(fd uintptr) {
		for {
			n, _, errno = unix.RawSyscall(unix.SYS_READ, fd, uintptr(unsafe.Pointer(unsafe.SliceData(p))), uintptr(len(p)))
			if errno != unix.EINTR {
				return
			}
		}
	}); err != nil {
		return 0, err
	}
	if errno != 0 {
		return 0, &os.PathError{Op: "read", Path: m.f.Name(), Err: errno}
	}
	if n == 0 {
		return 0, io.EOF
	}
	return int(n), nil
}

func (m memFile) Write(p []byte) (int, error) {
	rc, err := m.f.SyscallConn()
	if err != nil {
		return 0, err
	}
	done := 0
	for done < len(p) {
		var n uintptr
		var errno unix.Errno
		if err := rc.Control(func(fd uintptr) {
			for {
				q := p[done:]
				n, _, errno = unix.RawSyscall(unix.SYS_WRITE, fd, uintptr(unsafe.Pointer(unsafe.SliceData(q))), uintptr(len(q)))
				if errno != unix.EINTR {
					return
				}
			}
		}); err != nil {
			return done, err
		}
		if errno != 0 {
			return done, &os.PathError{Op: "write", Path: m.f.Name(), Err: errno}
		}
		if n == 0 {
			return done, &os.PathError{Op: "write", Path: m.f.Name(), Err: io.ErrShortWrite}
		}
		done += int(n)
	}
	return done, nil
}

// isDevNull reports whether f is /dev/null (character device 1:3).
func isDevNull(f *os.File) bool {
	rc, err := f.SyscallConn()
	if err != nil {
		return false
	}
	var st unix.Stat_t
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.Fstat(int(fd), &st) }); err != nil || serr != nil {
		return false
	}
	return st.Mode&unix.S_IFMT == unix.S_IFCHR && unix.Major(st.Rdev) == 1 && unix.Minor(st.Rdev) == 3
}

// fastWriter returns a memFile for a regular file in memory or
// /dev/null, whose writes never block, else f.
func fastWriter(f *os.File) io.Writer {
	if isDevNull(f) {
		return memFile{f}
	}
	if fi, err := f.Stat(); err == nil && fi.Mode().IsRegular() && inMemory(f) {
		return memFile{f}
	}
	return f
}

// fastReader returns a memFile for a file in memory, else f.
func fastReader(f *os.File) io.Reader {
	if inMemory(f) {
		return memFile{f}
	}
	return f
}
