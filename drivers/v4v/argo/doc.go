// Package argo implements [v4v.Hypervisor] in a Gozen guest with Xen's
// Argo hypercall (number 39; xen/include/public/argo.h). It is a thin
// layer: each method is one hypercall, apart from ring memory allocation
// and keeping registered rings alive.
//
// The hypervisor must be built with CONFIG_ARGO and booted with argo=1
// (and mac-permissive=1 for rings whose partner is ANY); otherwise New
// fails with an error wrapping v4v.ErrNotSupported. qemu/argo-xen.sh
// builds such a hypervisor for the rig. A PV domain cannot register rings
// (its frames are machine frames), so use PVH guests.
//
// What the guest supplies ([Config]):
//   - Wait: VIRQ_ARGO as a counted signal. Bind the VIRQ with [BindVIRQ]
//     (EVTCHNOP_bind_virq for VIRQ_ARGO on vCPU 0), have the event-channel
//     layer count the events of the returned port, and pass a function
//     that waits for that count to pass seen, e.g. over an evtchn.Events:
//     func(ctx, seen) { g, err := ev.Wait(ctx, port, Generation(seen)); ... }.
//   - PhysAddr, optional: the guest-physical address of a byte of guest
//     memory. Gozen identity-maps RAM, so the default is the virtual
//     address itself and a ring page's gfn is its address >> 12.
//   - Domain, optional: the guest's domid (from xenstore "domid"), only
//     used for LocalAddr; Argo itself fills in the source domain.
//
// Ring memory comes from the Go heap, over-allocated by a page and aligned
// to a page boundary; the Go collector never moves heap objects, and every
// registered ring is referenced here until it is unregistered, so Xen's
// mapping of its frames stays valid. A ring must not be dropped while
// registered.
//
// Arguments passed to Xen by address live in heap memory owned by the
// Hypervisor (never on a goroutine stack, which may move), serialized by
// mutexes; message buffers are referenced through pointer-typed fields,
// which makes the compiler keep them on the heap too.
//
// Xen 4.17's sendv returns an error as a zero-extended 32-bit value
// (0xfffffff5 for -EAGAIN); results are read as signed 32-bit numbers.
//
// internal/argosmoke is a guest that checks this package against a real
// Argo hypervisor without needing VIRQ delivery (it polls): boot it as a
// PVH dom0 or domU of qemu/argo-xen.sh's hypervisor with
// argo=1,mac-permissive=1; it prints "argosmoke: PASS".
//
// Everything but this documentation builds only for GOOS=tamago.
package argo
