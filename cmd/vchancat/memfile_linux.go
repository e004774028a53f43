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

// memFile reads a file in memory with raw read(2) calls: the usual ones
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

// fastReader returns a memFile for a file in memory, else f.
func fastReader(f *os.File) io.Reader {
	if inMemory(f) {
		return memFile{f}
	}
	return f
}
