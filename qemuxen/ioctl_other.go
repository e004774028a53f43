//go:build !linux

package qemuxen

import "errors"

const oCloexec = 0

// checkExtension reports that only Linux's KVM can be asked.
func checkExtension(fd uintptr, capability int) (int, error) {
	return 0, errors.New("qemuxen: KVM_CHECK_EXTENSION needs a Linux host")
}
