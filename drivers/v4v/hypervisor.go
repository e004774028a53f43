package v4v

import (
	"context"

	"github.com/gozen-dev/gozen/domid"
)

// RegisterFlags modify RegisterRing.
type RegisterFlags uint32

// RegisterFailExist is XEN_ARGO_REGISTER_FLAG_FAIL_EXIST: fail with
// ErrExists instead of re-registering a ring that exists.
const RegisterFailExist RegisterFlags = 1

// RingFlags describe a ring in a notify answer (XEN_ARGO_RING_*).
type RingFlags uint16

// Ring flags set by the hypervisor in a [RingQuery].
const (
	// RingExists: a ring matches the address for the caller.
	RingExists RingFlags = 1 << 0
	// RingShared: the ring's partner is ANY.
	RingShared RingFlags = 1 << 1
	// RingEmpty: the ring holds no message.
	RingEmpty RingFlags = 1 << 2
	// RingSufficient: SpaceRequired bytes of payload fit now; any pending
	// space notification for the caller was cancelled.
	RingSufficient RingFlags = 1 << 3
	// RingMsgSize: SpaceRequired can never fit the ring.
	RingMsgSize RingFlags = 1 << 4
	// RingBusy: too many senders wait for space on this ring; no
	// notification was queued for the caller.
	RingBusy RingFlags = 1 << 5
)

// RingQuery asks about the ring a send to Addr would reach
// (xen_argo_ring_data_ent). If SpaceRequired bytes of payload do not fit
// now, the hypervisor queues a space notification for the caller.
type RingQuery struct {
	// Addr is the destination asked about (in).
	Addr Addr
	// SpaceRequired is the payload size the caller wants to send (in).
	SpaceRequired uint32
	// Flags is the answer (out).
	Flags RingFlags
	// MaxMessageSize is the largest payload the ring takes (out; valid
	// with RingExists).
	MaxMessageSize uint32
}

// Hypervisor is Argo as seen by one domain: the operations of hypercall 39
// and the VIRQ_ARGO signal. Methods are safe for concurrent use. Errors
// from the hypervisor are [*Error] values made by [ErrnoError].
//
// The argo implementation is a thin layer over the hypercalls; the v4vheap
// implementation is a broker that behaves the same way for host tests.
type Hypervisor interface {
	// Domain returns the calling domain's id, or domid.Any if unknown.
	Domain() domid.ID

	// NewRing allocates memory suitable for a ring whose data area is
	// size bytes (page-aligned and pinned, for a real hypervisor) and
	// returns the empty ring.
	NewRing(size int) (*Ring, error)

	// RegisterRing (XEN_ARGO_OP_register_ring) registers r as the ring of
	// the calling domain at port for partner (domid.Any: every domain).
	// Registering the same ring id again replaces the memory and keeps
	// tx_ptr if it is valid, unless flags has RegisterFailExist; a
	// different size fails with ErrExists. The hypervisor keeps writing
	// into r until UnregisterRing.
	RegisterRing(r *Ring, port Port, partner domid.ID, flags RegisterFlags) error

	// UnregisterRing (XEN_ARGO_OP_unregister_ring) removes the ring at
	// port for partner; ErrNotRegistered if there is none.
	UnregisterRing(port Port, partner domid.ID) error

	// Sendv (XEN_ARGO_OP_sendv) copies the concatenation of iov (at most
	// MaxIOV buffers) as one message of type msgType into the ring at dst
	// whose partner is the caller, or else whose partner is ANY. src.Port
	// is the source port the receiver sees; src.Domain must be the caller
	// or domid.Any. It returns the payload length. On ErrWouldBlock the
	// hypervisor has queued a space notification (VIRQ_ARGO) for the
	// caller.
	Sendv(src, dst Addr, iov [][]byte, msgType uint32) (int, error)

	// Notify (XEN_ARGO_OP_notify) signals VIRQ_ARGO to senders waiting
	// for space that the caller's rings now have, then answers q (which
	// may be empty) in place.
	Notify(q []RingQuery) error

	// Wait blocks until VIRQ_ARGO has been signalled to the caller more
	// often than seen counts, and returns the new count. Every message
	// delivered to one of the caller's rings and every space notification
	// counts; counts may be coalesced but never lost, so "look, then
	// Wait(seen)" misses nothing. It returns ctx.Err() when ctx ends.
	Wait(ctx context.Context, seen uint64) (uint64, error)
}
