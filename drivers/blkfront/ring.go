package blkfront

import (
	"context"
	"errors"
	"fmt"
	"slices"

	"github.com/gozen-dev/gozen/domid"
	"github.com/gozen-dev/gozen/drivers/blkif"
	"github.com/gozen-dev/gozen/drivers/ring"
	"github.com/gozen-dev/gozen/evtchn"
	"github.com/gozen-dev/gozen/gnttab"
)

// errReissue is a chunk's result when the ring it was on is gone (a
// resume into a new domain): its caller issues it again.
var errReissue = errors.New("blkfront: request to be re-issued")

// queue is one ring, its grant, its event channel, the requests in
// flight on it and, with persistent grants, its pool of data pages (the
// backend keeps persistent mappings per ring, as Linux's blkback does).
type queue struct {
	index  int // queue-<index> in xenstore
	remote domid.ID
	share  *gnttab.Share // the ring pages
	front  *ring.Front
	port   evtchn.Port
	stop   context.CancelFunc
	done   chan struct{} // closed when the completion goroutine ends

	// Under Disk.mu.
	shadow   []slot
	ids      []uint32 // free shadow slots
	inflight int
	free     []page // persistent pool pages not in use
	granted  int    // persistent pool pages
}

// initShadow sizes the shadow to the ring, every slot free.
func (q *queue) initShadow() {
	n := q.front.Size()
	q.shadow = make([]slot, n)
	q.ids = q.ids[:0]
	for i := n - 1; i >= 0; i-- {
		q.ids = append(q.ids, uint32(i))
	}
}

// page is one granted data or indirect page.
type page struct {
	ref gnttab.Ref
	buf []byte
}

// chunk is one ring request and the caller waiting for it.
type chunk struct {
	kind   blkif.Op // OpRead, OpWrite, OpFlushDiskCache, OpWriteBarrier, OpDiscard
	sector uint64
	buf    []byte // read or write data
	nsect  uint64 // discard length
	secure bool

	// Set when issued, under Disk.mu.
	q     *queue   // the queue it is on
	wire  blkif.Op // the operation the response must carry: the request's, or for indirect I/O its indirect_op (as Linux's blkback answers and Linux's blkfront checks)
	idx   uint32   // shadow slot
	pages []page   // data pages, then indirect pages
	share *gnttab.Share
	res   chan error // receives the result once
	// abandoned: the caller went away (ctx); the result is dropped.
	abandoned bool
	finished  bool
}

// slot is one shadow entry: the request with a given id.
type slot struct {
	c   *chunk
	gen uint32
}

func makeID(idx, gen uint32) uint64 { return uint64(gen)<<32 | uint64(idx) }

// acquirePagesLocked provides n pages on q for a chunk of the given
// kind, or reports false if the budget does not allow it now.
func (d *Disk) acquirePagesLocked(q *queue, c *chunk, n int) (bool, error) {
	if n == 0 {
		return true, nil
	}
	if d.info.Persistent {
		if len(q.free) < n {
			grow := max(n-len(q.free), 16)
			grow = min(grow, d.queuePages-q.granted)
			if grow < n-len(q.free) {
				return false, nil
			}
			s, err := d.cfg.Memory.Share(q.remote, grow, true)
			if err != nil {
				return false, fmt.Errorf("blkfront %s: granting %d pages: %w", d.name, grow, err)
			}
			d.shares[s] = struct{}{}
			q.granted += grow
			for i, r := range s.Refs {
				q.free = append(q.free, page{r, s.Buf[i*gnttab.PageSize : (i+1)*gnttab.PageSize : (i+1)*gnttab.PageSize]})
			}
		}
		c.pages = append(c.pages[:0], q.free[len(q.free)-n:]...)
		q.free = q.free[:len(q.free)-n]
		return true, nil
	}
	if d.inflightPages+n > d.maxPages {
		return false, nil
	}
	s, err := d.cfg.Memory.Share(q.remote, n, c.kind == blkif.OpRead)
	if err != nil {
		return false, fmt.Errorf("blkfront %s: granting %d pages: %w", d.name, n, err)
	}
	d.shares[s] = struct{}{}
	d.inflightPages += n
	c.share = s
	c.pages = c.pages[:0]
	for i, r := range s.Refs {
		c.pages = append(c.pages, page{r, s.Buf[i*gnttab.PageSize : (i+1)*gnttab.PageSize : (i+1)*gnttab.PageSize]})
	}
	return true, nil
}

