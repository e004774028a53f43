package blkback

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/gozen-dev/gozen/domid"
	"github.com/gozen-dev/gozen/drivers/blkif"
	"github.com/gozen-dev/gozen/drivers/ring"
	"github.com/gozen-dev/gozen/evtchn"
	"github.com/gozen-dev/gozen/gnttab"
)

// errStatus carries a request's failure status.
type errStatus struct {
	status blkif.Status
	err    error
}

func (e *errStatus) Error() string { return e.err.Error() }

func fail(format string, a ...any) error {
	return &errStatus{blkif.StatusError, fmt.Errorf("blkback: "+format, a...)}
}

func unsupported(format string, a ...any) error {
	return &errStatus{blkif.StatusNotSupported, fmt.Errorf("blkback: "+format, a...)}
}

// conn is one connected ring.
type conn struct {
	s          *Server
	queue      int // its queue number
	remote     domid.ID
	ringMap    *gnttab.Mapping
	back       *ring.Back
	port       evtchn.Port
	persistent bool
	pmaps      map[gnttab.Ref][]byte // persistently mapped pages, by ref
	pmapped    []*gnttab.Mapping     // the mappings holding them
	stop       context.CancelFunc
	done       chan struct{}
	err        error // why serving stopped, if not stopped by us
	buf        []byte
	// Scratch space of rw and premap.
	refs, want []gnttab.Ref
	wanted     map[gnttab.Ref]bool
	vecs       [][]byte
	batch      []gnttab.CopySegment
}

// rings are a connection's rings, queue N at index N.
type rings []*conn

// close closes every ring.
func (rs rings) close() error {
	var errs []error
	for _, c := range rs {
		errs = append(errs, c.close())
	}
	return errors.Join(errs...)
}

