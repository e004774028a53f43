//go:build tamago

package evxen

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/gozen-dev/gozen/domid"
	"github.com/gozen-dev/gozen/evtchn"
	"github.com/gozen-dev/gozen/hypercall"
	"github.com/gozen-dev/gozen/internal/phys"
)

// VIRQs (VIRQ_* in xen.h).
const (
	// VIRQTimer is VIRQ_TIMER: the vCPU's one-shot or periodic timer.
	VIRQTimer = 0
	// VIRQArgo is VIRQ_ARGO: a message arrived in one of the domain's
	// Argo rings, or space a send waited for is free.
	VIRQArgo = 11
)

// Events is the Xen implementation of evtchn.Events for this domain.
type Events struct {
	tl  *TwoLevel // the shared bitmaps, with vCPU 0's vcpu_info as at New
	tab *Table
	// views are the views of vCPUs 0 and up, each through the vcpu_info
	// Xen keeps for it (New, EnableVCPUs, ResumeVCPUs); nil for a vCPU
	// without one.
	views      atomic.Pointer[[]*vcpuView]
	sharedInfo uintptr
	vcpuInfo   func(id int) uintptr
	// Upcalls counts upcall scans; Delivered counts notifications.
	Upcalls, Delivered atomic.Uint64
	// scanMu is held by Upcall for a whole scan and by BindInterdomain
	// while it absorbs the pending bit Xen sets on the new port (see
	// there): with more than one vCPU the scan runs beside the binder.
	scanMu sync.Mutex
}

// vcpuView is one vCPU's view of the bitmaps and what its scans found.
type vcpuView struct {
	tl        *TwoLevel
	delivered atomic.Uint64
}

var _ evtchn.Events = (*Events)(nil)

// New views the 2-level bitmaps in the shared-info page at sharedInfo and
// returns the domain's event-channel service. vcpuInfo returns the
// address of vCPU id's struct vcpu_info where Xen keeps it (registered
// with VCPUOP_register_vcpu_info, or its slot in shared info; 0: none):
// package boot's VCPUInfo, whose vCPU 0 area must be registered before
// New. The caller (package platform, which owns the domain's one
// instance) must route the upcall vector to Upcall and then call
// EnableUpcall.
func New(sharedInfo uintptr, vcpuInfo func(id int) uintptr) *Events {
	p := phys.Pointer(sharedInfo)
	e := &Events{tab: NewTable(), sharedInfo: sharedInfo, vcpuInfo: vcpuInfo}
	views := e.viewsOf(1)
	if views[0] == nil { // vCPU 0 always has one in shared info
		views[0] = &vcpuView{tl: NewTwoLevel(p, p)}
	}
	e.tl = views[0].tl
	e.views.Store(&views)
	return e
}

// viewsOf views the vcpu_info of vCPUs 0 to n-1 where Xen keeps each.
func (e *Events) viewsOf(n int) []*vcpuView {
	p := phys.Pointer(e.sharedInfo)
	old := e.all()
	views := make([]*vcpuView, n)
	for i := range views {
		addr := e.vcpuInfo(i)
		if addr == 0 {
			continue
		}
		v := &vcpuView{tl: NewTwoLevel(p, phys.Pointer(addr))}
		if i < len(old) && old[i] != nil {
			v.delivered.Store(old[i].delivered.Load())
		}
		views[i] = v
	}
	return views
}

// MaxVCPUs is the most vCPUs whose events are delivered: with every
// vcpu_info registered where the domain chose (package boot), the 2-level
// ABI serves any number; this is package arch/amd64/smp's MaxCPUs.
const MaxVCPUs = 128