// releasePagesLocked gives a finished chunk's pages back: to the pool,
// or revoked. After a device failure pages stay granted until Close (the
// backend may still use them).
func (d *Disk) releasePagesLocked(c *chunk) {
	if d.err != nil {
		return
	}
	if c.share != nil {
		d.inflightPages -= len(c.pages)
		d.unshareLocked(c.share)
		c.share = nil
	} else {
		c.q.free = append(c.q.free, c.pages...)
	}
	c.pages = nil
}

// unshareLocked revokes s; a share the backend still maps stays listed
// for Close.
func (d *Disk) unshareLocked(s *gnttab.Share) {
	err := d.cfg.Memory.Unshare(s)
	if err == nil || errors.Is(err, gnttab.ErrResumed) {
		delete(d.shares, s)
	}
}

// wakeLocked wakes every goroutine waiting for a slot, pages or a state
// change.
func (d *Disk) wakeLocked() {
	close(d.avail)
	d.avail = make(chan struct{})
}

// segments returns how many data pages a read or write of n bytes takes.
func segments(n int) int { return (n + gnttab.PageSize - 1) / gnttab.PageSize }

// issue puts the first request of a span on the ring: it waits (bounded
// by ctx) for the device to be connected and for a ring slot and pages,
// and returns the chunk and the bytes of buf left for further requests.
func (d *Disk) issue(ctx context.Context, kind blkif.Op, sector uint64, buf []byte, nsect uint64, secure bool) (*chunk, []byte, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	c := &chunk{kind: kind, sector: sector, nsect: nsect, secure: secure, res: make(chan error, 1)}
	for {
		if d.closed {
			return nil, nil, fmt.Errorf("blkfront %s: %w", d.name, ErrClosed)
		}
		if d.err != nil {
			return nil, nil, d.err
		}
		if d.running && len(d.qs) > 0 {
			var rest []byte
			ndata, nind := 0, 0
			if kind == blkif.OpRead || kind == blkif.OpWrite {
				ndata = min(segments(len(buf)), d.info.MaxSegments)
				n := min(len(buf), ndata*gnttab.PageSize)
				c.buf, rest = buf[:n], buf[n:]
				if ndata > blkif.MaxSegments {
					nind = blkif.IndirectPages(ndata)
				}
			}
			q, err := d.placeLocked(c, ndata+nind)
			if err != nil {
				return nil, nil, err
			}
			if q != nil {
				if err := d.putLocked(q, c, ndata); err != nil {
					return nil, nil, err
				}
				return c, rest, nil
			}
		}
		ch := d.avail
		d.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			d.mu.Lock()
			return nil, nil, ctx.Err()
		}
		d.mu.Lock()
	}
}

// placeLocked picks the queue for a chunk of n pages and acquires the
// pages there: the queue with the fewest requests in flight among those
// with a free ring slot, ties going round robin from the one after the
// last used. With persistent grants a queue whose pool is exhausted is
// passed over for the next. It returns nil if no queue can take the chunk
// now.
func (d *Disk) placeLocked(c *chunk, n int) (*queue, error) {
	nq := len(d.qs)
	var best *queue
	for i := range nq {
		q := d.qs[(d.next+i)%nq]
		if !q.front.Full() && (best == nil || q.inflight < best.inflight) {
			best = q
		}
	}
	if best == nil {
		return nil, nil
	}
	ok, err := d.acquirePagesLocked(best, c, n)
	if err != nil || ok {
		if ok {
			d.next = (best.index + 1) % nq
			return best, nil
		}
		return nil, err
	}
	if !d.info.Persistent {
		return nil, nil // the page budget is the whole disk's
	}
	for i := range nq {
		q := d.qs[(d.next+i)%nq]
		if q == best || q.front.Full() {
			continue
		}
		ok, err := d.acquirePagesLocked(q, c, n)
		if err != nil {
			return nil, err
		}
		if ok {
			d.next = (q.index + 1) % nq
			return q, nil
		}
	}
	return nil, nil
}

