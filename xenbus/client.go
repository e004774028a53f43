// Package xenbus is the xenstore client of Gozen guests: it talks to
// xenstored over the shared ring page and event channel that Xen gives
// every domain, in portable Go that also runs on the host against the
// in-process store of package xenbus/memstore.
//
// In the guest, map the store page (HVM_PARAM_STORE_PFN) and take the
// already-bound port (HVM_PARAM_STORE_EVTCHN), then:
//
//	c, err := xenbus.New(page, xsring.EventChannel(events, port), domid)
//	defer c.Close()
//	v, err := c.ReadString(ctx, "name") // relative to /local/domain/<domid>
//
// If the domid is not known, [Dial] reads it from the store. On the host,
// [DialUnix] connects to a store serving the same protocol on a Unix
// socket (xenstored's socket, or package memstore's for tests and
// two-process rigs). Sub-packages: wire (protocol encoding), xsring (the
// shared page), xssock (the socket framing), memstore (a xenstore server
// for tests), device (frontend handshake helpers), xen (the guest's
// connection: xen.Default) and control (xl shutdown/reboot handling).
package xenbus

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gozen-dev/gozen/domid"
	"github.com/gozen-dev/gozen/xenbus/wire"
	"github.com/gozen-dev/gozen/xenbus/xsring"
	"github.com/gozen-dev/gozen/xenbus/xssock"
)

// ErrClosed is returned by calls on a closed Client.
var ErrClosed = errors.New("xenbus: client closed")

// ErrConnLost wraps the error that broke the connection (a corrupt ring,
// a failed event channel); every later call fails with it.
var ErrConnLost = errors.New("xenbus: connection lost")

// Stats counts anomalies the reader goroutine tolerated.
type Stats struct {
	// UnknownReplies counts replies whose req_id matched no request.
	UnknownReplies uint64
	// UnknownWatches counts watch events with an unknown token.
	UnknownWatches uint64
	// MalformedEvents counts unparseable WATCH_EVENT messages.
	MalformedEvents uint64
}

// Client is a xenstore connection. All methods are safe for concurrent
// use: requests are matched to replies by req_id, and one reader goroutine
// dispatches replies and watch events.
type Client struct {
	r    Transport
	home atomic.Pointer[string]

	mu      sync.Mutex
	pending map[uint32]*pendingCall
	nextID  uint32
	watches map[string]*Watch
	nextTok uint64
	err     error // set once: ErrClosed or a wrapped ErrConnLost

	dead chan struct{} // closed when err is set
	quit chan struct{} // reader goroutine done

	// gate is non-nil while suspended: new calls wait for it to close.
	gate chan struct{}
	// readerOff is set from Suspend to Resume: a reader that fails
	// meanwhile (its event channel lost by a resume into a new domain)
	// leaves quietly instead of failing the client, and readerGone says
	// it did.
	readerOff, readerGone bool

	unknownReplies, unknownWatches, malformedEvents atomic.Uint64
}

// Transport moves whole xenstore messages between a Client and the store.
// The shared ring of a guest (*xsring.Ring) is one; a socket speaking
// xenstored's framing (*xssock.Conn), and a Linux domain's
// /dev/xen/xenbus device or xenstored's socket (package xenbus/xslinux)
// are others. Like xsring.Ring, a Transport's ReadMsg and WriteMsg may be
// called concurrently with each other, WriteMsg returns an error wrapping
// xsring.ErrDetached if ctx ended with the message partly sent (it is
// then finished in the background), and after Close both fail with an
// error wrapping xsring.ErrClosed.
type Transport interface {
	// WriteMsg sends one request.
	WriteMsg(ctx context.Context, m wire.Msg) error
	// ReadMsg receives the next reply or watch event.
	ReadMsg(ctx context.Context) (wire.Msg, error)
	// Close makes pending and later calls fail.
	Close() error
}

var (
	_ Transport = (*xsring.Ring)(nil)
	_ Transport = (*xssock.Conn)(nil)
)

// closedErr reports whether err says the transport was closed locally.
func closedErr(err error) bool {
	return errors.Is(err, xsring.ErrClosed) || errors.Is(err, xssock.ErrClosed)
}

// detachedErr reports whether err says a request was left to finish in
// the background (the store will answer it).
func detachedErr(err error) bool {
	return errors.Is(err, xsring.ErrDetached) || errors.Is(err, xssock.ErrDetached)
}