// EnableVCPUs routes the upcalls of vCPUs 1 to n-1 to vector too
// (HVMOP_set_evtchn_upcall_vector each) and makes Upcall scan their
// vcpu_info as well, so that ports bound to them with BindVCPU are
// delivered. Call it once, with the vCPUs running (package
// arch/amd64/smp), before binding ports to them. A vCPU without a
// vcpu_info is an error.
func (e *Events) EnableVCPUs(n int, vector uint8) error {
	if n < 1 || n > MaxVCPUs {
		return fmt.Errorf("evxen: %d vCPUs: want 1 to %d", n, MaxVCPUs)
	}
	if len(e.all()) > 1 {
		return errors.New("evxen: EnableVCPUs called twice")
	}
	views := e.viewsOf(n)
	for i := 1; i < n; i++ {
		if views[i] == nil {
			return fmt.Errorf("evxen: vCPU %d has no vcpu_info", i)
		}
		if err := hypercall.SetEvtchnUpcallVector(uint32(i), vector); err != nil {
			return fmt.Errorf("evxen: routing vCPU %d's upcalls to vector %d: %w", i, vector, err)
		}
	}
	e.views.Store(&views)
	e.Upcall()
	return nil
}

// ResumeVCPUs views every vCPU's vcpu_info where Xen keeps it after the
// resume (package boot has registered them again) and routes the upcalls
// of vCPUs 1 and up (those EnableVCPUs routed) to vector again after a
// resume that was not cancelled: a restored domain has no upcall vector
// set, and in one that did not move setting it again changes nothing.
// Package platform calls it, with EnableUpcall for vCPU 0, before anything
// is bound again.
func (e *Events) ResumeVCPUs(vector uint8) error {
	views := e.viewsOf(len(e.all()))
	if views[0] == nil {
		views[0] = e.all()[0]
	}
	e.views.Store(&views)
	for i := 1; i < len(views); i++ {
		if views[i] == nil {
			return fmt.Errorf("evxen: resume: vCPU %d has no vcpu_info: its events are lost", i)
		}
		if err := hypercall.SetEvtchnUpcallVector(uint32(i), vector); err != nil {
			return fmt.Errorf("evxen: resume: routing vCPU %d's upcalls to vector %d: %w", i, vector, err)
		}
	}
	return nil
}

// VCPUs returns how many vCPUs' events are delivered (1 until
// EnableVCPUs).
func (e *Events) VCPUs() int { return len(e.all()) }

// DeliveredOn counts the notifications found through vCPU id's
// vcpu_info (its selector), for tests and diagnosis: a port bound to
// vCPU id (BindVCPU) is flagged there.
func (e *Events) DeliveredOn(id int) uint64 {
	views := e.all()
	if id < 0 || id >= len(views) || views[id] == nil {
		return 0
	}
	return views[id].delivered.Load()
}

// all returns the views of vCPUs 0 and up.
func (e *Events) all() []*vcpuView {
	if m := e.views.Load(); m != nil {
		return *m
	}
	return nil
}

// BindVCPU makes Xen deliver port's events to vCPU vcpu (EVTCHNOP_bind_vcpu):
// its upcall interrupts that vCPU. Waiters are woken on whichever vCPU
// runs them, as for any port. Interdomain, unbound and global VIRQ ports
// can move; vcpu must be below VCPUs.
func (e *Events) BindVCPU(port evtchn.Port, vcpu int) error {
	if err := e.tab.Check(port); err != nil {
		return err
	}
	if views := e.all(); vcpu < 0 || vcpu >= len(views) || views[vcpu] == nil {
		return fmt.Errorf("evxen: bind port %d to vCPU %d: the domain delivers events on %d vCPUs", port, vcpu, len(views))
	}
	if err := hypercall.EvtchnBindVCPU(uint32(port), uint32(vcpu)); err != nil {
		return fmt.Errorf("evxen: bind port %d to vCPU %d: %w", port, vcpu, err)
	}
	return nil
}

// Reset forgets every port, as a resume into a new domain requires (Xen's
// new domain has no bindings): waiters wake with an error wrapping
// evtchn.ErrResumed. It returns how many ports were forgotten.
func (e *Events) Reset() int { return e.tab.Reset() }

// Epoch counts the resumes into a new domain so far (evtchn.Epocher).
func (e *Events) Epoch() uint64 { return e.tab.Epoch() }

// StillBound reports whether port is still bound in Xen to VIRQ virq of
// vCPU 0: after a suspend whose result Xen did not report (HVM and PVH
// guests without a callback IRQ always see "new domain"), a surviving
// VIRQ binding shows that the domain did not move.
func (e *Events) StillBound(port evtchn.Port, virq uint32) bool {
	st, err := hypercall.EvtchnGetStatus(uint32(port))
	return err == nil && st.State == evtchnStatVIRQ && st.RemotePort == virq && st.VCPU == 0
}

