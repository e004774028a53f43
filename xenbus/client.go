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
// If the domid is not known, [Dial] reads it from the store. Sub-packages:
// wire (protocol encoding), ring (the shared page), memstore (a xenstore
// server for tests), device (frontend handshake helpers), xen (the guest's
// connection: xen.Default) and control (xl shutdown/reboot handling).
package xenbus

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/gozen-dev/gozen/domid"
	"github.com/gozen-dev/gozen/xenbus/wire"
	"github.com/gozen-dev/gozen/xenbus/xsring"
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
	r    *xsring.Ring
	home atomic.Pointer[string]

	mu      sync.Mutex
	pending map[uint32]*pendingCall
	nextID  uint32
	watches map[string]*Watch
	nextTok uint64
	err     error // set once: ErrClosed or a wrapped ErrConnLost

	dead chan struct{} // closed when err is set
	quit chan struct{} // reader goroutine done

	unknownReplies, unknownWatches, malformedEvents atomic.Uint64
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
	m, err := c.call(ctx, wire.Read, 0, wire.Strings("domid"))
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
	c := &Client{
		r:       r,
		pending: make(map[uint32]*pendingCall),
		watches: make(map[string]*Watch),
		dead:    make(chan struct{}),
		quit:    make(chan struct{}),
	}
	go c.readLoop()
	return c, nil
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
			if errors.Is(err, xsring.ErrClosed) {
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
// an error wrapping xsring.ErrDetached), the reply is discarded when it
// comes and late, if not nil, is run on it in a new goroutine.
func (c *Client) callLate(ctx context.Context, t wire.Type, tx uint32, payload []byte, late func(wire.Msg)) (wire.Msg, error) {
	if len(payload) > wire.PayloadMax {
		return wire.Msg{}, fmt.Errorf("%w: %s payload of %d bytes, max %d", wire.ErrTooLong, t, len(payload), wire.PayloadMax)
	}
	p := &pendingCall{ch: make(chan wire.Msg, 1)}
	c.mu.Lock()
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
	if errors.Is(err, xsring.ErrDetached) {
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

// abs resolves p against the home and validates it.
func (c *Client) abs(p string) (string, error) {
	if p != "" && p[0] != '/' {
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
