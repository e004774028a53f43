//go:build linux

package evlinux

import "unsafe"

// _IOC as in Linux's include/uapi/asm-generic/ioctl.h: direction in bits
// 30-31, argument size in bits 16-29, type in bits 8-15, number in bits
// 0-7. The Xen devices use _IOC_NONE (0) for every request.
const (
	iocNone      = 0
	iocNrShift   = 0
	iocTypeShift = 8
	iocSizeShift = 16
	iocDirShift  = 30
)

// ioc builds an ioctl request number like Linux's _IOC.
func ioc(dir, typ, nr, size uintptr) uintptr {
	return dir<<iocDirShift | size<<iocSizeShift | typ<<iocTypeShift | nr<<iocNrShift
}

// Arguments of the /dev/xen/evtchn requests (include/uapi/xen/evtchn.h);
// every field is a C unsigned int.
type (
	// bindInterdomainArg is struct ioctl_evtchn_bind_interdomain.
	bindInterdomainArg struct{ RemoteDomain, RemotePort uint32 }
	// bindUnboundArg is struct ioctl_evtchn_bind_unbound_port.
	bindUnboundArg struct{ RemoteDomain uint32 }
	// portArg is struct ioctl_evtchn_unbind and struct ioctl_evtchn_notify.
	portArg struct{ Port uint32 }
)

// Request numbers of /dev/xen/evtchn. The bind requests return the new
// local port.
var (
	ioctlBindInterdomain = ioc(iocNone, 'E', 1, unsafe.Sizeof(bindInterdomainArg{}))
	ioctlBindUnboundPort = ioc(iocNone, 'E', 2, unsafe.Sizeof(bindUnboundArg{}))
	ioctlUnbind          = ioc(iocNone, 'E', 3, unsafe.Sizeof(portArg{}))
	ioctlNotify          = ioc(iocNone, 'E', 4, unsafe.Sizeof(portArg{}))
	ioctlReset           = ioc(iocNone, 'E', 5, 0)
)
