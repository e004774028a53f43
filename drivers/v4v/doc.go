// Package v4v carries datagrams between Xen domains through the hypervisor,
// over Argo (xen/include/public/argo.h), the upstream successor of V4V.
//
// A receiving domain registers a ring: memory of its own that the
// hypervisor writes into. A sending domain asks the hypervisor to copy a
// message (up to [MaxIOV] buffers and a 32-bit message type, the V4V
// "protocol") into the destination's ring; the hypervisor writes a
// [MessageHeaderSize]-byte header before the data naming the true source
// domain, pads every message to [SlotSize] bytes and raises VIRQ_ARGO in the
// receiver. Because only the hypervisor writes the ring's contents, no grant
// or shared page with the peer exists, and the source of a message cannot be
// forged.
//
// Addresses are {Domain, Port} ([Addr]). A ring is identified by its owner,
// port and partner: the one domain allowed to send to it, or [domid.Any] for
// every domain. The hypervisor delivers a message to the ring whose partner
// is the sender if there is one, and only otherwise to the ANY ring.
// Registering an existing ring again is idempotent (unless
// [RegisterFailExist] is passed).
//
// The layers:
//   - [Ring] is the ring memory in Argo's exact layout: a 64-byte header
//     (rx_ptr, tx_ptr, reserved) and the data area. Its reader
//     ([Ring.Peek], [Ring.CopyOut]) follows V4V's copy_out semantics and
//     treats the contents defensively: impossible pointers or a message
//     length past the filled part of the ring or below the header size give
//     an error wrapping [ErrCorrupt], never a panic or an out-of-range read.
//   - [Hypervisor] is Argo as seen by one domain: the four operations
//     (register_ring, unregister_ring, sendv, notify) and the VIRQ_ARGO
//     signal. Implementations: package argo (hypercalls, in a Gozen guest)
//     and package v4vheap (a Go broker that plays the hypervisor, for tests
//     and for running drivers without Xen).
//   - [Endpoint] is one registered ring plus sending, as a net.PacketConn
//     whose addresses are [Addr].
//
// Errors from the hypervisor are mapped to named errors ([ErrNoRing] for
// ECONNREFUSED, [ErrMsgSize] for EMSGSIZE, [ErrWouldBlock] for EAGAIN, and
// so on) inside an [*Error] that also unwraps to the Xen errno, so both
// errors.Is(err, v4v.ErrWouldBlock) and errors.Is(err, hypercall.EAGAIN)
// hold.
//
// Flow control: a send to a full ring fails with [ErrWouldBlock] and makes
// the hypervisor remember that the sender waits for that much space. A
// receiver that consumes messages calls [Hypervisor.Notify]; the hypervisor
// then signals VIRQ_ARGO to every sender whose space is now available.
// [Endpoint.Send] and [Endpoint.WriteTo] wait for that signal and retry;
// [Endpoint.TrySend] returns ErrWouldBlock at once. Endpoints call Notify
// after every consume.
//
// In a Gozen guest:
//
//	hv, err := argo.New(argo.Config{Domain: self, Wait: waitVIRQArgo})
//	ep, err := v4v.Listen(v4v.Config{Hypervisor: hv, Port: 7000,
//		Partner: domid.Any, RingSize: 64 << 10})
//	n, from, err := ep.ReadFrom(buf)
//	_, err = ep.WriteTo(reply, from)
//
// On the host, v4vheap.New(v4vheap.Options{}).Domain(1) gives a Hypervisor
// for domain 1 of an in-process broker.
package v4v