// putLocked fills the chunk's pages, puts its request on q's ring and
// notifies the backend.
func (d *Disk) putLocked(q *queue, c *chunk, ndata int) error {
	idx := q.ids[len(q.ids)-1]
	q.ids = q.ids[:len(q.ids)-1]
	sl := &q.shadow[idx]
	sl.c, c.idx, c.q = c, idx, q
	req := blkif.Request{Op: c.kind, Handle: d.info.Handle, ID: makeID(idx, sl.gen), Sector: c.sector}
	switch c.kind {
	case blkif.OpDiscard:
		req.NrSectors, req.Secure = c.nsect, c.secure
	case blkif.OpRead, blkif.OpWrite:
		segs := make([]blkif.Segment, ndata)
		for i := range segs {
			n := min(gnttab.PageSize, len(c.buf)-i*gnttab.PageSize)
			segs[i] = blkif.Segment{Ref: c.pages[i].ref, First: 0, Last: uint8(n/blkif.SectorSize - 1)}
			if c.kind == blkif.OpWrite {
				copy(c.pages[i].buf, c.buf[i*gnttab.PageSize:i*gnttab.PageSize+n])
			}
		}
		if ndata <= blkif.MaxSegments {
			req.Segments = segs
			break
		}
		req.Op, req.IndirectOp, req.NrSegments = blkif.OpIndirect, c.kind, ndata
		ind := c.pages[ndata:]
		bufs := make([][]byte, len(ind))
		for i, p := range ind {
			bufs[i] = p.buf
			req.IndirectRefs = append(req.IndirectRefs, p.ref)
		}
		if err := blkif.EncodeSegments(bufs, segs); err != nil {
			return d.failLocked(err)
		}
	default:
		req.Segments = []blkif.Segment{}
	}
	c.wire = req.Op
	if req.Op == blkif.OpIndirect {
		c.wire = req.IndirectOp
	}
	var b [blkif.RequestSize]byte
	if err := req.Encode(b[:]); err != nil {
		return d.failLocked(err)
	}
	if err := q.front.PutRequest(b[:]); err != nil {
		return d.failLocked(err)
	}
	d.inflight++
	q.inflight++
	d.requests[q.index]++
	if q.front.PushRequestsAndCheckNotify() {
		if err := d.cfg.Events.Notify(q.port); err != nil {
			return d.failLocked(fmt.Errorf("notifying the backend: %w", err))
		}
	}
	return nil
}

// failLocked kills the device: every waiting request fails with err
// (wrapped with ErrProtocol unless it wraps ErrClosed), and so does every
// later call. It returns the device's error.
func (d *Disk) failLocked(err error) error {
	if d.err != nil {
		return d.err
	}
	if !errors.Is(err, ErrProtocol) && !errors.Is(err, ErrClosed) {
		err = fmt.Errorf("%w: %w", ErrProtocol, err)
	}
	d.err = fmt.Errorf("blkfront %s: %w", d.name, err)
	d.finishAllLocked(d.err)
	return d.err
}

// finishAllLocked ends every request in flight with err (pages released
// if the device is still healthy).
func (d *Disk) finishAllLocked(err error) {
	for _, q := range d.qs {
		for i := range q.shadow {
			if c := q.shadow[i].c; c != nil {
				q.shadow[i].c = nil
				q.shadow[i].gen++
				q.ids = append(q.ids, uint32(i))
				d.finishLocked(c, err)
			}
		}
		q.inflight = 0
	}
	d.inflight = 0
	d.wakeLocked()
}

// finishLocked delivers a chunk's result and releases its pages.
func (d *Disk) finishLocked(c *chunk, err error) {
	c.finished = true
	d.releasePagesLocked(c)
	if !c.abandoned {
		c.res <- err
	}
}

