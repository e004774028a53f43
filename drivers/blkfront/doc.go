// Package blkfront is the frontend of Xen's block split driver (blkif,
// "vbd" devices), written against the portable interfaces evtchn.Events,
// gnttab.SharedMemory and the device model of xenbus/device, so that it
// runs in a guest and, for tests, against package blkback on the host.
//
// A Driver registered on a device.Bus connects every vbd device; the
// application reaches the connected disk through the bound device's Conn
// (a *Disk), or calls Connect itself on an opened device.Frontend. The
// xenstore negotiation is in xs.go, the ring path in ring.go.
//
// # Negotiation
//
// As Linux's xen-blkfront: the frontend waits for the backend's InitWait,
// picks the ring order (min of the backend's max-ring-page-order and
// Config.MaxRingOrder; "ring-ref" for one page, "ring-page-order" and
// "ring-refN" for more), publishes the ring, "event-channel", "protocol"
// (x86_64-abi) and "feature-persistent", becomes Initialised, and once
// the backend is Connected reads the disk: "sectors" (512-byte units),
// "sector-size", "physical-sector-size", "info" (VDISK_READONLY), and the
// features "feature-flush-cache" (else "feature-barrier"),
// "feature-discard" with "discard-granularity", "discard-alignment" and
// "discard-secure", "feature-persistent" and
// "feature-max-indirect-segments".
//
// Multi-queue: if the backend offers "multi-queue-max-queues" (as
// Linux's xen-blkback does, max_queues), the disk uses min(offer,
// Config.MaxQueues) queues, each a ring of the same order with its own
// event channel. With more than one it writes "multi-queue-num-queues"
// and, per queue N, "queue-N/ring-ref" (or "queue-N/ring-ref0".. with
// "ring-page-order" at the top level) and "queue-N/event-channel";
// "protocol" and "feature-persistent" stay at the top level. With one
// queue the layout is the single-queue one above, unchanged (a
// reconnection after using several queues adds
// "multi-queue-num-queues" = 1). An offer that is not a 32-bit decimal
// fails the connection with ErrProtocol; zero means one queue.
// Requests go to the queue with the fewest in flight (ties round robin);
// each queue has its own request ids and, with persistent grants, its
// own pool of pages (Config.MaxPages shared out among the queues), as the
// backend maps persistent grants per ring. Disk.Stats counts requests
// per queue.
//
// # Requests
//
// Data moves through granted pages that the frontend owns (Go buffers are
// not granted directly): writes copy into them, reads copy out. With
// persistent grants negotiated the pages come from a pool granted once
// and reused until Close (the backend keeps them mapped); otherwise each
// request grants its pages and revokes them on completion. Requests carry
// at most 11 segments, or, with indirect segments negotiated, up to
// min(feature-max-indirect-segments, Config.MaxIndirectSegments) through
// BLKIF_OP_INDIRECT; large I/O is split into as many requests as needed,
// all in flight at once. Config.MaxPages bounds the pages in flight.
//
// Every response is untrusted: request ids carry a generation, and an
// unknown or stale id, a duplicate, an operation that does not match the
// request, an unknown status or a corrupt ring index fails the device
// with an error wrapping ErrProtocol (every waiting and later call gets
// it); nothing panics or waits forever. BLKIF_RSP_ERROR is an I/O error
// of that call (ErrIO); BLKIF_RSP_EOPNOTSUPP switches the feature off and
// yields ErrNotSupported (a flush then falls back to a barrier if the
// backend offers one).
//
// # Alignment
//
// ReadAt, WriteAt and Discard refuse offsets and lengths that are not
// multiples of the disk's logical sector size, with an error wrapping
// ErrUnaligned: there is no read-modify-write.
//
// # Suspend and resume
//
// Disk implements device.Conn. Suspend stops new requests and waits
// (bounded by its ctx) for those in flight on every queue; the ones still
// in flight stay recorded. Resume(true) restarts on the same rings.
// Resume(false) forgets every queue's port, releases the grants (a
// resumed domain's grant table is empty) and keeps the unanswered
// requests; Reconnect negotiates again (the number of queues may change)
// and re-issues them (split anew if the new backend offers fewer
// segments).
// Close fails everything still waiting with ErrClosed.
package blkfront

