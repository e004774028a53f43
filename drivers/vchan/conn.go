package vchan

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gozen-dev/gozen/domid"
	"github.com/gozen-dev/gozen/evtchn"
	"github.com/gozen-dev/gozen/gnttab"
	"github.com/gozen-dev/gozen/internal/deadline"
)

// Errors reported by vchan endpoints; they are wrapped with context, so
// test with errors.Is.
var (
	// ErrProtocol means the peer broke the vchan protocol: indexes that
	// run past the ring, ring orders outside the allowed set, an invalid
	// live state, a grant list that does not fit. The channel is unusable
	// after it and should be closed.
	ErrProtocol = errors.New("vchan: protocol violation by peer")
	// ErrPeerClosed means a write was attempted after the peer closed
	// (its live flag is 0 or its event channel is gone).
	ErrPeerClosed = errors.New("vchan: peer closed")
	// ErrResumed means this domain was resumed as a new domain (xl
	// restore, a migration) while the channel was open: its event channel
	// and grants stayed with the old domain, whose peer saw it go. The
	// channel cannot be used again; close it and connect anew. It wraps
	// ErrPeerClosed.
	ErrResumed = fmt.Errorf("%w: the channel was lost when this domain resumed as a new domain", ErrPeerClosed)
)

// DefaultCloseTimeout is how long Close waits, by default, for the peer to
// unmap the shared pages before giving up on revoking them.
const DefaultCloseTimeout = 2 * time.Second

// Config describes one end of a vchan.
type Config struct {
	// Events is the local event-channel service.
	Events evtchn.Events
	// Memory is the local grant service.
	Memory gnttab.SharedMemory
	// Store is the xenstore the two ends meet in.
	Store Store
	// Remote is the peer domain: the client for a server, the server for
	// a client.
	Remote domid.ID
	// Self is the local domain, reported by LocalAddr only.
	Self domid.ID
	// Path is the xenstore directory holding ring-ref and event-channel
	// (libxenvchan's xs_path). A server usually passes
	// ServerPath(client, port), a client Path(server, client, port).
	Path string
	// ReadMin and WriteMin are the server's minimum ring sizes in bytes,
	// at most MaxRingSize. As in libxenvchan, sizes that fit are served by
	// the 1 KiB and 2 KiB rings inside the control page (so 0, 0 gives a
	// 1 KiB read ring and a 2 KiB write ring); larger sizes round up to a
	// power of two of whole granted pages. Ignored by clients.
	ReadMin, WriteMin int
	// CloseTimeout bounds how long Close waits for the peer to unmap the
	// shared pages; zero means DefaultCloseTimeout. Servers only.
	CloseTimeout time.Duration
}

// Addr is the address of a vchan end: a domain and the xenstore path of
// the channel.
type Addr struct {
	// Domain is the end's domain.
	Domain domid.ID
	// Path is the xenstore directory of the channel.
	Path string
}

// Network returns "vchan".
func (a Addr) Network() string { return "vchan" }

// String returns "<domain>:<path>".
func (a Addr) String() string { return fmt.Sprintf("%d:%s", a.Domain, a.Path) }

// ringView is one direction of the channel as seen by one end.
type ringView struct {
	buf     []byte // 1<<order bytes
	size    uint32
	prodOff int // offset of the producer index in the control page
	consOff int // offset of the consumer index
}

func newRingView(buf []byte, order, prodOff, consOff int) ringView {
	return ringView{buf: buf[:1<<order], size: 1 << order, prodOff: prodOff, consOff: consOff}
}

// Conn is one connected end of a vchan: a byte stream over two rings in
// shared memory. It implements net.Conn; Read and Write may be called
// concurrently with each other.
type Conn struct {
	cfg       Config
	server    bool
	sh        shared
	rd, wr    ringView
	rcons     uint32 // our consumer index of rd, the authoritative copy
	wprod     uint32 // our producer index of wr, the authoritative copy
	port      evtchn.Port
	portBound bool
	epochs    evtchn.Epocher // Config.Events, if it counts resumes
	epoch     uint64         // its epoch when the port was bound
	lost      atomic.Bool    // a resume into a new domain was seen
	gen       atomic.Uint64
	myLive    int // flag byte indexes, by role
	peerLive  int
	myNote    int // the byte we clear-and-test before notifying
	peerNote  int // the byte we set to ask the peer for notifications

	// Server resources.
	ctrlShare      *gnttab.Share
	rdShare, wrShr *gnttab.Share
	// Client resources.
	ctrlMap      *gnttab.Mapping
	rdMap, wrMap *gnttab.Mapping

	rmu, wmu    sync.Mutex // serialise readers, writers
	rdl, wdl    *deadline.Deadline
	closed      atomic.Bool
	writeClosed atomic.Bool
	peerGone    atomic.Bool
	peerDead    atomic.Bool        // the peer's domain is gone (watchPeer)
	stopWatch   context.CancelFunc // ends watchPeer's watch, if any
	failure     atomic.Pointer[error]
	closeOnce   sync.Once
	closeErr    error
	stateMu     sync.Mutex // orders CloseWrite against Close
	teardown    Teardown   // written by Close, under closeOnce
}

