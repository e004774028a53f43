package blkfront

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	"github.com/gozen-dev/gozen/drivers/blkif"
	"github.com/gozen-dev/gozen/evtchn"
	"github.com/gozen-dev/gozen/gnttab"
	"github.com/gozen-dev/gozen/xenbus/device"
)

// Disk is a connected virtual block device. Its methods are safe for
// concurrent use; it implements io.ReaderAt, io.WriterAt and
// device.Conn.
type Disk struct {
	cfg  Config
	name string

	susMu sync.Mutex // serializes the lifecycle calls

	mu      sync.Mutex
	info    Info
	qs      []*queue // the connected queues, queue-<i> at index i
	next    int      // the queue after the last used, for round robin
	hasPort bool     // the queues' ports are ours to close
	running bool     // requests may be issued (connected, not suspended)
	closed  bool
	err     error // the device failed
	mq      bool  // multi-queue-num-queues was ever published

	inflight int           // requests in flight on all queues
	avail    chan struct{} // closed and replaced when something frees up
	requests []uint64      // requests issued per queue index, for Stats

	shares        map[*gnttab.Share]struct{} // every live share: rings, pools, per request
	inflightPages int                        // non-persistent pages in flight
	maxPages      int
	queuePages    int // bound of each queue's persistent pool
}

var (
	_ device.Conn = (*Disk)(nil)
	_ io.ReaderAt = (*Disk)(nil)
	_ io.WriterAt = (*Disk)(nil)
)

// Name returns the device's name, e.g. "vbd/51712".
func (d *Disk) Name() string { return d.name }

// Info returns what was negotiated with the backend.
func (d *Disk) Info() Info {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.info
}

// Stats returns the requests issued on each queue since the disk was
// connected (indexed by queue number; a reconnection with fewer queues
// keeps the counts of the others) and those in flight now.
func (d *Disk) Stats() Stats {
	d.mu.Lock()
	defer d.mu.Unlock()
	st := Stats{Queues: make([]QueueStats, len(d.requests))}
	for i, n := range d.requests {
		st.Queues[i].Requests = n
	}
	for _, q := range d.qs {
		st.Queues[q.index].InFlight = q.inflight
	}
	return st
}

// Size returns the disk's size in bytes.
func (d *Disk) Size() int64 {
	d.mu.Lock()
	defer d.mu.Unlock()
	return int64(d.info.Sectors * blkif.SectorSize)
}

// SectorSize returns the logical sector size in bytes: offsets and
// lengths of I/O must be multiples of it.
func (d *Disk) SectorSize() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.info.SectorSize
}

// ReadOnly reports whether the backend exports the disk read-only.
func (d *Disk) ReadOnly() bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.info.ReadOnly
}

// Err returns the error the device failed with, or nil.
func (d *Disk) Err() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.err
}

// check validates an access of n bytes at off and returns the bytes
// within the disk.
func (d *Disk) check(op string, off int64, n int) (int, error) {
	d.mu.Lock()
	ss, size := int64(d.info.SectorSize), int64(d.info.Sectors*blkif.SectorSize)
	d.mu.Unlock()
	if off < 0 {
		return 0, fmt.Errorf("blkfront %s: %s at offset %d: %w", d.name, op, off, ErrRange)
	}
	if off%ss != 0 || int64(n)%ss != 0 {
		return 0, fmt.Errorf("blkfront %s: %s of %d bytes at offset %d, sector size %d: %w", d.name, op, n, off, ss, ErrUnaligned)
	}
	if off >= size {
		return 0, nil
	}
	return int(min(int64(n), size-off)), nil
}

// ReadAt reads len(p) bytes at offset off (both multiples of
// SectorSize). Reading past the end returns the bytes before it and
// io.EOF. On an error no byte count is reported (n is 0).
func (d *Disk) ReadAt(p []byte, off int64) (int, error) {
	return d.ReadAtContext(context.Background(), p, off)
}

