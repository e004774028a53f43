//go:build tamago

package argo

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"unsafe"

	"github.com/gozen-dev/gozen/domid"
	"github.com/gozen-dev/gozen/drivers/v4v"
	"github.com/gozen-dev/gozen/evtchn"
	"github.com/gozen-dev/gozen/evtchn/evxen"
	"github.com/gozen-dev/gozen/hypercall"
)

// Hypercall and operation numbers.
const (
	hypercallArgo    = 39
	opRegisterRing   = 1
	opUnregisterRing = 2
	opSendv          = 3
	opNotify         = 4
)

// Config is what the guest's boot and event-channel layers provide.
type Config struct {
	// Domain is the guest's domain id, or domid.Any if not known.
	Domain domid.ID
	// Wait blocks until VIRQ_ARGO has fired more often than seen counts
	// and returns the count, or returns ctx.Err() when ctx ends. Required.
	Wait func(ctx context.Context, seen uint64) (uint64, error)
	// PhysAddr returns the guest-physical address of virtual address va.
	// Nil means identity (Gozen's mapping of RAM).
	PhysAddr func(va uintptr) uint64
}

// xenAddr is xen_argo_addr_t.
type xenAddr struct {
	port uint32
	dom  uint16
	pad  uint16
}

// registerArgs is xen_argo_register_ring_t.
type registerArgs struct {
	port    uint32
	partner uint16
	pad     uint16
	len     uint32
}

// unregisterArgs is xen_argo_unregister_ring_t.
type unregisterArgs struct {
	port    uint32
	partner uint16
	pad     uint16
}

// xenIOV is xen_argo_iov_t: a guest handle (a pointer on x86-64), the
// length and padding. base is a pointer so that the buffers it refers to
// are heap-allocated.
type xenIOV struct {
	base unsafe.Pointer
	len  uint32
	pad  uint32
}

// sendArgs holds sendv's two arguments: xen_argo_send_addr_t and the iovs.
type sendArgs struct {
	src, dst xenAddr
	iov      [v4v.MaxIOV]xenIOV
}

// The layouts must match argo.h exactly.
var (
	_ [8]byte  = [unsafe.Sizeof(xenAddr{})]byte{}
	_ [12]byte = [unsafe.Sizeof(registerArgs{})]byte{}
	_ [8]byte  = [unsafe.Sizeof(unregisterArgs{})]byte{}
	_ [16]byte = [unsafe.Sizeof(xenIOV{})]byte{}
	_ [8]byte  = [unsafe.Offsetof(sendArgs{}.iov) - unsafe.Offsetof(sendArgs{}.dst)]byte{}
)

// ringKey identifies a registered ring of this domain.
type ringKey struct {
	port    v4v.Port
	partner domid.ID
}

// Hypervisor is Argo for the calling guest. It implements v4v.Hypervisor.
type Hypervisor struct {
	cfg Config

	regMu  sync.Mutex // reg, unreg, rings
	reg    *registerArgs
	unreg  *unregisterArgs
	rings  map[ringKey]*v4v.Ring // registered: kept alive for Xen
	sendMu sync.Mutex
	send   *sendArgs
	ntfMu  sync.Mutex
	ntf    []uint32    // xen_argo_ring_data_t, grown as needed
	virq   evtchn.Port // VIRQ_ARGO's port when bound by Open
}

var _ v4v.Hypervisor = (*Hypervisor)(nil)

// New returns the guest's Argo after checking, with a notify that asks
// about nothing, that the hypervisor has Argo enabled.
func New(cfg Config) (*Hypervisor, error) {
	if cfg.Wait == nil {
		return nil, fmt.Errorf("argo: Config.Wait is required (VIRQ_ARGO): %w", v4v.ErrInvalid)
	}
	if !hypercall.Ready() {
		return nil, fmt.Errorf("argo: the hypercall page is not set up: %w", v4v.ErrNotSupported)
	}
	h := &Hypervisor{
		cfg:   cfg,
		reg:   new(registerArgs),
		unreg: new(unregisterArgs),
		rings: make(map[ringKey]*v4v.Ring),
		send:  new(sendArgs),
	}
	if err := h.Notify(nil); err != nil {
		return nil, fmt.Errorf("argo: probing: %w", err)
	}
	return h, nil
}

