// Package evtchn defines the portable event-channel interface that every
// Gozen driver is written against.
//
// An event channel is a one-bit, edge-triggered notification between two
// domains (or, for the host transports, two goroutines or two processes).
// Implementations live in sub-packages: evxen (hypercalls, in the guest),
// evheap (goroutines in one process) and evunix (two Linux processes).
//
// What a driver may assume of any [Events]:
//   - Notifications are counted, never lost: every notification sent after a
//     port was bound increments that port's generation, and [Events.Wait]
//     returns as soon as the generation is past the one the caller saw last.
//     The idiom "check the ring, then Wait(seen)" therefore has no lost
//     wake-up, and several goroutines may wait on one port at once.
//   - Notifications may be coalesced: n sends can be seen as fewer
//     generation steps than n, but never as none.
//   - Nothing is counted that was not sent after the bind: a port starts at
//     generation 0, and notifications sent to a port before it was bound are
//     dropped. (Xen conservatively notifies a port when it is bound with
//     EVTCHNOP_bind_interdomain; evxen absorbs that one, so that counting
//     protocols such as a strict ping-pong see the same on every
//     implementation. Check the shared state after binding, as every ring
//     protocol does, for what the peer did before.)
//   - Close wakes every waiter of that port with [ErrClosed].
//   - Methods are safe for concurrent use.
//
// # Suspend and resume
//
// A guest's platform (package platform) suspends and resumes the domain.
// What that does to a port:
//   - A cancelled suspend (the domain did not move) changes nothing: ports
//     stay bound, notifications sent meanwhile are delivered.
//   - A resume into a new domain (restore, migration) loses every binding:
//     Xen's new domain has none. Each waiter of a port bound before wakes
//     with an error wrapping [ErrResumed] (and [ErrClosed]), and the port
//     number is forgotten: it may be handed out again by the next bind, so
//     a driver must not Notify or Close a port it held before the resume.
//     Drivers learn of the resume from that error or from their device's
//     Resume(false), and bind afresh.
//   - The platform's own ports (the timer VIRQ, xenstore, console) are
//     re-established by the platform itself.
package evtchn

import (
	"context"
	"errors"

	"github.com/gozen-dev/gozen/domid"
)

// Port is a local event-channel port number.
type Port uint32

// Generation counts the notifications a port has received.
type Generation uint64

// Errors shared by all implementations. Implementations wrap them with
// context (port numbers, the failing operation), so test with errors.Is.
var (
	// ErrClosed means the port was closed locally or by the remote end.
	ErrClosed = errors.New("evtchn: port closed")
	// ErrBadPort means the port is out of range or not bound by us.
	ErrBadPort = errors.New("evtchn: bad port")
	// ErrNoPeer means the remote domain or port to bind to does not exist
	// or is not offered to us.
	ErrNoPeer = errors.New("evtchn: no such remote port")
	// ErrNoSpace means the domain has no free port left.
	ErrNoSpace = errors.New("evtchn: out of ports")
	// ErrResumed means the binding was lost because the domain was
	// resumed as a new domain (after a save/restore or a migration): see
	// "Suspend and resume" in the package doc. Errors wrapping it also
	// wrap ErrClosed.
	ErrResumed = errors.New("evtchn: binding lost by a resume into a new domain")
)

// Epocher is implemented by event services whose domain can be resumed
// as a new domain (after xl restore or a migration). Epoch counts those
// resumes. A port bound in an earlier epoch is gone, and its number may
// since have been given to a new binding of someone else: a holder that
// was not waiting when the resume came compares the epoch it bound in with
// Epoch before it notifies, waits on or closes its port.
type Epocher interface {
	Epoch() uint64
}

// Stats counts what an implementation still holds, so that tests can
// check that nothing leaked. Every implementation returns this shape.
type Stats struct {
	// Ports counts allocated ports (unbound, bound, or whose remote end
	// was closed).
	Ports int
}

// Events is the event-channel service of one domain.
type Events interface {
	// AllocUnbound allocates a fresh local port that the domain remote may
	// bind to with BindInterdomain.
	AllocUnbound(remote domid.ID) (Port, error)
	// BindInterdomain binds a fresh local port to remotePort of domain
	// remote, which must have been allocated for us with AllocUnbound.
	BindInterdomain(remote domid.ID, remotePort Port) (Port, error)
	// Notify sends a notification to the other end of port.
	Notify(port Port) error
	// Wait blocks until port's generation is greater than seen and returns
	// the new generation. It returns ctx.Err() if ctx ends first and an
	// error wrapping ErrClosed if the port is closed.
	Wait(ctx context.Context, port Port, seen Generation) (Generation, error)
	// Close unbinds port; waiters are woken with ErrClosed.
	Close(port Port) error
}