// drainLocked consumes every response waiting on q. A response that does
// not answer a request in flight fails the device.
func (d *Disk) drainLocked(q *queue) error {
	var b [blkif.ResponseSize]byte
	for {
		ok, err := q.front.TakeResponse(b[:])
		if err != nil {
			return d.failLocked(err)
		}
		if !ok {
			more, err := q.front.FinalCheckForResponses()
			if err != nil {
				return d.failLocked(err)
			}
			if !more {
				return nil
			}
			continue
		}
		rsp, err := blkif.DecodeResponse(b[:])
		if err != nil {
			return d.failLocked(err)
		}
		idx, gen := uint32(rsp.ID), uint32(rsp.ID>>32)
		if uint64(idx) >= uint64(len(q.shadow)) || q.shadow[idx].c == nil || q.shadow[idx].gen != gen {
			return d.failLocked(fmt.Errorf("queue %d: response for id %#x, not in flight (unknown or duplicate)", q.index, rsp.ID))
		}
		c := q.shadow[idx].c
		if rsp.Op != c.wire {
			return d.failLocked(fmt.Errorf("queue %d: response for id %#x with operation %s, request was %s", q.index, rsp.ID, rsp.Op, c.wire))
		}
		q.shadow[idx].c = nil
		q.shadow[idx].gen++
		q.ids = append(q.ids, idx)
		q.inflight--
		d.inflight--
		var res error
		switch rsp.Status {
		case blkif.StatusOK:
			if c.kind == blkif.OpRead && !c.abandoned {
				for i := 0; i*gnttab.PageSize < len(c.buf); i++ {
					copy(c.buf[i*gnttab.PageSize:], c.pages[i].buf)
				}
			}
		case blkif.StatusError:
			res = fmt.Errorf("blkfront %s: %s of sector %d: %w", d.name, c.kind, c.sector, ErrIO)
		case blkif.StatusNotSupported:
			switch c.kind {
			case blkif.OpFlushDiskCache:
				d.info.FlushCache = false
			case blkif.OpWriteBarrier:
				d.info.Barrier = false
			case blkif.OpDiscard:
				d.info.Discard = false
			}
			res = fmt.Errorf("blkfront %s: %s: backend answered EOPNOTSUPP: %w", d.name, c.kind, ErrNotSupported)
		}
		d.finishLocked(c, res)
		d.wakeLocked()
	}
}

// complete is q's completion goroutine: it consumes responses whenever
// the backend notifies, until ctx ends, the device fails or the port
// goes away.
func (d *Disk) complete(ctx context.Context, q *queue) {
	defer close(q.done)
	var seen evtchn.Generation
	for {
		d.mu.Lock()
		err := d.drainLocked(q)
		d.mu.Unlock()
		if err != nil {
			return
		}
		g, err := d.cfg.Events.Wait(ctx, q.port, seen)
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, evtchn.ErrResumed) {
				return
			}
			d.mu.Lock()
			if slices.Contains(d.qs, q) && d.running {
				d.failLocked(fmt.Errorf("queue %d: event channel: %w", q.index, err))
			}
			d.mu.Unlock()
			return
		}
		seen = g
	}
}

// wait waits for the chunks' results; chunks to re-issue are returned.
// If ctx ends first, the chunks not finished are abandoned.
func (d *Disk) wait(ctx context.Context, cs []*chunk) (redo []*chunk, err error) {
	for i, c := range cs {
		select {
		case e := <-c.res:
			switch {
			case errors.Is(e, errReissue):
				redo = append(redo, c)
			case e != nil && err == nil:
				err = e
			}
		case <-ctx.Done():
			d.mu.Lock()
			for _, c := range cs[i:] {
				c.abandoned = true
			}
			d.mu.Unlock()
			return nil, ctx.Err()
		}
	}
	return redo, err
}

// do runs one operation: the span is split into requests, issued as
// slots and pages allow, then awaited; requests caught by a resume are
// issued again.
func (d *Disk) do(ctx context.Context, kind blkif.Op, sector uint64, buf []byte, nsect uint64, secure bool) error {
	type span struct {
		sector uint64
		buf    []byte
	}
	todo := []span{{sector, buf}}
	for len(todo) > 0 {
		var cs []*chunk
		var ierr error
		for _, s := range todo {
			sec, b := s.sector, s.buf
			for {
				c, rest, err := d.issue(ctx, kind, sec, b, nsect, secure)
				if err != nil {
					ierr = err
					break
				}
				cs = append(cs, c)
				if len(rest) == 0 {
					break
				}
				sec += uint64(len(b)-len(rest)) / blkif.SectorSize
				b = rest
			}
			if ierr != nil {
				break
			}
		}
		todo = todo[:0]
		redo, err := d.wait(ctx, cs)
		if ierr != nil {
			return ierr
		}
		if err != nil {
			return err
		}
		for _, c := range redo {
			todo = append(todo, span{c.sector, c.buf})
		}
	}
	return nil
}
