// Package blkback is a backend of Xen's block split driver (blkif)
// serving any io.ReaderAt/io.WriterAt of a given size: a file for host
// tests of package blkfront, and later a dom0 user-space backend. It is
// written against evtchn.Events, gnttab.SharedMemory and the backend end
// of xenbus/device.
//
// The xenstore handshake is in xs.go, the ring in ring.go. With
// Config.MaxQueues the backend offers multi-queue-max-queues; a frontend
// that writes multi-queue-num-queues (1 up to the offer) publishes each
// ring's ring-ref (or ring-refN, with ring-page-order at the top level)
// and event-channel under queue-N/, as Linux's xen-blkback reads them,
// and each ring is served by its own goroutine. The frontend's
// pages are copied with grant copies (CopyFrom/CopyTo); with persistent
// grants negotiated they are mapped once, kept mapped until the ring is
// torn down (up to Config.MaxPersistentGrants; further ones are copied),
// and accessed directly: a request's new pages are mapped in one Map call,
// and with a VectorStorage disk its mapped pages are read and written in
// place (preadv/pwritev) rather than through a buffer. After answering
// requests, a ring's server polls the ring for the frontend's next ones
// for an adaptive window of at most Config.PollMax (poll.go) before it
// asks for an event and waits, so that requests following each other
// closely cost no event on either side. Everything read from the ring or
// the frontend's pages is decoded by package blkif and checked against
// the disk before use; a bad request is answered BLKIF_RSP_ERROR, an unsupported one
// BLKIF_RSP_EOPNOTSUPP, and a corrupt ring stops serving that connection.
package blkback

import (
	"errors"
	"fmt"
	"io"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/gozen-dev/gozen/drivers/blkif"
	"github.com/gozen-dev/gozen/evtchn"
	"github.com/gozen-dev/gozen/gnttab"
)

// Storage is what a Server serves. If it also has a Sync() error method
// (as *os.File has), flushes call it; if it has a
// Discard(off, n int64) error method, discards call it, else they write
// zeros.
type Storage interface {
	io.ReaderAt
	io.WriterAt
}

// DefaultMaxPersistentGrants is Config.MaxPersistentGrants when zero
// (Linux blkback's max_persistent_grants).
const DefaultMaxPersistentGrants = 1056

// Config describes the disk served and the features offered.
type Config struct {
	// Events is the backend domain's event-channel service.
	Events evtchn.Events
	// Memory is the backend domain's grant service.
	Memory gnttab.SharedMemory
	// Disk is the storage served.
	Disk Storage
	// Size is the disk's size in bytes, a multiple of SectorSize.
	Size int64
	// SectorSize is the logical sector size (512 if zero): a power of two
	// from 512 to 4096.
	SectorSize int
	// PhysicalSectorSize is the physical sector size (SectorSize if zero).
	PhysicalSectorSize int
	// ReadOnly exports the disk read-only ("info" VDISK_READONLY, mode r):
	// writes and discards are refused.
	ReadOnly bool
	// Persistent offers feature-persistent.
	Persistent bool
	// MaxPersistentGrants bounds the pages kept mapped per connection
	// (DefaultMaxPersistentGrants if zero).
	MaxPersistentGrants int
	// MaxIndirectSegments offers feature-max-indirect-segments with this
	// count (at most blkif.MaxIndirectSegments); zero offers none.
	MaxIndirectSegments int
	// MaxRingOrder offers max-ring-page-order (0..4).
	MaxRingOrder int
	// MaxQueues offers multi-queue-max-queues with this count (at most
	// MaxQueues): the frontend may connect that many rings, each with
	// its own event channel, served concurrently. Zero offers nothing
	// (one ring, as one does).
	MaxQueues int
	// FlushCache offers feature-flush-cache; Barrier offers
	// feature-barrier.
	FlushCache, Barrier bool
	// Discard offers feature-discard; DiscardSecure also discard-secure;
	// DiscardGranularity and DiscardAlignment are advertised as given.
	Discard, DiscardSecure               bool
	DiscardGranularity, DiscardAlignment uint32
	// PollMax caps adaptive polling: after answering requests, a ring's
	// server keeps looking at the ring for the frontend's next request
	// for up to this long before it asks for an event and waits for it,
	// so that requests following each other closely cost no event on
	// either side; the window adapts to the gaps between requests and
	// closes when the ring goes idle (see DefaultPollMax). Zero is
	// DefaultPollMax; negative turns polling off.
	PollMax time.Duration
}