// Teardown is what Close did to release a server's shared pages.
type Teardown struct {
	// Refused counts revocations (gnttab Unshare) refused with
	// gnttab.ErrInUse because the peer still mapped a page.
	Refused int
	// Waited is how long the release took: revoking the grants, waiting
	// for the peer to unmap them included.
	Waited time.Duration
	// Background is true when the peer had not unmapped within
	// Config.CloseTimeout and revocation continues in the background.
	Background bool
}

// Teardown reports how Close released the shared pages (zero for a
// client, or before Close has returned).
func (c *Conn) Teardown() Teardown {
	c.stateMu.Lock()
	defer c.stateMu.Unlock()
	return c.teardown
}

func (c *Conn) role() string {
	if c.server {
		return "server"
	}
	return "client"
}

func (c *Conn) peerName() string {
	if c.server {
		return "client"
	}
	return "server"
}

func newConn(cfg Config, server bool, sh shared) *Conn {
	c := &Conn{cfg: cfg, server: server, sh: sh, rdl: deadline.New(), wdl: deadline.New()}
	if server {
		c.myLive, c.peerLive, c.myNote, c.peerNote = flagSrvLive, flagCliLive, flagSrvNotify, flagCliNotify
	} else {
		c.myLive, c.peerLive, c.myNote, c.peerNote = flagCliLive, flagSrvLive, flagCliNotify, flagSrvNotify
	}
	return c
}

// bind records port as the channel's, with the resume epoch it was bound
// in.
func (c *Conn) bind(port evtchn.Port) {
	c.port, c.portBound = port, true
	if e, ok := c.cfg.Events.(evtchn.Epocher); ok {
		c.epochs, c.epoch = e, e.Epoch()
	}
}

// resumed reports whether the domain was resumed as a new domain since
// the port was bound: then the port number may belong to someone else's
// new binding and a client's mappings are gone, so neither may be touched.
func (c *Conn) resumed() bool {
	if c.lost.Load() {
		return true
	}
	if c.epochs != nil && c.epochs.Epoch() != c.epoch {
		c.lost.Store(true)
		return true
	}
	return false
}

// fail records the first protocol error, tells the peer we are gone and
// returns err.
func (c *Conn) fail(err error) error {
	if c.failure.CompareAndSwap(nil, &err) && !c.resumed() {
		c.sh.setFlag(c.myLive, liveClosed)
		c.notify()
	}
	return *c.failure.Load()
}

func (c *Conn) failed() error {
	if p := c.failure.Load(); p != nil {
		return *p
	}
	return nil
}

// notify signals the peer, noting a vanished peer instead of failing.
func (c *Conn) notify() error {
	if c.resumed() {
		return fmt.Errorf("vchan: notify port %d: %w", c.port, ErrResumed)
	}
	err := c.cfg.Events.Notify(c.port)
	if err != nil && errors.Is(err, evtchn.ErrClosed) {
		c.peerGone.Store(true)
	}
	if err != nil {
		return fmt.Errorf("vchan: notify port %d: %w", c.port, err)
	}
	return nil
}

// sendNotify notifies the peer if it asked for the given bit.
func (c *Conn) sendNotify(bit uint8) error {
	if c.sh.clearFlag(c.myNote, bit) {
		return c.notify()
	}
	return nil
}

// readable returns the number of bytes waiting in the read ring.
func (c *Conn) readable() (uint32, error) {
	prod := c.sh.load(c.rd.prodOff)
	n := prod - c.rcons
	if n > c.rd.size {
		return 0, fmt.Errorf("%w: read ring producer %d is %d bytes past consumer %d, ring holds %d",
			ErrProtocol, prod, n, c.rcons, c.rd.size)
	}
	return n, nil
}