// evtchnStatVIRQ is EVTCHNSTAT_virq.
const evtchnStatVIRQ = 4

// EnableUpcall asks Xen to raise vector on vCPU 0's LAPIC when events are
// pending (HVMOP_set_evtchn_upcall_vector), then scans once for events that
// arrived before.
func (e *Events) EnableUpcall(vector uint8) error {
	if err := hypercall.SetEvtchnUpcallVector(0, vector); err != nil {
		return fmt.Errorf("evxen: routing upcalls to vector %d: %w", vector, err)
	}
	e.Upcall()
	return nil
}

// Upcall scans for pending events and delivers them; it runs on the
// interrupt goroutine.
func (e *Events) Upcall() {
	e.scanMu.Lock()
	defer e.scanMu.Unlock()
	e.Upcalls.Add(1)
	n := 0
	for _, v := range e.all() {
		if v == nil {
			continue
		}
		if k := v.tl.Scan(e.tab.Deliver); k > 0 {
			v.delivered.Add(uint64(k))
			n += k
		}
	}
	e.Delivered.Add(uint64(n))
}

// UpcallPending reports whether Xen flagged events not yet scanned, for
// any vCPU.
func (e *Events) UpcallPending() bool {
	for _, v := range e.all() {
		if v != nil && v.tl.UpcallPending() {
			return true
		}
	}
	return false
}

// mapErr turns hypercall errors into the portable errors.
func mapErr(op string, err error) error {
	switch {
	case errors.Is(err, hypercall.ENOSPC):
		return fmt.Errorf("evxen: %s: %w (%w)", op, evtchn.ErrNoSpace, err)
	case errors.Is(err, hypercall.ESRCH), errors.Is(err, hypercall.EINVAL), errors.Is(err, hypercall.EPERM):
		return fmt.Errorf("evxen: %s: %w (%w)", op, evtchn.ErrNoPeer, err)
	}
	return fmt.Errorf("evxen: %s: %w", op, err)
}

// bound registers a port Xen just gave us, unmasks it, and closes it again
// if it cannot be tracked.
func (e *Events) bound(port uint32, handler func()) (evtchn.Port, error) {
	p := evtchn.Port(port)
	if err := e.tab.Add(p, handler); err != nil {
		hypercall.EvtchnClose(port)
		return 0, err
	}
	if err := hypercall.EvtchnUnmask(port); err != nil {
		e.tab.Remove(p)
		hypercall.EvtchnClose(port)
		return 0, fmt.Errorf("evxen: unmask port %d: %w", port, err)
	}
	return p, nil
}

// AllocUnbound allocates a port that domain remote may bind.
func (e *Events) AllocUnbound(remote domid.ID) (evtchn.Port, error) {
	port, err := hypercall.EvtchnAllocUnbound(uint16(remote))
	if err != nil {
		return 0, mapErr(fmt.Sprintf("alloc_unbound for domain %d", remote), err)
	}
	return e.bound(port, nil)
}

// BindInterdomain binds a local port to remotePort of domain remote.
func (e *Events) BindInterdomain(remote domid.ID, remotePort evtchn.Port) (evtchn.Port, error) {
	if remotePort >= NrPorts {
		return 0, fmt.Errorf("evxen: remote port %d outside the 2-level ABI: %w", remotePort, evtchn.ErrNoPeer)
	}
	port, err := hypercall.EvtchnBindInterdomain(uint16(remote), uint32(remotePort))
	if err != nil {
		return 0, mapErr(fmt.Sprintf("bind_interdomain to %d:%d", remote, remotePort), err)
	}
	// Xen sets the new port pending "in case notifications were lost on
	// the remote unbound port". Counted, it would be a notification nobody
	// sent: measured, the binding half of the conformance PingPong ran one
	// round ahead, two of its notifications then coalesced at the peer, and
	// the last round stalled. Clearing the bit before the port is in the
	// table absorbs exactly that notification (see package evtchn). The
	// scan lock makes it exact with several vCPUs: a scan that took the
	// bit before the clear has delivered it (to no port: dropped) before
	// the port is added. Measured without it, 4 vCPUs: a scan took the bit,
	// was held up, and counted it once the port was in the table; the
	// stress case's event pair then ran one round ahead and its last round
	// stalled.
	e.scanMu.Lock()
	defer e.scanMu.Unlock()
	e.tl.ClearPending(evtchn.Port(port))
	return e.bound(port, nil)
}