// ReadAtContext is ReadAt bounded by ctx.
func (d *Disk) ReadAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	n, err := d.check("read", off, len(p))
	if err != nil {
		return 0, err
	}
	if n > 0 {
		if err := d.do(ctx, blkif.OpRead, uint64(off)/blkif.SectorSize, p[:n], 0, false); err != nil {
			return 0, err
		}
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// WriteAt writes p at offset off (both multiples of SectorSize). Writing
// past the end fails with ErrRange and writes nothing; a read-only disk
// fails with ErrReadOnly. On an error no byte count is reported.
func (d *Disk) WriteAt(p []byte, off int64) (int, error) {
	return d.WriteAtContext(context.Background(), p, off)
}

// WriteAtContext is WriteAt bounded by ctx. If ctx ends while requests
// are in flight, part of p may have been written.
func (d *Disk) WriteAtContext(ctx context.Context, p []byte, off int64) (int, error) {
	if d.ReadOnly() {
		return 0, fmt.Errorf("blkfront %s: write: %w", d.name, ErrReadOnly)
	}
	n, err := d.check("write", off, len(p))
	if err != nil {
		return 0, err
	}
	if n < len(p) {
		return 0, fmt.Errorf("blkfront %s: write of %d bytes at %d, disk of %d: %w", d.name, len(p), off, d.Size(), ErrRange)
	}
	if n > 0 {
		if err := d.do(ctx, blkif.OpWrite, uint64(off)/blkif.SectorSize, p, 0, false); err != nil {
			return 0, err
		}
	}
	return n, nil
}

// Flush makes the writes completed so far durable: a
// BLKIF_OP_FLUSH_DISKCACHE, or a barrier if the backend only offers
// that. Without either it fails with ErrNotSupported.
func (d *Disk) Flush(ctx context.Context) error {
	for {
		d.mu.Lock()
		op := blkif.Op(0)
		switch {
		case d.info.FlushCache:
			op = blkif.OpFlushDiskCache
		case d.info.Barrier:
			op = blkif.OpWriteBarrier
		}
		d.mu.Unlock()
		if op == 0 {
			return fmt.Errorf("blkfront %s: flush: %w", d.name, ErrNotSupported)
		}
		err := d.do(ctx, op, 0, nil, 0, false)
		if errors.Is(err, ErrNotSupported) {
			continue // that operation is now off: fall back
		}
		return err
	}
}

// Discard tells the backend that n bytes at off (multiples of
// SectorSize) are no longer used; the blkback of this project then reads
// them as zeros, others may not. Without feature-discard it fails with
// ErrNotSupported.
func (d *Disk) Discard(ctx context.Context, off, n int64) error {
	return d.discard(ctx, off, n, false)
}

// SecureDiscard is Discard with BLKIF_DISCARD_SECURE, which needs the
// backend's discard-secure.
func (d *Disk) SecureDiscard(ctx context.Context, off, n int64) error {
	return d.discard(ctx, off, n, true)
}

func (d *Disk) discard(ctx context.Context, off, n int64, secure bool) error {
	in := d.Info()
	switch {
	case in.ReadOnly:
		return fmt.Errorf("blkfront %s: discard: %w", d.name, ErrReadOnly)
	case !in.Discard:
		return fmt.Errorf("blkfront %s: discard: %w", d.name, ErrNotSupported)
	case secure && !in.DiscardSecure:
		return fmt.Errorf("blkfront %s: secure discard: %w", d.name, ErrNotSupported)
	}
	ss := int64(in.SectorSize)
	size := int64(in.Sectors * blkif.SectorSize)
	if off < 0 || n < 0 || off > size || n > size-off {
		return fmt.Errorf("blkfront %s: discard of %d bytes at %d, disk of %d: %w", d.name, n, off, size, ErrRange)
	}
	if off%ss != 0 || n%ss != 0 {
		return fmt.Errorf("blkfront %s: discard of %d bytes at %d, sector size %d: %w", d.name, n, off, ss, ErrUnaligned)
	}
	if n == 0 {
		return nil
	}
	return d.do(ctx, blkif.OpDiscard, uint64(off)/blkif.SectorSize, nil, uint64(n)/blkif.SectorSize, secure)
}

// Suspend stops issuing requests and waits, until ctx ends, for those in
// flight; the ones still in flight then stay recorded (device.Conn).
func (d *Disk) Suspend(ctx context.Context) error {
	d.susMu.Lock()
	defer d.susMu.Unlock()
	d.mu.Lock()
	defer d.mu.Unlock()
	d.running = false
	for d.inflight > 0 && d.err == nil && !d.closed {
		ch := d.avail
		d.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			d.mu.Lock()
			return nil
		}
		d.mu.Lock()
	}
	return nil
}