// MaxQueues is the most queues a Server offers.
const MaxQueues = 64

// Stats counts what a server did, for tests and benchmarks.
type Stats struct {
	// Connections counts connections (each of Queues rings).
	Connections int
	// Queues is the last connection's number of rings.
	Queues int
	// QueueRequests counts requests answered per queue number, over
	// every connection.
	QueueRequests []int
	// Requests counts requests answered; Indirect those that were
	// indirect; Errors those answered with an error status.
	Requests, Indirect, Errors int
	// PersistentMaps counts pages mapped persistently; Copies counts
	// grant copies.
	PersistentMaps, Copies int
	// Wakeups counts the times a ring's server woke from waiting for its
	// event channel; Busy sums the time from each wake-up until it waited
	// again (requests served, responses pushed, the frontend notified),
	// less the time spent polling. Busy/Requests against the frontend's
	// latency per request tells the backend's own time from the rest
	// (the event path, the frontend).
	Wakeups int
	Busy    time.Duration
	// PollHits counts the polls (see Config.PollMax) that found a
	// request, PollMisses those whose window ended first (each followed
	// by a wait for an event); PollTime sums the time spent polling (the
	// processor time polling costs, less what other goroutines ran
	// meanwhile).
	PollHits, PollMisses int
	PollTime             time.Duration
	// MapTime sums the time spent mapping pages persistently, ReadTime
	// and WriteTime the time spent reading and writing the disk.
	MapTime, ReadTime, WriteTime time.Duration
	// RingOrder is the last ring's order; Persistent whether the last
	// connection used persistent grants.
	RingOrder  int
	Persistent bool
}

// Server serves one device. Its Serve runs the device's lifecycle.
type Server struct {
	cfg Config
	// now and yield are time.Now and runtime.Gosched, or a test's.
	now   func() time.Time
	yield func()

	mu    sync.Mutex
	stats Stats
}

// NewServer checks cfg and returns a server.
func NewServer(cfg Config) (*Server, error) {
	if cfg.Events == nil || cfg.Memory == nil || cfg.Disk == nil {
		return nil, errors.New("blkback: Config needs Events, Memory and Disk")
	}
	if cfg.SectorSize == 0 {
		cfg.SectorSize = blkif.SectorSize
	}
	if cfg.PhysicalSectorSize == 0 {
		cfg.PhysicalSectorSize = cfg.SectorSize
	}
	if cfg.MaxPersistentGrants == 0 {
		cfg.MaxPersistentGrants = DefaultMaxPersistentGrants
	}
	switch {
	case cfg.PollMax == 0:
		cfg.PollMax = DefaultPollMax
	case cfg.PollMax < 0:
		cfg.PollMax = -1
	}
	ss := cfg.SectorSize
	switch {
	case ss < blkif.SectorSize || ss > 4096 || ss&(ss-1) != 0:
		return nil, fmt.Errorf("blkback: sector size %d", ss)
	case cfg.PhysicalSectorSize < ss || cfg.PhysicalSectorSize&(cfg.PhysicalSectorSize-1) != 0:
		return nil, fmt.Errorf("blkback: physical sector size %d", cfg.PhysicalSectorSize)
	case cfg.Size < 0 || cfg.Size%int64(ss) != 0:
		return nil, fmt.Errorf("blkback: size %d is not a multiple of the sector size %d", cfg.Size, ss)
	case cfg.MaxIndirectSegments < 0 || cfg.MaxIndirectSegments > blkif.MaxIndirectSegments:
		return nil, fmt.Errorf("blkback: %d indirect segments", cfg.MaxIndirectSegments)
	case cfg.MaxRingOrder < 0 || cfg.MaxRingOrder > 4:
		return nil, fmt.Errorf("blkback: ring order %d", cfg.MaxRingOrder)
	case cfg.MaxQueues < 0 || cfg.MaxQueues > MaxQueues:
		return nil, fmt.Errorf("blkback: %d queues, at most %d", cfg.MaxQueues, MaxQueues)
	}
	return &Server{cfg: cfg, now: time.Now, yield: runtime.Gosched}, nil
}

// Stats returns the server's counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.stats
	st.QueueRequests = slices.Clone(st.QueueRequests)
	return st
}

func (s *Server) count(f func(*Stats)) {
	s.mu.Lock()
	f(&s.stats)
	s.mu.Unlock()
}