// writable returns the free space in the write ring.
func (c *Conn) writable() (uint32, error) {
	cons := c.sh.load(c.wr.consOff)
	used := c.wprod - cons
	if used > c.wr.size {
		return 0, fmt.Errorf("%w: write ring consumer %d is not within %d bytes behind producer %d",
			ErrProtocol, cons, c.wr.size, c.wprod)
	}
	return c.wr.size - used, nil
}

// peerState returns the peer's live state: liveOpen or liveClosed.
func (c *Conn) peerState() (uint8, error) {
	if c.resumed() {
		return 0, ErrResumed
	}
	if c.peerGone.Load() {
		return liveClosed, nil
	}
	v, err := liveState(c.peerName(), c.sh.flag(c.peerLive))
	if err != nil {
		return 0, err
	}
	if v == liveOpen && c.peerDead.Load() {
		return 0, ErrPeerGone
	}
	if v == liveWaiting {
		return 0, fmt.Errorf("%w: %s live state went back to waiting", ErrProtocol, c.peerName())
	}
	return v, nil
}

// wait blocks until the event channel moves past seen or the deadline d
// passes. A nil return means "look again".
func (c *Conn) wait(d *deadline.Deadline, seen evtchn.Generation) error {
	if c.resumed() {
		return ErrResumed
	}
	ctx := d.Context()
	g, err := c.cfg.Events.Wait(ctx, c.port, seen)
	if err == nil {
		for {
			old := c.gen.Load()
			if uint64(g) <= old || c.gen.CompareAndSwap(old, uint64(g)) {
				return nil
			}
		}
	}
	if ctx.Err() != nil {
		switch cause := context.Cause(ctx); cause {
		case deadline.ErrChanged:
			return nil
		default:
			return cause
		}
	}
	if c.closed.Load() {
		return net.ErrClosed
	}
	if errors.Is(err, evtchn.ErrResumed) {
		c.lost.Store(true)
		return ErrResumed
	}
	if errors.Is(err, evtchn.ErrClosed) {
		c.peerGone.Store(true)
		return nil
	}
	return fmt.Errorf("vchan: wait on port %d: %w", c.port, err)
}

func (c *Conn) opErr(op string, err error) error {
	return &net.OpError{Op: op, Net: "vchan", Source: c.LocalAddr(), Addr: c.RemoteAddr(), Err: err}
}

// Read reads data from the channel, blocking until some is available. It
// returns io.EOF once the peer has closed and the ring is drained.
func (c *Conn) Read(p []byte) (int, error) {
	c.rmu.Lock()
	defer c.rmu.Unlock()
	if c.closed.Load() {
		return 0, c.opErr("read", net.ErrClosed)
	}
	if err := c.failed(); err != nil {
		return 0, c.opErr("read", err)
	}
	if err := c.rdl.Expired(); err != nil {
		return 0, c.opErr("read", err)
	}
	if c.resumed() {
		return 0, c.opErr("read", ErrResumed)
	}
	if len(p) == 0 {
		return 0, nil
	}
	for {
		seen := evtchn.Generation(c.gen.Load())
		n, err := c.readable()
		if err == nil && n == 0 {
			// We plan to drain the ring: ask to be told about more
			// data, then look again (the writer may have raced us).
			c.sh.orFlag(c.peerNote, notifyWrite)
			n, err = c.readable()
		}
		if err != nil {
			return 0, c.opErr("read", c.fail(err))
		}
		if n > 0 {
			return c.recv(p, n), nil
		}
		st, err := c.peerState()
		if err != nil {
			return 0, c.opErr("read", c.fail(err))
		}
		if st == liveClosed {
			// The peer wrote its last data before closing.
			if n, err = c.readable(); err != nil {
				return 0, c.opErr("read", c.fail(err))
			}
			if n > 0 {
				return c.recv(p, n), nil
			}
			return 0, io.EOF
		}
		if err := c.wait(c.rdl, seen); err != nil {
			return 0, c.opErr("read", err)
		}
	}
}

