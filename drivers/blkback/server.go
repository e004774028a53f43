// Package blkback is a backend of Xen's block split driver (blkif)
// serving any io.ReaderAt/io.WriterAt of a given size: a file for host
// tests of package blkfront, and later a dom0 user-space backend. It is
// written against evtchn.Events, gnttab.SharedMemory and the backend end
// of xenbus/device.
//
// The xenstore handshake is in xs.go, the ring in ring.go. The frontend's
// pages are copied with grant copies (CopyFrom/CopyTo); with persistent
// grants negotiated they are mapped once, kept mapped until the ring is
// torn down (up to Config.MaxPersistentGrants; further ones are copied),
// and accessed directly. Everything read from the ring or the frontend's
// pages is decoded by package blkif and checked against the disk before
// use; a bad request is answered BLKIF_RSP_ERROR, an unsupported one
// BLKIF_RSP_EOPNOTSUPP, and a corrupt ring stops serving that connection.
package blkback

import (
	"errors"
	"fmt"
	"io"
	"sync"

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
	// FlushCache offers feature-flush-cache; Barrier offers
	// feature-barrier.
	FlushCache, Barrier bool
	// Discard offers feature-discard; DiscardSecure also discard-secure;
	// DiscardGranularity and DiscardAlignment are advertised as given.
	Discard, DiscardSecure               bool
	DiscardGranularity, DiscardAlignment uint32
}

// Stats counts what a server did, for tests and benchmarks.
type Stats struct {
	// Connections counts rings connected.
	Connections int
	// Requests counts requests answered; Indirect those that were
	// indirect; Errors those answered with an error status.
	Requests, Indirect, Errors int
	// PersistentMaps counts pages mapped persistently; Copies counts
	// grant copies.
	PersistentMaps, Copies int
	// RingOrder is the last ring's order; Persistent whether the last
	// connection used persistent grants.
	RingOrder  int
	Persistent bool
}

// Server serves one device. Its Serve runs the device's lifecycle.
type Server struct {
	cfg Config

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
	}
	return &Server{cfg: cfg}, nil
}

// Stats returns the server's counters.
func (s *Server) Stats() Stats {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stats
}

func (s *Server) count(f func(*Stats)) {
	s.mu.Lock()
	f(&s.stats)
	s.mu.Unlock()
}
