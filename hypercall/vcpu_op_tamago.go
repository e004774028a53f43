//go:build tamago

package hypercall

import "runtime"

// vcpu_op sub-operations.
const (
	vcpuopInitialise          = 0
	vcpuopUp                  = 1
	vcpuopDown                = 2
	vcpuopIsUp                = 3
	vcpuopSetPeriodicTimer    = 6
	vcpuopStopPeriodicTimer   = 7
	vcpuopSetSingleshotTimer  = 8
	vcpuopStopSingleshotTimer = 9
	vcpuopRegisterTimeArea    = 13
)

// RegisterVCPUTimeArea asks Xen to keep vCPU vcpu's vcpu_time_info at
// guest address addr (VCPUOP_register_vcpu_time_memory_area); the record
// must not cross a page.
func RegisterVCPUTimeArea(vcpu uint32, addr uintptr) error {
	arg := uint64(addr)
	r := call(opVCPU, vcpuopRegisterTimeArea, uintptr(vcpu), ptr(&arg), 0, 0)
	runtime.KeepAlive(&arg)
	return Check("vcpu_op(register_vcpu_time_memory_area)", r)
}

// SingleshotFuture makes SetSingleshotTimer fail with ETIME when the
// deadline has already passed (VCPU_SSHOTTMR_future).
const SingleshotFuture = 1

// SetSingleshotTimer arms vCPU vcpu's one-shot timer for Xen system time
// deadline (ns); it raises VIRQ_TIMER.
func SetSingleshotTimer(vcpu uint32, deadline uint64, flags uint32) error {
	var arg struct {
		timeout uint64
		flags   uint32
		_       uint32
	}
	arg.timeout = deadline
	arg.flags = flags
	r := call(opVCPU, vcpuopSetSingleshotTimer, uintptr(vcpu), ptr(&arg), 0, 0)
	runtime.KeepAlive(&arg)
	return Check("vcpu_op(set_singleshot_timer)", r)
}

// StopSingleshotTimer disarms vCPU vcpu's one-shot timer.
func StopSingleshotTimer(vcpu uint32) error {
	return Check("vcpu_op(stop_singleshot_timer)", call(opVCPU, vcpuopStopSingleshotTimer, uintptr(vcpu), 0, 0, 0))
}

// StopPeriodicTimer disarms vCPU vcpu's periodic timer (Xen starts PV
// guests with a 10 ms one).
func StopPeriodicTimer(vcpu uint32) error {
	return Check("vcpu_op(stop_periodic_timer)", call(opVCPU, vcpuopStopPeriodicTimer, uintptr(vcpu), 0, 0, 0))
}

// VCPUIsUp reports whether vCPU vcpu is running.
func VCPUIsUp(vcpu uint32) (bool, error) {
	r := call(opVCPU, vcpuopIsUp, uintptr(vcpu), 0, 0, 0)
	if err := Check("vcpu_op(is_up)", r); err != nil {
		return false, err
	}
	return r != 0, nil
}

// VCPUInitialise sets the initial register state of vCPU vcpu, which must
// be down, from a struct vcpu_hvm_context at ctx (VCPUOP_initialise; for
// an HVM or PVH domain the context is the HVM one, see package
// arch/amd64/smp). Xen copies the structure during the call.
func VCPUInitialise(vcpu uint32, ctx uintptr) error {
	return Check("vcpu_op(initialise)", call(opVCPU, vcpuopInitialise, uintptr(vcpu), ctx, 0, 0))
}

// VCPUUp starts vCPU vcpu, initialised with VCPUInitialise (VCPUOP_up).
func VCPUUp(vcpu uint32) error {
	return Check("vcpu_op(up)", call(opVCPU, vcpuopUp, uintptr(vcpu), 0, 0, 0))
}

// VCPUIsUpRaw returns Xen's raw result of VCPUOP_is_up for vcpu: 1 up, 0
// down, -ENOENT (-2) when the domain has no such vCPU. Counting vCPUs
// probes it upwards from 1 until -ENOENT.
func VCPUIsUpRaw(vcpu uint32) int64 {
	return call(opVCPU, vcpuopIsUp, uintptr(vcpu), 0, 0, 0)
}