import (
	"errors"

	"github.com/gozen-dev/gozen/evtchn"
	"github.com/gozen-dev/gozen/gnttab"
)

// Errors of this package, wrapped with context; test with errors.Is.
var (
	// ErrProtocol means the backend broke the protocol (a bad response,
	// a corrupt ring, a malformed xenstore key); the device is dead.
	ErrProtocol = errors.New("blkfront: backend protocol violation")
	// ErrIO means the backend answered BLKIF_RSP_ERROR.
	ErrIO = errors.New("blkfront: I/O error")
	// ErrNotSupported means the backend does not offer the operation or
	// answered BLKIF_RSP_EOPNOTSUPP.
	ErrNotSupported = errors.New("blkfront: operation not supported")
	// ErrReadOnly means a write or discard on a read-only disk.
	ErrReadOnly = errors.New("blkfront: disk is read-only")
	// ErrUnaligned means an offset or length not a multiple of the
	// sector size.
	ErrUnaligned = errors.New("blkfront: offset or length not sector-aligned")
	// ErrRange means an access outside the disk.
	ErrRange = errors.New("blkfront: access beyond the end of the disk")
	// ErrClosed means the disk was closed.
	ErrClosed = errors.New("blkfront: disk closed")
)

// DefaultMaxPages is Config.MaxPages when zero: 4 MiB in flight.
const DefaultMaxPages = 1024

// MaxRingOrder is the largest ring order the frontend asks for (Linux's
// XENBUS_MAX_RING_GRANT_ORDER).
const MaxRingOrder = 4

// Config is what a disk needs of its domain.
type Config struct {
	// Events is the domain's event-channel service.
	Events evtchn.Events
	// Memory is the domain's grant service.
	Memory gnttab.SharedMemory
	// MaxRingOrder caps the ring's order (0..MaxRingOrder): rings of up
	// to 2^MaxRingOrder pages if the backend offers them. Zero is a
	// one-page ring.
	MaxRingOrder int
	// MaxIndirectSegments caps the segments of an indirect request when
	// the backend offers feature-max-indirect-segments; zero (or 11 or
	// less) does not use indirect requests.
	MaxIndirectSegments int
	// Persistent announces feature-persistent: the data pages are
	// granted once and reused if the backend agrees.
	Persistent bool
	// MaxPages bounds the granted data pages in flight (and the size of
	// the persistent pools, shared out among the queues);
	// DefaultMaxPages if zero.
	MaxPages int
	// MaxQueues caps the queues (rings, each with its own event channel)
	// used when the backend offers multi-queue-max-queues: min(offer,
	// MaxQueues). Zero or one uses one queue and the single-queue
	// xenstore layout.
	MaxQueues int
}

// QueueStats counts one queue's requests.
type QueueStats struct {
	// Requests counts requests put on the queue's ring.
	Requests uint64
	// InFlight is the requests on the ring not answered yet.
	InFlight int
}

// Stats is what Disk.Stats reports.
type Stats struct {
	// Queues has one entry per queue number used since the disk was
	// connected.
	Queues []QueueStats
}

// Info describes a connected disk and what was negotiated.
type Info struct {
	// Sectors is the size in 512-byte sectors.
	Sectors uint64
	// SectorSize is the logical sector size in bytes.
	SectorSize int
	// PhysicalSectorSize is the physical sector size in bytes.
	PhysicalSectorSize int
	// VDiskInfo is the backend's "info" bits (blkif.VDisk*).
	VDiskInfo uint32
	// ReadOnly is VDiskInfo's VDISK_READONLY bit.
	ReadOnly bool
	// FlushCache and Barrier are the flush operations available.
	FlushCache, Barrier bool
	// Discard is feature-discard; the other Discard* keys are its
	// parameters in bytes.
	Discard                              bool
	DiscardGranularity, DiscardAlignment uint32
	DiscardSecure                        bool
	// Persistent is whether persistent grants are in use.
	Persistent bool
	// MaxSegments is the most segments of one request (11, or the
	// negotiated indirect count).
	MaxSegments int
	// Indirect is whether indirect requests are in use.
	Indirect bool
	// RingOrder is the order of every queue's ring.
	RingOrder int
	// Queues is the number of queues (rings) in use.
	Queues int
	// Handle is the virtual device number sent in requests.
	Handle uint16
}
