//go:build linux

package evlinux

import (
	"unsafe"

	"github.com/gozen-dev/gozen/internal/xenioctl"
)

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
	ioctlBindInterdomain = xenioctl.IOC(xenioctl.None, 'E', 1, unsafe.Sizeof(bindInterdomainArg{}))
	ioctlBindUnboundPort = xenioctl.IOC(xenioctl.None, 'E', 2, unsafe.Sizeof(bindUnboundArg{}))
	ioctlUnbind          = xenioctl.IOC(xenioctl.None, 'E', 3, unsafe.Sizeof(portArg{}))
	ioctlNotify          = xenioctl.IOC(xenioctl.None, 'E', 4, unsafe.Sizeof(portArg{}))
	ioctlReset           = xenioctl.IOC(xenioctl.None, 'E', 5, 0)
)