type pendingCall struct {
	ch      chan wire.Msg  // buffered 1
	onLate  func(wire.Msg) // set when the caller gave up
	abandon bool
}

// New starts a client on the xenstore page (struct
// xenstore_domain_interface, as in io/xs_wire.h) with notifier n, for
// domain domid: relative paths are taken relative to
// /local/domain/<domid>. The page is used from the guest side: requests
// are produced, responses consumed. Close releases the reader goroutine
// but neither the page nor the notifier, which belong to the caller.
func New(page []byte, n xsring.Notifier, domid domid.ID) (*Client, error) {
	c, err := newClient(page, n)
	if err != nil {
		return nil, err
	}
	c.setHome(wire.DomainPath(domid))
	return c, nil
}

// Dial is New for a domain that does not know its domid: it reads the
// relative key "domid" (which the toolstack writes in every domain's home)
// and sets the home from it.
func Dial(ctx context.Context, page []byte, n xsring.Notifier) (*Client, error) {
	c, err := newClient(page, n)
	if err != nil {
		return nil, err
	}
	return c.learnHome(ctx)
}

// NewTransport is New over transport t instead of a shared ring page:
// relative paths are taken relative to /local/domain/<domid>. Close
// closes t.
func NewTransport(t Transport, domid domid.ID) *Client {
	c := newOn(t)
	c.setHome(wire.DomainPath(domid))
	return c
}

// DialTransport is Dial over transport t: it reads the domain's id from
// the store. On failure t is closed.
func DialTransport(ctx context.Context, t Transport) (*Client, error) {
	return newOn(t).learnHome(ctx)
}

// DialUnix connects to a store serving the xenstore wire protocol on the
// Unix socket at path (package xssock's framing, as xenstored's socket)
// and, as Dial, learns the domain's home from the store's answer to the
// relative key "domid". Which domain the connection acts as is the
// store's choice (xenstored: dom0; memstore: the domain its listener
// serves). Close closes the socket.
func DialUnix(ctx context.Context, path string) (*Client, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "unix", path)
	if err != nil {
		return nil, fmt.Errorf("xenbus: %w", err)
	}
	return DialConn(ctx, nc)
}

// DialConn is DialUnix on an established stream nc, which the client
// owns from now on (Close closes it, as does a failure here).
func DialConn(ctx context.Context, nc net.Conn) (*Client, error) {
	return newOn(xssock.New(nc)).learnHome(ctx)
}

// learnHome reads the relative key "domid" and sets the home from it; on
// failure it closes c.
func (c *Client) learnHome(ctx context.Context) (*Client, error) {
	m, err := c.call(ctx, wire.Read, 0, wire.Strings("domid"))
	if err == nil {
		err = wire.CheckReply(m, wire.Read)
	}
	if err == nil {
		var d uint64
		d, err = strconv.ParseUint(string(m.Payload), 10, 16)
		if err != nil {
			err = fmt.Errorf("%w: domid %q", wire.ErrMalformed, m.Payload)
		} else {
			c.setHome(wire.DomainPath(domid.ID(d)))
		}
	}
	if err != nil {
		c.Close()
		return nil, fmt.Errorf("xenbus: reading our domid: %w", err)
	}
	return c, nil
}

func newClient(page []byte, n xsring.Notifier) (*Client, error) {
	r, err := xsring.New(page, xsring.Client, n)
	if err != nil {
		return nil, fmt.Errorf("xenbus: %w", err)
	}
	return newOn(r), nil
}

// newOn starts a client on the transport t.
func newOn(t Transport) *Client {
	c := &Client{
		r:       t,
		pending: make(map[uint32]*pendingCall),
		watches: make(map[string]*Watch),
		dead:    make(chan struct{}),
		quit:    make(chan struct{}),
	}
	go c.readLoop()
	return c
}

func (c *Client) setHome(h string) { c.home.Store(&h) }

// Home returns the domain's home path, /local/domain/<domid>.
func (c *Client) Home() string {
	if h := c.home.Load(); h != nil {
		return *h
	}
	return ""
}

// Stats returns the counts of tolerated anomalies so far.
func (c *Client) Stats() Stats {
	return Stats{
		UnknownReplies:  c.unknownReplies.Load(),
		UnknownWatches:  c.unknownWatches.Load(),
		MalformedEvents: c.malformedEvents.Load(),
	}
}