// newConn maps queue's ring refs, binds the port and starts serving.
func (s *Server) newConn(queue int, remote domid.ID, refs []gnttab.Ref, port evtchn.Port, persistent bool) (*conn, error) {
	c := &conn{s: s, queue: queue, remote: remote, persistent: persistent, pmaps: map[gnttab.Ref][]byte{}, done: make(chan struct{})}
	m, err := s.cfg.Memory.Map(remote, refs, true)
	if err != nil {
		return nil, fmt.Errorf("blkback: queue %d: mapping the ring: %w", queue, err)
	}
	c.ringMap = m
	if c.back, err = ring.NewBack(m.Buf, blkif.Layout); err != nil {
		s.cfg.Memory.Unmap(m)
		return nil, fmt.Errorf("blkback: queue %d: %w", queue, err)
	}
	if c.port, err = s.cfg.Events.BindInterdomain(remote, port); err != nil {
		s.cfg.Memory.Unmap(m)
		return nil, fmt.Errorf("blkback: queue %d: binding event channel %d: %w", queue, port, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	c.stop = cancel
	go c.serve(ctx)
	return c, nil
}

// close stops serving and releases the ring, the port and every mapping.
func (c *conn) close() error {
	c.stop()
	<-c.done
	var errs []error
	for _, m := range c.pmapped {
		if err := c.s.cfg.Memory.Unmap(m); err != nil {
			errs = append(errs, err)
		}
	}
	c.pmapped = nil
	clear(c.pmaps)
	if err := c.s.cfg.Memory.Unmap(c.ringMap); err != nil {
		errs = append(errs, err)
	}
	if err := c.s.cfg.Events.Close(c.port); err != nil && !errors.Is(err, evtchn.ErrClosed) {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

// serve answers requests until ctx ends or the ring or port fails. After
// answering requests it polls the ring for more, within an adaptive
// window (see poll.go), before it asks for a notification and waits.
func (c *conn) serve(ctx context.Context) {
	defer close(c.done)
	var seen evtchn.Generation
	var woke time.Time
	var polled time.Duration // time spent polling since woke
	req := make([]byte, blkif.RequestSize)
	rsp := make([]byte, blkif.ResponseSize)
	most := c.s.cfg.PollMax
	window := max(most, 0)
	// idle is when the ring went empty after answering requests, arrived
	// when requests were noticed next (a wake-up, the final check); while
	// gap is set, polling did not find them, and the gap between the two
	// steers the window. A wake-up that finds nothing (an event left
	// over from a request already answered) only moves arrived on.
	var idle, arrived time.Time
	gap := false
	for {
		n, err := c.answer(req, rsp)
		if err != nil {
			c.err = err
			return
		}
		if n > 0 && most > 0 {
			if gap {
				window = nextWindow(window, arrived.Sub(idle), most)
			}
			idle, gap = c.s.now(), true
			if window > 0 {
				found, end, err := c.poll(ctx, idle, window)
				d := end.Sub(idle)
				polled += d
				c.s.count(func(st *Stats) {
					st.PollTime += d
					if found {
						st.PollHits++
					} else {
						st.PollMisses++
					}
				})
				if err != nil {
					c.err = err
					return
				}
				if found {
					gap = false
					continue
				}
			}
		}
		more, err := c.back.FinalCheckForRequests()
		if err != nil {
			c.err = err
			return
		}
		if more {
			if gap {
				arrived = c.s.now()
			}
			continue
		}
		if !woke.IsZero() {
			busy := c.s.now().Sub(woke) - polled
			c.s.count(func(st *Stats) { st.Wakeups++; st.Busy += busy })
		}
		if seen, err = c.s.cfg.Events.Wait(ctx, c.port, seen); err != nil {
			if ctx.Err() == nil {
				c.err = err
			}
			return
		}
		woke, polled = c.s.now(), 0
		arrived = woke
	}
}

// answer answers the requests waiting, notifying the frontend as its
// rsp_event asks, and returns how many it answered.
func (c *conn) answer(req, rsp []byte) (int, error) {
	n := 0
	for {
		ok, err := c.back.TakeRequest(req)
		if err != nil || !ok {
			return n, err
		}
		r := c.handle(req)
		r.Encode(rsp)
		if err := c.back.PutResponse(rsp); err != nil {
			return n, err
		}
		n++
		if c.back.PushResponsesAndCheckNotify() {
			if err := c.s.cfg.Events.Notify(c.port); err != nil {
				return n, err
			}
		}
	}
}

// handle answers one request.
func (c *conn) handle(b []byte) blkif.Response {
	// The id and operation are echoed even for a request that does not
	// decode; an indirect request is answered with its indirect_op, as
	// Linux's blkback does (and Linux's blkfront expects).
	rsp := blkif.Response{ID: binary.LittleEndian.Uint64(b[8:]), Op: blkif.Op(b[0])}
	indirect := rsp.Op == blkif.OpIndirect
	if indirect {
		rsp.Op = blkif.Op(b[1])
	}
	err := c.do(b)
	var es *errStatus
	switch {
	case err == nil:
		rsp.Status = blkif.StatusOK
	case errors.As(err, &es):
		rsp.Status = es.status
	default:
		rsp.Status = blkif.StatusError
	}
	c.s.count(func(st *Stats) {
		for len(st.QueueRequests) <= c.queue {
			st.QueueRequests = append(st.QueueRequests, 0)
		}
		st.QueueRequests[c.queue]++
		st.Requests++
		if indirect {
			st.Indirect++
		}
		if rsp.Status != blkif.StatusOK {
			st.Errors++
		}
	})
	return rsp
}

func (c *conn) do(b []byte) error {
	req, err := blkif.DecodeRequest(b)
	if err != nil {
		return err
	}
	cfg := &c.s.cfg
	switch req.Op {
	case blkif.OpFlushDiskCache, blkif.OpWriteBarrier:
		if (req.Op == blkif.OpFlushDiskCache && !cfg.FlushCache) || (req.Op == blkif.OpWriteBarrier && !cfg.Barrier) {
			return unsupported("%s not offered", req.Op)
		}
		if len(req.Segments) > 0 {
			if err := c.rw(blkif.OpWrite, req.Sector, req.Segments); err != nil {
				return err
			}
		}
		if s, ok := cfg.Disk.(interface{ Sync() error }); ok {
			if err := s.Sync(); err != nil {
				return fail("flush: %w", err)
			}
		}
		return nil
	case blkif.OpDiscard:
		if !cfg.Discard || (req.Secure && !cfg.DiscardSecure) {
			return unsupported("discard not offered")
		}
		if cfg.ReadOnly {
			return fail("discard on a read-only disk")
		}
		return c.discard(req.Sector, req.NrSectors)
	case blkif.OpIndirect:
		if req.NrSegments > cfg.MaxIndirectSegments {
			return fail("indirect request of %d segments, %d offered", req.NrSegments, cfg.MaxIndirectSegments)
		}
		c.premap(req.IndirectRefs)
		pages := make([][]byte, len(req.IndirectRefs))
		for i, r := range req.IndirectRefs {
			pages[i] = make([]byte, gnttab.PageSize)
			if err := c.copyFrom(r, 0, pages[i]); err != nil {
				return err
			}
		}
		segs, err := blkif.DecodeSegments(pages, req.NrSegments)
		if err != nil {
			return err
		}
		return c.rw(req.IndirectOp, req.Sector, segs)
	default:
		return c.rw(req.Op, req.Sector, req.Segments)
	}
}

// sectors512 returns the disk's size in 512-byte sectors.
func (c *conn) sectors512() uint64 { return uint64(c.s.cfg.Size) / blkif.SectorSize }

// checkRange checks that n 512-byte sectors at sector are within the disk
// and aligned to the logical sector size.
func (c *conn) checkRange(sector, n uint64) error {
	per := uint64(c.s.cfg.SectorSize / blkif.SectorSize)
	if sector > c.sectors512() || n > c.sectors512()-sector {
		return fail("sectors %d+%d beyond the disk's %d", sector, n, c.sectors512())
	}
	if sector%per != 0 || n%per != 0 {
		return fail("sectors %d+%d not aligned to %d-byte sectors", sector, n, c.s.cfg.SectorSize)
	}
	return nil
}

// rw reads or writes the segments' pages at sector.
func (c *conn) rw(op blkif.Op, sector uint64, segs []blkif.Segment) error {
	if op == blkif.OpWrite && c.s.cfg.ReadOnly {
		return fail("write to a read-only disk")
	}
	var total uint64
	for _, s := range segs {
		if s.Len()%c.s.cfg.SectorSize != 0 || s.Offset()%c.s.cfg.SectorSize != 0 {
			return fail("segment %+v not aligned to %d-byte sectors", s, c.s.cfg.SectorSize)
		}
		total += uint64(s.Len())
	}
	if err := c.checkRange(sector, total/blkif.SectorSize); err != nil {
		return err
	}
	off := int64(sector) * blkif.SectorSize
	if c.persistent {
		refs := c.refs[:0]
		for _, s := range segs {
			refs = append(refs, s.Ref)
		}
		c.refs = refs
		c.premap(refs)
		if done, err := c.rwDirect(op, off, total, segs); done {
			return err
		}
	}
	if cap(c.buf) < int(total) {
		c.buf = make([]byte, total)
	}
	buf := c.buf[:total]
	if op == blkif.OpRead {
		start := time.Now()
		_, err := c.s.cfg.Disk.ReadAt(buf, off)
		c.timeDisk(start, false)
		if err != nil {
			return fail("reading %d bytes at %d: %w", total, off, err)
		}
	}
	// Pages mapped persistently are copied in place; the others are
	// grant-copied in one batch (one ioctl with gntlinux).
	batch := c.batch[:0]
	pos := 0
	for _, s := range segs {
		part := buf[pos : pos+s.Len()]
		pos += s.Len()
		p, err := c.page(s.Ref)
		if err != nil {
			return err
		}
		switch {
		case p == nil:
			batch = append(batch, gnttab.CopySegment{Ref: s.Ref, Offset: s.Offset(), Local: part})
		case op == blkif.OpRead:
			copy(p[s.Offset():], part)
		default:
			copy(part, p[s.Offset():])
		}
	}
	c.batch = batch
	if len(batch) > 0 {
		c.s.count(func(st *Stats) { st.Copies += len(batch) })
		err := gnttab.CopyMany(c.s.cfg.Memory, c.remote, batch, op == blkif.OpRead)
		clear(batch) // keep no buffer alive through the scratch
		if err != nil {
			return fail("grant-copying %d segments of a %s: %w", len(batch), op, err)
		}
	}
	if op == blkif.OpWrite {
		start := time.Now()
		_, err := c.s.cfg.Disk.WriteAt(buf, off)
		c.timeDisk(start, true)
		if err != nil {
			return fail("writing %d bytes at %d: %w", total, off, err)
		}
	}
	return nil
}

// VectorStorage is a Storage that can also read into, and write from,
// several buffers in one call (as preadv and pwritev do). A Server given
// one reads and writes the frontend's persistently mapped pages in place,
// without copying them through a buffer of its own.
type VectorStorage interface {
	Storage
	// ReadvAt fills bufs, in order, from off on; WritevAt writes them.
	// Both return the bytes moved, and an error if fewer than all.
	ReadvAt(bufs [][]byte, off int64) (int, error)
	WritevAt(bufs [][]byte, off int64) (int, error)
}

// rwDirect reads or writes segs in place when the disk is a
// VectorStorage and every segment's page is persistently mapped; it
// reports whether it did.
func (c *conn) rwDirect(op blkif.Op, off int64, total uint64, segs []blkif.Segment) (bool, error) {
	v, ok := c.s.cfg.Disk.(VectorStorage)
	if !ok {
		return false, nil
	}
	vecs := c.vecs[:0]
	for _, s := range segs {
		p := c.pmaps[s.Ref]
		if p == nil {
			return false, nil
		}
		vecs = append(vecs, p[s.Offset():s.Offset()+s.Len()])
	}
	c.vecs = vecs
	defer clear(vecs) // keep no page of a connection alive through the scratch
	if op == blkif.OpRead {
		start := time.Now()
		n, err := v.ReadvAt(vecs, off)
		c.timeDisk(start, false)
		if err != nil || uint64(n) != total {
			return true, fail("reading %d bytes at %d: %d read: %w", total, off, n, orShort(err, io.ErrUnexpectedEOF))
		}
		return true, nil
	}
	start := time.Now()
	n, err := v.WritevAt(vecs, off)
	c.timeDisk(start, true)
	if err != nil || uint64(n) != total {
		return true, fail("writing %d bytes at %d: %d written: %w", total, off, n, orShort(err, io.ErrShortWrite))
	}
	return true, nil
}

// timeMap counts the time since start as spent mapping.
func (c *conn) timeMap(start time.Time) {
	d := time.Since(start)
	c.s.count(func(st *Stats) { st.MapTime += d })
}

// timeDisk counts the time since start as spent reading or writing the
// disk.
func (c *conn) timeDisk(start time.Time, write bool) {
	d := time.Since(start)
	c.s.count(func(st *Stats) {
		if write {
			st.WriteTime += d
		} else {
			st.ReadTime += d
		}
	})
}

// orShort returns err, or short if err is nil.
func orShort(err, short error) error {
	if err == nil {
		return short
	}
	return err
}

// page returns the persistent mapping of ref, mapping it if the budget
// allows, or nil to copy instead.
func (c *conn) page(ref gnttab.Ref) ([]byte, error) {
	if !c.persistent {
		return nil, nil
	}
	if p := c.pmaps[ref]; p != nil {
		return p, nil
	}
	if len(c.pmaps) >= c.s.cfg.MaxPersistentGrants {
		return nil, nil
	}
	start := time.Now()
	m, err := c.s.cfg.Memory.Map(c.remote, []gnttab.Ref{ref}, true)
	c.timeMap(start)
	if err != nil {
		return nil, fail("mapping grant %d persistently: %w", ref, err)
	}
	c.keep(m)
	return m.Buf, nil
}

// keep records the pages of m as persistently mapped.
func (c *conn) keep(m *gnttab.Mapping) {
	c.pmapped = append(c.pmapped, m)
	for i, r := range m.Refs {
		c.pmaps[r] = m.Buf[i*gnttab.PageSize : (i+1)*gnttab.PageSize : (i+1)*gnttab.PageSize]
	}
	c.s.count(func(st *Stats) { st.PersistentMaps += len(m.Refs) })
}

// premap maps, in one Map call, those of refs that are not yet mapped
// persistently (as many as the budget allows), rather than one call per
// page: a grant-map ioctl and an mmap cost far more than the pages they
// map. If the batch fails (a bad or read-only ref among them), nothing is
// recorded, and page maps and reports each ref on its own as it is used.
func (c *conn) premap(refs []gnttab.Ref) {
	if !c.persistent || len(refs) < 2 {
		return
	}
	room := c.s.cfg.MaxPersistentGrants - len(c.pmaps)
	want := c.want[:0]
	if c.wanted == nil {
		c.wanted = map[gnttab.Ref]bool{}
	}
	clear(c.wanted)
	for _, r := range refs {
		if len(want) >= room {
			break
		}
		if c.pmaps[r] == nil && !c.wanted[r] {
			c.wanted[r] = true
			want = append(want, r)
		}
	}
	c.want = want
	if len(want) < 2 {
		return
	}
	start := time.Now()
	m, err := c.s.cfg.Memory.Map(c.remote, slices.Clone(want), true)
	c.timeMap(start)
	if err != nil {
		return
	}
	c.keep(m)
}

func (c *conn) copyFrom(ref gnttab.Ref, off int, dst []byte) error {
	p, err := c.page(ref)
	if err != nil {
		return err
	}
	if p != nil {
		copy(dst, p[off:])
		return nil
	}
	c.s.count(func(st *Stats) { st.Copies++ })
	if err := c.s.cfg.Memory.CopyFrom(c.remote, ref, off, dst); err != nil {
		return fail("copying from grant %d: %w", ref, err)
	}
	return nil
}

// discard zeroes (or discards through the storage) n sectors at sector.
func (c *conn) discard(sector, n uint64) error {
	if err := c.checkRange(sector, n); err != nil {
		return err
	}
	off, length := int64(sector)*blkif.SectorSize, int64(n)*blkif.SectorSize
	if d, ok := c.s.cfg.Disk.(interface{ Discard(off, n int64) error }); ok {
		if err := d.Discard(off, length); err != nil {
			return fail("discard: %w", err)
		}
		return nil
	}
	zero := make([]byte, min(length, 1<<20))
	for length > 0 {
		k := min(length, int64(len(zero)))
		if _, err := c.s.cfg.Disk.WriteAt(zero[:k], off); err != nil {
			return fail("discard: writing zeros at %d: %w", off, err)
		}
		off += k
		length -= k
	}
	return nil
}