// BindVIRQ binds virtual IRQ virq of vCPU 0. With a handler, each event
// calls it on the interrupt goroutine; without, the port counts
// notifications like any other (Wait works on it).
func (e *Events) BindVIRQ(virq uint32, handler func()) (evtchn.Port, error) {
	port, err := hypercall.EvtchnBindVIRQ(virq, 0)
	if err != nil {
		return 0, mapErr(fmt.Sprintf("bind_virq %d", virq), err)
	}
	return e.bound(port, handler)
}

// Notify notifies the other end of port.
func (e *Events) Notify(port evtchn.Port) error {
	if err := e.tab.Check(port); err != nil {
		return err
	}
	if err := hypercall.Check("event_channel_op(send)", hypercall.EvtchnSend(uint32(port))); err != nil {
		return fmt.Errorf("evxen: notify port %d: %w", port, err)
	}
	return nil
}

// Wait blocks until port's generation passes seen.
func (e *Events) Wait(ctx context.Context, port evtchn.Port, seen evtchn.Generation) (evtchn.Generation, error) {
	return e.tab.Wait(ctx, port, seen)
}

// Close closes port and wakes its waiters with ErrClosed.
func (e *Events) Close(port evtchn.Port) error {
	if err := e.tab.Remove(port); err != nil {
		return err
	}
	if err := hypercall.EvtchnClose(uint32(port)); err != nil {
		return fmt.Errorf("evxen: close port %d: %w", port, err)
	}
	return nil
}

// Status asks Xen for the state of port.
func (e *Events) Status(port evtchn.Port) (hypercall.EvtchnStatus, error) {
	return hypercall.EvtchnGetStatus(uint32(port))
}

// Stats counts the ports bound through this service (the platform's timer
// VIRQ and adopted ports included): tests count leftovers with it.
func (e *Events) Stats() evtchn.Stats { return evtchn.Stats{Ports: e.tab.Len()} }

// Dropped counts notifications for ports not bound through this service.
func (e *Events) Dropped() uint64 { return e.tab.Dropped.Load() }

// MaxPollPorts is the most ports SCHEDOP_poll takes.
const MaxPollPorts = 128

// PollPorts appends every bound port to dst for SCHEDOP_poll; false when
// there are more than MaxPollPorts.
func (e *Events) PollPorts(dst []uint32) ([]uint32, bool) {
	return e.tab.AppendPorts(dst, MaxPollPorts)
}

// Adopt tracks a port the toolstack bound for us before boot (the xenstore
// and console channels, from HVM parameters), so Wait and Notify work on it.
// Close is not called on such ports by their users at shutdown; Forget
// drops one from the table without closing it. Adopting a port already
// tracked does nothing (a resume adopts the toolstack's ports again).
func (e *Events) Adopt(port evtchn.Port) error {
	if e.tab.Check(port) == nil {
		return nil
	}
	if err := e.tab.Add(port, nil); err != nil {
		return err
	}
	if err := hypercall.EvtchnUnmask(uint32(port)); err != nil {
		e.tab.Remove(port)
		return fmt.Errorf("evxen: unmask adopted port %d: %w", port, err)
	}
	return nil
}

// Forget stops tracking port without closing it in Xen.
func (e *Events) Forget(port evtchn.Port) error { return e.tab.Remove(port) }

// Debug describes the raw event state of the word holding port, for
// diagnosing lost wake-ups.
func (e *Events) Debug(port evtchn.Port) string {
	up, sel, pend, mask := e.all()[0].tl.Words(port)
	g, ok := e.tab.Generation(port)
	return fmt.Sprintf("upcall=%#x sel=%#x pending[%d]=%#x mask=%#x gen(%d)=%d,%v lastdropped=%v ports=%d",
		up, sel, port/64, pend, mask, port, g, ok, e.tab.LastDropped(), e.tab.Len())
}