// Close stops the client: pending and later calls fail with ErrClosed and
// every watch channel is closed. Watches are not unregistered from the
// server (use Watch.Unwatch first if the connection is to be reused).
func (c *Client) Close() error {
	c.fail(ErrClosed)
	c.r.Close()
	<-c.quit
	return nil
}

// ErrSuspended is wrapped by Suspend when the client cannot quiesce.
var ErrSuspended = errors.New("xenbus: suspend refused")

// Suspend quiesces the client before the domain suspends: later calls wait
// until Resume, and Suspend waits (until ctx ends) for the replies to the
// requests already sent, abandoned ones included, so that no reply is lost
// in the ring when the domain moves. If ctx ends first, the client is
// resumed as it was and the error wraps ErrSuspended and ctx's error.
func (c *Client) Suspend(ctx context.Context) error {
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return fmt.Errorf("xenbus: suspend: %w", err)
	}
	if c.gate != nil {
		c.mu.Unlock()
		return fmt.Errorf("xenbus: suspend: already suspended: %w", ErrSuspended)
	}
	c.gate = make(chan struct{})
	c.readerOff = true
	c.mu.Unlock()
	for {
		c.mu.Lock()
		n, err := len(c.pending), c.err
		c.mu.Unlock()
		if n == 0 || err != nil {
			return nil
		}
		select {
		case <-ctx.Done():
			c.open()
			return fmt.Errorf("xenbus: suspend: %d requests still in flight: %w (%w)", n, ErrSuspended, ctx.Err())
		case <-c.dead:
		case <-time.After(time.Millisecond):
		}
	}
}

// open lets calls through again after Suspend.
func (c *Client) open() {
	c.mu.Lock()
	c.readerOff = false
	if c.gate != nil {
		close(c.gate)
		c.gate = nil
	}
	c.mu.Unlock()
}

// Resume ends a Suspend. With cancelled true the domain did not move and
// the connection goes on as it was; page and n are then ignored and may be
// nil. Otherwise this is a new domain: the client stops its reader, takes
// the store ring at page with notifier n (the toolstack has reset the
// page), starts a new reader, learns its domid again from the store (a
// restored or migrated domain has a new one: the home, and the watches
// under it, move to the new /local/domain/<domid>) and registers every
// live watch again (the store fires each once, as for a new watch); calls
// waiting meanwhile then go on. Watches the store refuses end (their channel closes) and are
// reported in the error; the client stays usable.
func (c *Client) Resume(ctx context.Context, cancelled bool, page []byte, n xsring.Notifier) error {
	c.mu.Lock()
	suspended, err := c.gate != nil, c.err
	c.mu.Unlock()
	if !suspended {
		return fmt.Errorf("xenbus: resume: not suspended")
	}
	if err != nil || cancelled {
		c.mu.Lock()
		gone := c.readerGone
		c.mu.Unlock()
		if err == nil && gone {
			err = fmt.Errorf("%w: the reader stopped while suspended and the domain did not move", ErrConnLost)
			c.fail(err)
		}
		c.open()
		if err != nil {
			return fmt.Errorf("xenbus: resume: %w", err)
		}
		return nil
	}
	r, rerr := xsring.New(page, xsring.Client, n)
	if rerr != nil {
		c.fail(fmt.Errorf("%w: resume: %w", ErrConnLost, rerr))
		c.open()
		return fmt.Errorf("xenbus: resume: %w", rerr)
	}
	c.mu.Lock()
	old := c.r
	c.mu.Unlock()
	old.Close()
	<-c.quit
	c.mu.Lock()
	c.r = r
	c.readerOff, c.readerGone = false, false
	c.quit = make(chan struct{})
	// Replies to requests sent before the suspend were waited for; any
	// left (an abandoned call's late reply) will never come.
	c.pending = make(map[uint32]*pendingCall)
	ws := make([]*Watch, 0, len(c.watches))
	for _, w := range c.watches {
		ws = append(ws, w)
	}
	c.mu.Unlock()
	go c.readLoop()
	var errs []error
	if err := c.rehome(ctx, ws); err != nil {
		errs = append(errs, err)
	}
	for _, w := range ws {
		p := w.Path()
		m, err := c.send(ctx, wire.Watch, 0, wire.Strings(p, w.token), nil, false)
		if err == nil {
			err = wire.CheckReply(m, wire.Watch)
		}
		if err == nil {
			err = okReply(m, p)
		}
		if err != nil && !errors.Is(err, wire.ErrExist) {
			c.mu.Lock()
			delete(c.watches, w.token)
			c.mu.Unlock()
			w.stop()
			errs = append(errs, fmt.Errorf("xenbus: resume: watch %s: %w", p, err))
		}
	}
	c.open()
	return errors.Join(errs...)
}