// recv copies up to n available bytes into p and releases them.
func (c *Conn) recv(p []byte, n uint32) int {
	if uint32(len(p)) < n {
		n = uint32(len(p))
	}
	idx := c.rcons & (c.rd.size - 1)
	first := min(n, c.rd.size-idx)
	copy(p, c.rd.buf[idx:idx+first])
	copy(p[first:n], c.rd.buf[:n-first])
	c.rcons += n
	c.sh.store(c.rd.consOff, c.rcons)
	c.sendNotify(notifyRead) // a vanished peer shows up as EOF later
	return int(n)
}

// Write writes all of p, blocking while the ring is full. It fails with
// an error wrapping ErrPeerClosed once the peer has closed.
func (c *Conn) Write(p []byte) (int, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.closed.Load() || c.writeClosed.Load() {
		return 0, c.opErr("write", net.ErrClosed)
	}
	if err := c.failed(); err != nil {
		return 0, c.opErr("write", err)
	}
	if err := c.wdl.Expired(); err != nil {
		return 0, c.opErr("write", err)
	}
	if c.resumed() {
		return 0, c.opErr("write", ErrResumed)
	}
	done := 0
	for len(p) > 0 {
		n, err := c.space()
		if err != nil {
			return done, c.opErr("write", err)
		}
		k := min(n, uint32(len(p)))
		if err := c.send(p[:k]); err != nil {
			return done + int(k), c.opErr("write", err)
		}
		p = p[k:]
		done += int(k)
	}
	return done, nil
}

// space waits until the write ring has room and returns how much, or
// fails once the peer has closed (ErrPeerClosed) or broke the protocol.
// c.wmu is held.
func (c *Conn) space() (uint32, error) {
	for {
		seen := evtchn.Generation(c.gen.Load())
		st, err := c.peerState()
		if err != nil {
			return 0, c.fail(err)
		}
		if st != liveOpen {
			return 0, ErrPeerClosed
		}
		n, err := c.writable()
		if err == nil && n == 0 {
			// We plan to fill the ring: ask to be told when the peer
			// consumes, then look again.
			c.sh.orFlag(c.peerNote, notifyRead)
			n, err = c.writable()
		}
		if err != nil {
			return 0, c.fail(err)
		}
		if n > 0 {
			return n, nil
		}
		if err := c.wait(c.wdl, seen); err != nil {
			return 0, err
		}
	}
}

// SendFrom sends what it reads from r until r reports io.EOF (SendFrom
// then returns a nil error) or an error, reading straight into the write
// ring's free space, with no buffer in between: one copy fewer than Write
// from a buffer, which counts for bulk data. As Write, it blocks while the
// ring is full. Unlike Write it holds the write side while r.Read blocks,
// and Close waits for that: use it with readers that do not block
// indefinitely, such as regular files. (For that reason it is not
// io.ReaderFrom's ReadFrom, which io.Copy would use with any reader.)
func (c *Conn) SendFrom(r io.Reader) (int64, error) {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.closed.Load() || c.writeClosed.Load() {
		return 0, c.opErr("sendfrom", net.ErrClosed)
	}
	if err := c.failed(); err != nil {
		return 0, c.opErr("sendfrom", err)
	}
	if err := c.wdl.Expired(); err != nil {
		return 0, c.opErr("sendfrom", err)
	}
	var done int64
	for {
		n, err := c.space()
		if err != nil {
			return done, c.opErr("sendfrom", err)
		}
		// Each read is published at once, even when the free space goes
		// on past the ring's end: the peer starts copying while we read
		// the rest (on the rig, one run each, publishing once per fill measured
		// 37 MB/s dom0 -> domU against 45).
		idx := c.wprod & (c.wr.size - 1)
		k := min(n, c.wr.size-idx)
		m, rerr := r.Read(c.wr.buf[idx : idx+k])
		if m < 0 || m > int(k) {
			return done, c.opErr("sendfrom", fmt.Errorf("vchan: reader returned %d bytes for a %d-byte read", m, k))
		}
		if m > 0 {
			c.wprod += uint32(m)
			c.sh.store(c.wr.prodOff, c.wprod)
			done += int64(m)
			if err := c.sendNotify(notifyWrite); err != nil {
				if c.peerGone.Load() {
					err = fmt.Errorf("%w: %w", ErrPeerClosed, err)
				}
				return done, c.opErr("sendfrom", err)
			}
		}
		if rerr == io.EOF {
			return done, nil
		}
		if rerr != nil {
			return done, rerr
		}
	}
}