// BindVIRQ binds VIRQ_ARGO on vCPU 0 to a new event-channel port and
// returns the port; the event-channel layer must count its events for
// Config.Wait.
func BindVIRQ() (uint32, error) {
	return hypercall.EvtchnBindVIRQ(evxen.VIRQArgo, 0)
}

// result interprets an argo_op return value. Xen 4.17's sendv returns
// "(ret < 0) ? ret : len" with an int ret and an unsigned len, so C turns
// an error into an unsigned 32-bit value and RAX carries e.g. 0xfffffff5
// for -EAGAIN, zero-extended (seen in the rig). Every Argo result fits in
// 32 bits (a length is at most 16 MiB), so the low 32 bits, sign-extended,
// are the true result for every operation.
func result(r int64) int64 { return int64(int32(r)) }

func call(op string, cmd, a1, a2, a3, a4 uintptr) error {
	r := result(hypercall.Raw(hypercallArgo, cmd, a1, a2, a3, a4))
	if r < 0 {
		return v4v.ErrnoError(op, hypercall.Errno(-r))
	}
	return nil
}

func (h *Hypervisor) phys(va uintptr) uint64 {
	if h.cfg.PhysAddr != nil {
		return h.cfg.PhysAddr(va)
	}
	return uint64(va)
}

// Domain returns Config.Domain.
func (h *Hypervisor) Domain() domid.ID { return h.cfg.Domain }

// Wait waits for VIRQ_ARGO through Config.Wait.
func (h *Hypervisor) Wait(ctx context.Context, seen uint64) (uint64, error) {
	return h.cfg.Wait(ctx, seen)
}

// NewRing allocates page-aligned ring memory from the Go heap.
func (h *Hypervisor) NewRing(size int) (*v4v.Ring, error) {
	if err := v4v.CheckRingSize(size); err != nil {
		return nil, err
	}
	n := v4v.RingPages(size) * v4v.PageSize
	buf := make([]byte, n+v4v.PageSize)
	off := int(-uintptr(unsafe.Pointer(&buf[0])) & (v4v.PageSize - 1))
	return v4v.NewRing(buf[off:off+n:off+n], size)
}

// RegisterRing gives Xen the ring's frames (XEN_ARGO_OP_register_ring).
// r must come from NewRing (page-aligned, contiguous).
func (h *Hypervisor) RegisterRing(r *v4v.Ring, port v4v.Port, partner domid.ID, flags v4v.RegisterFlags) error {
	op := fmt.Sprintf("register_ring port %d partner %s", port, domName(partner))
	mem := r.Memory()
	base := uintptr(unsafe.Pointer(&mem[0]))
	if base%v4v.PageSize != 0 {
		return fmt.Errorf("argo: %s: ring memory not page-aligned (use NewRing): %w", op, v4v.ErrInvalid)
	}
	npages := v4v.RingPages(r.Size())
	gfns := make([]uint64, npages)
	for i := range gfns {
		gfns[i] = h.phys(base+uintptr(i)*v4v.PageSize) >> 12
	}
	h.regMu.Lock()
	defer h.regMu.Unlock()
	*h.reg = registerArgs{port: uint32(port), partner: uint16(partner), len: uint32(r.Size())}
	err := call(op, opRegisterRing, uintptr(unsafe.Pointer(h.reg)),
		uintptr(unsafe.Pointer(&gfns[0])), uintptr(npages), uintptr(flags))
	runtime.KeepAlive(gfns)
	runtime.KeepAlive(h.reg)
	if err != nil {
		return err
	}
	h.rings[ringKey{port, partner}] = r
	return nil
}