// rehome asks the store, on the new connection, which domain this is (the
// relative key "domid", resolved by the store): a domain restored or
// migrated has a new domid, and with it a new home. Relative paths then
// resolve under the new home, and the watches ws under the old home are
// moved there, so that they are registered again where the domain's nodes
// now are.
func (c *Client) rehome(ctx context.Context, ws []*Watch) error {
	m, err := c.send(ctx, wire.Read, 0, wire.Strings("domid"), nil, false)
	if err == nil {
		err = wire.CheckReply(m, wire.Read)
	}
	if err != nil {
		return fmt.Errorf("xenbus: resume: reading our domid: %w", err)
	}
	d, err := strconv.ParseUint(string(m.Payload), 10, 16)
	if err != nil {
		return fmt.Errorf("xenbus: resume: domid %q: %w", m.Payload, wire.ErrMalformed)
	}
	old, home := c.Home(), wire.DomainPath(domid.ID(d))
	if old == home {
		return nil
	}
	c.setHome(home)
	for _, w := range ws {
		if p := w.Path(); p == old || strings.HasPrefix(p, old+"/") {
			np := home + p[len(old):]
			w.path.Store(&np)
		}
	}
	return nil
}

// Err returns nil while the client is usable, else why it is not.
func (c *Client) Err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// fail records the first fatal error and wakes everyone.
func (c *Client) fail(err error) {
	c.mu.Lock()
	if c.err != nil {
		c.mu.Unlock()
		return
	}
	c.err = err
	ws := c.watches
	c.watches = make(map[string]*Watch)
	c.pending = make(map[uint32]*pendingCall)
	close(c.dead)
	c.mu.Unlock()
	for _, w := range ws {
		w.stop()
	}
}

func (c *Client) readLoop() {
	defer close(c.quit)
	for {
		m, err := c.r.ReadMsg(context.Background())
		if err != nil {
			c.mu.Lock()
			off := c.readerOff
			if off {
				c.readerGone = true
			}
			c.mu.Unlock()
			if off {
				return // Resume takes a new ring, or fails the client
			}
			if closedErr(err) {
				c.fail(ErrClosed)
			} else {
				c.fail(fmt.Errorf("%w: %w", ErrConnLost, err))
			}
			return
		}
		if m.Type == wire.WatchEvent {
			c.dispatchWatch(m)
			continue
		}
		c.mu.Lock()
		p := c.pending[m.ReqID]
		delete(c.pending, m.ReqID)
		c.mu.Unlock()
		switch {
		case p == nil:
			c.unknownReplies.Add(1)
		case p.abandon:
			if p.onLate != nil {
				go p.onLate(m)
			}
		default:
			p.ch <- m
		}
	}
}

// call sends one request and waits for its reply (of any type; see
// wire.CheckReply). If ctx ends first the reply is discarded when it
// comes (see callLate).
func (c *Client) call(ctx context.Context, t wire.Type, tx uint32, payload []byte) (wire.Msg, error) {
	return c.callLate(ctx, t, tx, payload, nil)
}

// callLate is call with a callback for a reply that comes after the
// caller gave up: if ctx ends once the request was sent, or while it was
// partly written (the ring then finishes it in the background and returns
// an error wrapping xsring.ErrDetached or xssock.ErrDetached), the reply is discarded when it
// comes and late, if not nil, is run on it in a new goroutine.
func (c *Client) callLate(ctx context.Context, t wire.Type, tx uint32, payload []byte, late func(wire.Msg)) (wire.Msg, error) {
	return c.send(ctx, t, tx, payload, late, true)
}

// waitOpen waits while the client is suspended, until ctx ends or the
// client fails.
func (c *Client) waitOpen(ctx context.Context) {
	c.mu.Lock()
	gate, err := c.gate, c.err
	c.mu.Unlock()
	if gate == nil || err != nil {
		return
	}
	select {
	case <-gate:
	case <-c.dead:
	case <-ctx.Done():
	}
}