// send copies p, which fits, into the write ring and publishes it.
func (c *Conn) send(p []byte) error {
	n := uint32(len(p))
	idx := c.wprod & (c.wr.size - 1)
	first := min(n, c.wr.size-idx)
	copy(c.wr.buf[idx:idx+first], p[:first])
	copy(c.wr.buf[:n-first], p[first:])
	c.wprod += n
	c.sh.store(c.wr.prodOff, c.wprod)
	if err := c.sendNotify(notifyWrite); err != nil {
		if c.peerGone.Load() {
			return fmt.Errorf("%w: %w", ErrPeerClosed, err)
		}
		return err
	}
	return nil
}

// CloseWrite tells the peer we are done: it reads io.EOF once it has
// drained the ring. vchan has no half-close, so, as with libxenvchan, the
// peer can no longer write after this; data it wrote before remains
// readable here until Close.
func (c *Conn) CloseWrite() error {
	c.stateMu.Lock()
	defer c.stateMu.Unlock()
	if c.closed.Load() {
		return c.opErr("closewrite", net.ErrClosed)
	}
	if c.writeClosed.Swap(true) {
		return nil
	}
	c.wdl.Close()
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if !c.resumed() {
		c.sh.setFlag(c.myLive, liveClosed)
		c.notify()
	}
	return nil
}

// RingSizes returns the sizes in bytes of the ring this end reads and of
// the ring it writes.
func (c *Conn) RingSizes() (read, write int) { return int(c.rd.size), int(c.wr.size) }

// LocalAddr returns the local end's domain and the channel's path.
func (c *Conn) LocalAddr() net.Addr { return Addr{Domain: c.cfg.Self, Path: c.cfg.Path} }

// RemoteAddr returns the peer's domain and the channel's path.
func (c *Conn) RemoteAddr() net.Addr { return Addr{Domain: c.cfg.Remote, Path: c.cfg.Path} }

// SetDeadline sets the read and write deadlines. After Close it fails
// with an error wrapping net.ErrClosed, as a net.TCPConn does.
func (c *Conn) SetDeadline(t time.Time) error {
	if c.closed.Load() {
		return c.opErr("set", net.ErrClosed)
	}
	c.rdl.Set(t)
	c.wdl.Set(t)
	return nil
}

// SetReadDeadline sets the deadline for Read calls, pending ones included.
// After Close it fails with an error wrapping net.ErrClosed.
func (c *Conn) SetReadDeadline(t time.Time) error {
	if c.closed.Load() {
		return c.opErr("set", net.ErrClosed)
	}
	c.rdl.Set(t)
	return nil
}

// SetWriteDeadline sets the deadline for Write calls, pending ones
// included. After Close it fails with an error wrapping net.ErrClosed.
func (c *Conn) SetWriteDeadline(t time.Time) error {
	if c.closed.Load() {
		return c.opErr("set", net.ErrClosed)
	}
	c.wdl.Set(t)
	return nil
}

// Close tells the peer we are gone and releases everything: a client
// unmaps the pages and closes its port; a server removes its xenstore
// nodes, revokes its grants once the peer has unmapped them (waiting up to
// Config.CloseTimeout) and closes its port. Pending Reads and Writes fail
// with net.ErrClosed. An error means something could not be released.
func (c *Conn) Close() error {
	c.closeOnce.Do(func() {
		c.stateMu.Lock()
		defer c.stateMu.Unlock()
		c.closed.Store(true)
		if c.stopWatch != nil {
			c.stopWatch()
		}
		if !c.resumed() {
			c.sh.setFlag(c.myLive, liveClosed)
			c.notify()
		}
		c.rdl.Close()
		c.wdl.Close()
		c.rmu.Lock()
		c.wmu.Lock()
		defer c.rmu.Unlock()
		defer c.wmu.Unlock()
		c.closeErr = c.release()
	})
	return c.closeErr
}

