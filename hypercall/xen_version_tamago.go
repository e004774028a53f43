//go:build tamago

package hypercall

import (
	"runtime"
)

// xen_version sub-operations.
const (
	xenverVersion      = 0
	xenverExtraVersion = 1
	xenverCompileInfo  = 2
	xenverCapabilities = 3
	xenverGetFeatures  = 6
)

// XenVersion returns the hypervisor's major and minor version.
func XenVersion() (major, minor int, err error) {
	r := call(opXenVersion, xenverVersion, 0, 0, 0, 0)
	if err := Check("xen_version(version)", r); err != nil {
		return 0, 0, err
	}
	return int(r >> 16), int(r & 0xffff), nil
}

// XenExtraVersion returns the hypervisor's extra version string, e.g. ".7".
func XenExtraVersion() (string, error) {
	var buf [16]byte
	r := call(opXenVersion, xenverExtraVersion, ptr(&buf), 0, 0, 0)
	runtime.KeepAlive(&buf)
	if err := Check("xen_version(extraversion)", r); err != nil {
		return "", err
	}
	return cString(buf[:]), nil
}

// XenCapabilities returns the hypervisor's capability string, e.g.
// "xen-3.0-x86_64 hvm-3.0-x86_32 ...".
func XenCapabilities() (string, error) {
	var buf [1024]byte
	r := call(opXenVersion, xenverCapabilities, ptr(&buf), 0, 0, 0)
	runtime.KeepAlive(&buf)
	if err := Check("xen_version(capabilities)", r); err != nil {
		return "", err
	}
	return cString(buf[:]), nil
}

// XenFeatures returns feature word idx (XENFEAT_* bits 32*idx..32*idx+31).
func XenFeatures(idx uint32) (uint32, error) {
	var fi struct {
		index  uint32
		bitmap uint32
	}
	fi.index = idx
	r := call(opXenVersion, xenverGetFeatures, ptr(&fi), 0, 0, 0)
	runtime.KeepAlive(&fi)
	if err := Check("xen_version(get_features)", r); err != nil {
		return 0, err
	}
	return fi.bitmap, nil
}

func cString(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}