// send is callLate; gated calls wait while the client is suspended (only
// Resume's own requests are not gated).
func (c *Client) send(ctx context.Context, t wire.Type, tx uint32, payload []byte, late func(wire.Msg), gated bool) (wire.Msg, error) {
	if len(payload) > wire.PayloadMax {
		return wire.Msg{}, fmt.Errorf("%w: %s payload of %d bytes, max %d", wire.ErrTooLong, t, len(payload), wire.PayloadMax)
	}
	p := &pendingCall{ch: make(chan wire.Msg, 1)}
	c.mu.Lock()
	for gated && c.gate != nil && c.err == nil {
		gate := c.gate
		c.mu.Unlock()
		select {
		case <-gate:
		case <-c.dead:
		case <-ctx.Done():
			return wire.Msg{}, fmt.Errorf("xenbus: waiting for the store to resume: %w", ctx.Err())
		}
		c.mu.Lock()
	}
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return wire.Msg{}, err
	}
	id := c.nextID
	for {
		id++
		if _, busy := c.pending[id]; !busy && id != 0 {
			break
		}
	}
	c.nextID = id
	c.pending[id] = p
	c.mu.Unlock()

	err := c.r.WriteMsg(ctx, wire.Msg{Header: wire.Header{Type: t, ReqID: id, TxID: tx}, Payload: payload})
	if detachedErr(err) {
		// ctx ended with the request partly written; the ring finishes it
		// in the background, so the store will answer it: keep the entry
		// for the late reply, as when ctx ends after sending.
		return c.abandon(id, p, late, err)
	}
	if err != nil {
		c.mu.Lock()
		delete(c.pending, id)
		c.mu.Unlock()
		if e := c.Err(); e != nil {
			return wire.Msg{}, e
		}
		return wire.Msg{}, err
	}
	select {
	case m := <-p.ch:
		return m, nil
	case <-c.dead:
		return wire.Msg{}, c.Err()
	case <-ctx.Done():
		return c.abandon(id, p, late, ctx.Err())
	}
}

// abandon gives up waiting for the reply to request id, whose pending
// entry is p: the reply is discarded when it comes, and late is then run
// on it if not nil. abandon returns err, unless the reply already came
// (it raced with the caller giving up): the reply is then returned, so
// that the caller learns what the store did.
func (c *Client) abandon(id uint32, p *pendingCall, late func(wire.Msg), err error) (wire.Msg, error) {
	c.mu.Lock()
	if q, ok := c.pending[id]; ok {
		q.abandon, q.onLate = true, late
		c.mu.Unlock()
		return wire.Msg{}, err
	}
	c.mu.Unlock()
	// The reply raced with the cancellation, or the client died.
	select {
	case m := <-p.ch:
		return m, nil
	case <-c.dead:
		return wire.Msg{}, c.Err()
	}
}

// request performs a call and checks the reply type, wrapping errors with
// the operation and path.
func (c *Client) request(ctx context.Context, t wire.Type, tx uint32, what string, payload []byte) (wire.Msg, error) {
	m, err := c.call(ctx, t, tx, payload)
	if err == nil {
		err = wire.CheckReply(m, t)
	}
	if err != nil {
		return wire.Msg{}, fmt.Errorf("xenstore %s %s: %w", t, what, err)
	}
	return m, nil
}

// abs resolves p against the home and validates it. A relative path is
// resolved once the client is not suspended (or ctx ends), since a resume
// into a restored domain may move the home.
func (c *Client) abs(ctx context.Context, p string) (string, error) {
	if p != "" && p[0] != '/' {
		c.waitOpen(ctx) // on failure, send reports it
		p = c.Home() + "/" + p
	}
	if err := wire.CheckPath(p, false); err != nil {
		return "", fmt.Errorf("xenbus: %w", err)
	}
	return p, nil
}

// GetDomainPath asks the store for the home path of domain d.
func (c *Client) GetDomainPath(ctx context.Context, d domid.ID) (string, error) {
	ds := strconv.FormatUint(uint64(d), 10)
	m, err := c.request(ctx, wire.GetDomainPath, 0, "domain "+ds, wire.Strings(ds))
	if err != nil {
		return "", err
	}
	s, err := wire.SingleString(m.Payload)
	if err != nil {
		return "", fmt.Errorf("xenstore GET_DOMAIN_PATH %s: %w", ds, err)
	}
	return s, nil
}