// release frees every resource the end holds. After a resume into a new
// domain there is nothing left to give back but the local bookkeeping:
// the grant implementation forgets shares and mappings (reporting
// gnttab.ErrResumed), the port must not be closed (its number may be
// another binding's now) and the xenstore nodes were the old domain's.
func (c *Conn) release() error {
	if c.resumed() {
		return c.releaseResumed()
	}
	var errs []error
	if c.server {
		ctx, cancel := context.WithTimeout(context.Background(), c.closeTimeout())
		defer cancel()
		if err := c.cfg.Store.Rm(ctx, c.cfg.Path); err != nil {
			errs = append(errs, fmt.Errorf("vchan: remove %s: %w", c.cfg.Path, err))
		}
		var pending []*gnttab.Share
		start := time.Now()
		for _, s := range []*gnttab.Share{c.rdShare, c.wrShr, c.ctrlShare} {
			if s == nil {
				continue
			}
			if err := c.unshare(ctx, s); err != nil {
				errs = append(errs, err)
				if errors.Is(err, gnttab.ErrInUse) {
					pending = append(pending, s)
				}
			}
		}
		if len(pending) > 0 {
			// The pages cannot be reused while the peer maps them; keep
			// revoking in the background so they are freed when it lets
			// go.
			c.teardown.Background = true
			go c.reap(pending)
			errs = append(errs, errors.New("vchan: revocation continues in the background"))
		}
		c.teardown.Waited = time.Since(start)
	} else {
		for _, m := range []*gnttab.Mapping{c.rdMap, c.wrMap, c.ctrlMap} {
			if m != nil {
				if err := c.cfg.Memory.Unmap(m); err != nil {
					errs = append(errs, fmt.Errorf("vchan: unmap %v: %w", m.Refs, err))
				}
			}
		}
		// The server may be waiting for us to unmap.
		c.cfg.Events.Notify(c.port)
	}
	if err := c.cfg.Events.Close(c.port); err != nil {
		errs = append(errs, fmt.Errorf("vchan: close port %d: %w", c.port, err))
	}
	return errors.Join(errs...)
}

// releaseResumed is release after a resume into a new domain.
func (c *Conn) releaseResumed() error {
	var errs []error
	for _, s := range []*gnttab.Share{c.rdShare, c.wrShr, c.ctrlShare} {
		if s != nil {
			if err := c.cfg.Memory.Unshare(s); err != nil && !errors.Is(err, gnttab.ErrResumed) {
				errs = append(errs, fmt.Errorf("vchan: unshare %v after a resume: %w", s.Refs, err))
			}
		}
	}
	for _, m := range []*gnttab.Mapping{c.rdMap, c.wrMap, c.ctrlMap} {
		if m != nil {
			if err := c.cfg.Memory.Unmap(m); err != nil && !errors.Is(err, gnttab.ErrResumed) {
				errs = append(errs, fmt.Errorf("vchan: unmap %v after a resume: %w", m.Refs, err))
			}
		}
	}
	return errors.Join(errs...)
}

func (c *Conn) closeTimeout() time.Duration {
	if c.cfg.CloseTimeout > 0 {
		return c.cfg.CloseTimeout
	}
	return DefaultCloseTimeout
}

// reap keeps trying to revoke shares the peer still maps after Close.
func (c *Conn) reap(shares []*gnttab.Share) {
	backoff := 10 * time.Millisecond
	for len(shares) > 0 {
		time.Sleep(backoff)
		backoff = min(2*backoff, time.Second)
		rest := shares[:0]
		for _, s := range shares {
			if err := c.cfg.Memory.Unshare(s); errors.Is(err, gnttab.ErrInUse) {
				rest = append(rest, s)
			}
		}
		shares = rest
	}
}

// unshare revokes s, waiting (on the event channel, with a short backoff
// once the peer's port is gone) while the peer still maps it.
func (c *Conn) unshare(ctx context.Context, s *gnttab.Share) error {
	backoff := time.Millisecond
	for {
		seen := evtchn.Generation(c.gen.Load())
		err := c.cfg.Memory.Unshare(s)
		if err == nil {
			return nil
		}
		if !errors.Is(err, gnttab.ErrInUse) {
			return fmt.Errorf("vchan: unshare %v: %w", s.Refs, err)
		}
		c.teardown.Refused++
		if ctx.Err() != nil {
			return fmt.Errorf("vchan: unshare %v: peer did not unmap within %v: %w", s.Refs, c.closeTimeout(), err)
		}
		g, werr := c.cfg.Events.Wait(ctx, c.port, seen)
		if werr == nil {
			c.gen.Store(uint64(g))
			continue
		}
		if ctx.Err() == nil {
			t := time.NewTimer(backoff)
			select {
			case <-ctx.Done():
			case <-t.C:
			}
			t.Stop()
			backoff = min(2*backoff, 50*time.Millisecond)
		}
	}
}
