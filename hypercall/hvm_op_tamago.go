//go:build tamago

package hypercall

import (
	"runtime"
	"unsafe"
)

// hvm_op sub-operations.
const (
	hvmopSetParam              = 0
	hvmopGetParam              = 1
	hvmopSetEvtchnUpcallVector = 23
	hvmopGetMemType            = 15
)

// HVM parameters (HVM_PARAM_* in hvm/params.h).
const (
	HVMParamCallbackIRQ   = 0
	HVMParamStorePFN      = 1
	HVMParamStoreEvtchn   = 2
	HVMParamConsolePFN    = 17
	HVMParamConsoleEvtchn = 18
)

type hvmParam struct {
	domid uint16
	_     uint16
	index uint32
	value uint64
}

// GetParam reads HVM parameter index of the calling domain.
func GetParam(index uint32) (uint64, error) {
	arg := hvmParam{domid: selfID, index: index}
	r := call(opHVM, hvmopGetParam, ptr(&arg), 0, 0, 0)
	runtime.KeepAlive(&arg)
	if err := Check("hvm_op(get_param)", r); err != nil {
		return 0, err
	}
	return arg.value, nil
}

// SetParam writes HVM parameter index of the calling domain.
func SetParam(index uint32, value uint64) error {
	arg := hvmParam{domid: selfID, index: index, value: value}
	r := call(opHVM, hvmopSetParam, ptr(&arg), 0, 0, 0)
	runtime.KeepAlive(&arg)
	return Check("hvm_op(set_param)", r)
}

// SetEvtchnUpcallVector asks Xen to deliver event-channel upcalls for vCPU
// vcpu as LAPIC interrupt vector (HVMOP_set_evtchn_upcall_vector).
func SetEvtchnUpcallVector(vcpu uint32, vector uint8) error {
	var arg struct {
		vcpu   uint32
		vector uint8
	}
	arg.vcpu = vcpu
	arg.vector = vector
	r := call(opHVM, hvmopSetEvtchnUpcallVector, ptr(&arg), 0, 0, 0)
	runtime.KeepAlive(&arg)
	return Check("hvm_op(set_evtchn_upcall_vector)", r)
}

// HVMMemRAM is HVMMEM_ram_rw: GetMemType's answer for a populated page of
// RAM (an unpopulated one reads as HVMMEM_mmio_dm).
const HVMMemRAM = 0

// GetMemType returns the type of the guest-physical frame pfn
// (HVMOP_get_mem_type), or a negative errno. Nosplit and allocation-free,
// for use with interrupts off around a suspend.
//
//go:nosplit
func GetMemType(pfn uint64) (uint16, int64) {
	var arg struct {
		domid   uint16
		memType uint16
		_       [2]uint16
		pfn     uint64
	}
	arg.domid = selfID
	arg.pfn = pfn
	r := call(opHVM, hvmopGetMemType, uintptr(unsafe.Pointer(&arg)), 0, 0, 0)
	return arg.memType, r
}