// UnregisterRing removes the ring (XEN_ARGO_OP_unregister_ring) and lets
// its memory go.
func (h *Hypervisor) UnregisterRing(port v4v.Port, partner domid.ID) error {
	op := fmt.Sprintf("unregister_ring port %d partner %s", port, domName(partner))
	h.regMu.Lock()
	defer h.regMu.Unlock()
	*h.unreg = unregisterArgs{port: uint32(port), partner: uint16(partner)}
	err := call(op, opUnregisterRing, uintptr(unsafe.Pointer(h.unreg)), 0, 0, 0)
	runtime.KeepAlive(h.unreg)
	if err != nil {
		return err
	}
	delete(h.rings, ringKey{port, partner})
	return nil
}

// Sendv sends one message (XEN_ARGO_OP_sendv). Empty buffers are left out
// (Xen logs a warning for each).
func (h *Hypervisor) Sendv(src, dst v4v.Addr, iov [][]byte, msgType uint32) (int, error) {
	op := func() string { return fmt.Sprintf("sendv port %d -> %s", src.Port, dst) }
	if len(iov) > v4v.MaxIOV {
		return 0, v4v.ErrnoError(op(), hypercall.EINVAL)
	}
	for _, v := range iov {
		if len(v) > v4v.MaxMessage {
			return 0, v4v.ErrnoError(op(), hypercall.EINVAL)
		}
	}
	h.sendMu.Lock()
	defer h.sendMu.Unlock()
	a := h.send
	a.src = xenAddr{port: uint32(src.Port), dom: uint16(src.Domain)}
	a.dst = xenAddr{port: uint32(dst.Port), dom: uint16(dst.Domain)}
	n := 0
	for _, v := range iov {
		if len(v) == 0 {
			continue
		}
		a.iov[n] = xenIOV{base: unsafe.Pointer(unsafe.SliceData(v)), len: uint32(len(v))}
		n++
	}
	r := result(hypercall.Raw(hypercallArgo, opSendv, uintptr(unsafe.Pointer(a)),
		uintptr(unsafe.Pointer(&a.iov[0])), uintptr(n), uintptr(msgType)))
	runtime.KeepAlive(a)
	runtime.KeepAlive(iov)
	for i := range n {
		a.iov[i] = xenIOV{} // drop references to the caller's buffers
	}
	if r < 0 {
		return 0, v4v.ErrnoError(op(), hypercall.Errno(-r))
	}
	return int(r), nil
}

// Notify asks Xen to wake senders waiting for space in this domain's rings
// and answers q (XEN_ARGO_OP_notify).
func (h *Hypervisor) Notify(q []v4v.RingQuery) error {
	const op = "notify"
	if len(q) == 0 {
		return call(op, opNotify, 0, 0, 0, 0)
	}
	if len(q) > v4v.MaxNotify {
		return v4v.ErrnoError(op, hypercall.EACCES)
	}
	h.ntfMu.Lock()
	defer h.ntfMu.Unlock()
	// xen_argo_ring_data_t: nent, pad, then 20-byte entries
	// {aport, domain_id|pad<<16, flags|pad<<16, space_required, max_message_size}.
	words := 2 + 5*len(q)
	if cap(h.ntf) < words {
		h.ntf = make([]uint32, words)
	}
	w := h.ntf[:words]
	clear(w)
	w[0] = uint32(len(q))
	for i, e := range q {
		x := w[2+5*i:]
		x[0] = uint32(e.Addr.Port)
		x[1] = uint32(e.Addr.Domain)
		x[3] = e.SpaceRequired
	}
	err := call(op, opNotify, uintptr(unsafe.Pointer(&w[0])), 0, 0, 0)
	runtime.KeepAlive(w)
	if err != nil {
		return err
	}
	for i := range q {
		x := w[2+5*i:]
		q[i].Flags = v4v.RingFlags(x[2] & 0xffff)
		q[i].MaxMessageSize = x[4]
	}
	return nil
}

func domName(id domid.ID) string {
	if id == domid.Any {
		return "any"
	}
	return fmt.Sprint(uint16(id))
}
