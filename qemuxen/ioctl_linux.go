//go:build linux

package qemuxen

import "golang.org/x/sys/unix"

const oCloexec = unix.O_CLOEXEC

// checkExtension issues KVM_CHECK_EXTENSION(capability) on fd.
func checkExtension(fd uintptr, capability int) (int, error) {
	r, _, errno := unix.Syscall(unix.SYS_IOCTL, fd, kvmCheckExtension, uintptr(capability))
	if errno != 0 {
		return 0, errno
	}
	return int(r), nil
}