// Resume restarts I/O after Suspend (device.Conn). With cancelled true
// the ring is still valid; otherwise the ring, its port and every grant
// are forgotten (the grants released locally) and the requests in flight
// wait for Reconnect to be issued again.
func (d *Disk) Resume(cancelled bool) error {
	d.susMu.Lock()
	defer d.susMu.Unlock()
	d.mu.Lock()
	if d.closed || len(d.qs) == 0 {
		d.mu.Unlock()
		return nil
	}
	if cancelled {
		d.running = true
		d.wakeLocked()
		d.mu.Unlock()
		return nil
	}
	qs := d.qs
	d.running = false
	d.hasPort = false // a new domain has none of our ports: forget, never close
	d.mu.Unlock()
	stopQueues(qs)
	d.mu.Lock()
	defer d.mu.Unlock()
	d.qs = nil
	// Requests in flight are issued again by their callers.
	for _, q := range qs {
		for i := range q.shadow {
			if c := q.shadow[i].c; c != nil {
				q.shadow[i].c = nil
				c.finished = true
				if c.share != nil {
					d.inflightPages -= len(c.pages)
				}
				c.pages, c.share = nil, nil
				if !c.abandoned {
					c.res <- errReissue
				}
			}
		}
		q.shadow, q.ids, q.inflight, q.free, q.granted = nil, nil, 0, nil, 0
	}
	d.inflight, d.inflightPages = 0, 0
	d.releaseSharesLocked()
	d.wakeLocked()
	return nil
}

// stopQueues stops the queues' completion goroutines and waits for them.
func stopQueues(qs []*queue) {
	for _, q := range qs {
		q.stop()
	}
	for _, q := range qs {
		<-q.done
	}
}

// releaseSharesLocked revokes every share; those the backend still maps
// stay listed (Close tries again).
func (d *Disk) releaseSharesLocked() error {
	var errs []error
	for s := range d.shares {
		err := d.cfg.Memory.Unshare(s)
		if err == nil || errors.Is(err, gnttab.ErrResumed) {
			delete(d.shares, s)
			continue
		}
		errs = append(errs, err)
	}
	if len(errs) > 0 {
		return fmt.Errorf("blkfront %s: revoking grants: %w", d.name, errors.Join(errs...))
	}
	return nil
}

// Reconnect negotiates again on f after Resume(false) and issues the
// recorded requests again (device.Conn).
func (d *Disk) Reconnect(ctx context.Context, f *device.Frontend) error {
	d.susMu.Lock()
	defer d.susMu.Unlock()
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return fmt.Errorf("blkfront %s: reconnect: %w", d.name, ErrClosed)
	}
	if d.err != nil {
		err := d.err
		d.mu.Unlock()
		return err
	}
	d.mu.Unlock()
	_, err := d.negotiate(ctx, f)
	if err != nil {
		return err
	}
	d.mu.Lock()
	d.releaseSharesLocked() // old ones the backend held at Resume
	d.mu.Unlock()
	return nil
}

// Close fails every waiting call with ErrClosed, closes the event
// channel and revokes every grant (device.Conn). Call it after the close
// handshake, once the backend unmapped the pages; grants still mapped
// make it return an error wrapping gnttab.ErrInUse (call it again later).
func (d *Disk) Close() error {
	d.susMu.Lock()
	defer d.susMu.Unlock()
	d.mu.Lock()
	qs := d.qs
	first := !d.closed
	d.closed, d.running = true, false
	d.mu.Unlock()
	var errs []error
	if first {
		stopQueues(qs)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if first {
		for _, q := range qs {
			for i := range q.shadow {
				if c := q.shadow[i].c; c != nil {
					q.shadow[i].c = nil
					c.finished = true
					if !c.abandoned {
						c.res <- fmt.Errorf("blkfront %s: %w", d.name, ErrClosed)
					}
				}
			}
			q.inflight, q.free = 0, nil
			if d.hasPort {
				if err := d.cfg.Events.Close(q.port); err != nil && !errors.Is(err, evtchn.ErrResumed) {
					errs = append(errs, fmt.Errorf("blkfront %s: closing the event channel of queue %d: %w", d.name, q.index, err))
				}
			}
		}
		d.inflight = 0
		d.hasPort = false
		d.wakeLocked()
	}
	if err := d.releaseSharesLocked(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
