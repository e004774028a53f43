//go:build tamago

package hypercall

import "runtime"

// sched_op sub-operations.
const (
	schedopYield    = 0
	schedopBlock    = 1
	schedopShutdown = 2
	schedopPoll     = 3
)

// Shutdown reasons (SHUTDOWN_* in sched.h).
const (
	ShutdownPoweroff  = 0
	ShutdownReboot    = 1
	ShutdownSuspend   = 2
	ShutdownCrash     = 3
	ShutdownWatchdog  = 4
	ShutdownSoftReset = 5
)

// Yield gives up the CPU to another vCPU or domain.
func Yield() error {
	return Check("sched_op(yield)", call(opSched, schedopYield, 0, 0, 0, 0))
}

// Block blocks the vCPU until an event is pending for it.
func Block() error {
	return Check("sched_op(block)", call(opSched, schedopBlock, 0, 0, 0, 0))
}

// Shutdown asks Xen to shut the domain down for reason (ShutdownPoweroff,
// ...). On success it does not return.
//
//go:nosplit
func Shutdown(reason uint32) int64 {
	var arg struct{ reason uint32 }
	arg.reason = reason
	return call(opSched, schedopShutdown, ptr(&arg), 0, 0, 0)
}

// Poll blocks the vCPU until one of ports is pending, any event arrives
// (when len(ports) != 1), or Xen system time reaches timeout (nanoseconds;
// zero means no timeout).
//
//go:nosplit
func Poll(ports []uint32, timeout uint64) int64 {
	var arg struct {
		ports   uintptr
		nrPorts uint32
		_       uint32
		timeout uint64
	}
	if len(ports) > 0 {
		arg.ports = uintptr(ptr(&ports[0]))
	}
	arg.nrPorts = uint32(len(ports))
	arg.timeout = timeout
	r := call(opSched, schedopPoll, ptr(&arg), 0, 0, 0)
	runtime.KeepAlive(ports)
	return r
}
