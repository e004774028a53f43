//go:build tamago

package hypercall

import "runtime"

// event_channel_op sub-operations (EVTCHNOP_*).
const (
	evtchnopBindInterdomain = 0
	evtchnopBindVIRQ        = 1
	evtchnopClose           = 3
	evtchnopSend            = 4
	evtchnopStatus          = 5
	evtchnopAllocUnbound    = 6
	evtchnopBindVCPU        = 8
	evtchnopUnmask          = 9
)

// EvtchnSend notifies the remote end of local port.
//
//go:nosplit
func EvtchnSend(port uint32) int64 {
	var arg struct{ port uint32 }
	arg.port = port
	return call(opEventChannel, evtchnopSend, ptr(&arg), 0, 0, 0)
}

// EvtchnAllocUnbound allocates a port that domain remote may bind to.
func EvtchnAllocUnbound(remote uint16) (uint32, error) {
	var arg struct {
		dom, remoteDom uint16
		port           uint32
	}
	arg.dom = selfID
	arg.remoteDom = remote
	r := call(opEventChannel, evtchnopAllocUnbound, ptr(&arg), 0, 0, 0)
	runtime.KeepAlive(&arg)
	if err := Check("event_channel_op(alloc_unbound)", r); err != nil {
		return 0, err
	}
	return arg.port, nil
}

// EvtchnBindInterdomain binds a local port to remotePort of domain remote.
func EvtchnBindInterdomain(remote uint16, remotePort uint32) (uint32, error) {
	var arg struct {
		remoteDom  uint16
		_          uint16
		remotePort uint32
		localPort  uint32
	}
	arg.remoteDom = remote
	arg.remotePort = remotePort
	r := call(opEventChannel, evtchnopBindInterdomain, ptr(&arg), 0, 0, 0)
	runtime.KeepAlive(&arg)
	if err := Check("event_channel_op(bind_interdomain)", r); err != nil {
		return 0, err
	}
	return arg.localPort, nil
}

// EvtchnBindVIRQ binds virtual IRQ virq of vCPU vcpu to a new local port.
func EvtchnBindVIRQ(virq, vcpu uint32) (uint32, error) {
	var arg struct{ virq, vcpu, port uint32 }
	arg.virq = virq
	arg.vcpu = vcpu
	r := call(opEventChannel, evtchnopBindVIRQ, ptr(&arg), 0, 0, 0)
	runtime.KeepAlive(&arg)
	if err := Check("event_channel_op(bind_virq)", r); err != nil {
		return 0, err
	}
	return arg.port, nil
}

// EvtchnBindVCPU makes Xen deliver port's events to vCPU vcpu (its
// vcpu_info and upcall) instead of the vCPU it was bound to
// (EVTCHNOP_bind_vcpu). Xen accepts it for interdomain, unbound and global
// VIRQ ports, not for per-vCPU VIRQs or IPIs.
func EvtchnBindVCPU(port, vcpu uint32) error {
	var arg struct{ port, vcpu uint32 }
	arg.port = port
	arg.vcpu = vcpu
	r := call(opEventChannel, evtchnopBindVCPU, ptr(&arg), 0, 0, 0)
	runtime.KeepAlive(&arg)
	return Check("event_channel_op(bind_vcpu)", r)
}

// EvtchnClose closes local port.
func EvtchnClose(port uint32) error {
	var arg struct{ port uint32 }
	arg.port = port
	r := call(opEventChannel, evtchnopClose, ptr(&arg), 0, 0, 0)
	runtime.KeepAlive(&arg)
	return Check("event_channel_op(close)", r)
}

// EvtchnUnmask unmasks local port, redelivering a pending event.
func EvtchnUnmask(port uint32) error {
	var arg struct{ port uint32 }
	arg.port = port
	r := call(opEventChannel, evtchnopUnmask, ptr(&arg), 0, 0, 0)
	runtime.KeepAlive(&arg)
	return Check("event_channel_op(unmask)", r)
}

// EvtchnStatus is the state of a port as EVTCHNOP_status reports it.
type EvtchnStatus struct {
	// State is EVTCHNSTAT_*: 0 closed, 1 unbound, 2 interdomain, 3 pirq,
	// 4 virq, 5 ipi.
	State uint32
	// VCPU is the vCPU the port notifies.
	VCPU uint32
	// Remote is the remote domain (unbound and interdomain ports).
	Remote uint16
	// RemotePort is the remote port (interdomain ports) or the VIRQ.
	RemotePort uint32
}

// EvtchnGetStatus queries the state of local port.
func EvtchnGetStatus(port uint32) (EvtchnStatus, error) {
	var arg struct {
		dom   uint16
		_     uint16
		port  uint32
		state uint32
		vcpu  uint32
		u     [2]uint32
	}
	arg.dom = selfID
	arg.port = port
	r := call(opEventChannel, evtchnopStatus, ptr(&arg), 0, 0, 0)
	runtime.KeepAlive(&arg)
	if err := Check("event_channel_op(status)", r); err != nil {
		return EvtchnStatus{}, err
	}
	st := EvtchnStatus{State: arg.state, VCPU: arg.vcpu}
	switch arg.state {
	case 1: // unbound: u.unbound.dom
		st.Remote = uint16(arg.u[0])
	case 2: // interdomain: u.interdomain.dom, .port
		st.Remote = uint16(arg.u[0])
		st.RemotePort = arg.u[1]
	case 4: // virq
		st.RemotePort = arg.u[0]
	}
	return st, nil
}
