package vchan

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"

	"github.com/gozen-dev/gozen/evtchn"
	"github.com/gozen-dev/gozen/gnttab"
)

// Listener is a vchan server waiting for its one client, as
// libxenvchan_server_init leaves it: pages granted, port allocated and
// xenstore nodes written.
type Listener struct {
	c        *Conn
	mu       sync.Mutex
	accepted bool
	closed   bool
}

// Listen sets up the server end of a vchan for client domain cfg.Remote:
// it allocates an unbound event channel, grants the control page (and the
// ring pages of orders >= 12), initialises them as libxenvchan does and
// advertises them under cfg.Path (event-channel, then ring-ref). A store
// that implements PermWriter makes the nodes readable by cfg.Remote only.
func Listen(ctx context.Context, cfg Config) (*Listener, error) {
	if cfg.Events == nil || cfg.Memory == nil || cfg.Store == nil {
		return nil, errors.New("vchan: listen: Config needs Events, Memory and Store")
	}
	rdOrder, wrOrder, err := chooseOrders(cfg.ReadMin, cfg.WriteMin)
	if err != nil {
		return nil, fmt.Errorf("vchan: listen: %w", err)
	}
	port, err := cfg.Events.AllocUnbound(cfg.Remote)
	if err != nil {
		return nil, fmt.Errorf("vchan: listen: allocate port for domain %d: %w", cfg.Remote, err)
	}
	c := newConn(cfg, true, shared{})
	c.bind(port)
	ok := false
	defer func() {
		if !ok {
			c.releaseSetup()
		}
	}()
	c.ctrlShare, err = cfg.Memory.Share(cfg.Remote, 1, true)
	if err != nil {
		return nil, fmt.Errorf("vchan: listen: share control page: %w", err)
	}
	if c.sh, err = newShared(c.ctrlShare.Buf); err != nil {
		return nil, fmt.Errorf("vchan: listen: %w", err)
	}
	clear(c.sh.b[:offGrants])
	ring := func(order int, first int) ([]byte, *gnttab.Share, error) {
		if off, in := inPageOffset(order); in {
			return c.sh.b[off:], nil, nil
		}
		s, err := cfg.Memory.Share(cfg.Remote, ringPages(order), true)
		if err != nil {
			return nil, nil, fmt.Errorf("vchan: listen: share %d ring pages: %w", ringPages(order), err)
		}
		if len(s.Refs) != ringPages(order) || len(s.Buf) < 1<<order {
			return nil, s, fmt.Errorf("vchan: listen: share returned %d refs, %d bytes for order %d", len(s.Refs), len(s.Buf), order)
		}
		for i, r := range s.Refs {
			c.sh.setGrant(first+i, r)
		}
		return s.Buf, s, nil
	}
	// Left is the server's read ring, right its write ring; the grant
	// list holds the left ring's pages first.
	rdBuf, rdShare, err := ring(rdOrder, 0)
	c.rdShare = rdShare
	if err != nil {
		return nil, err
	}
	wrBuf, wrShare, err := ring(wrOrder, ringPages(rdOrder))
	c.wrShr = wrShare
	if err != nil {
		return nil, err
	}
	c.rd = newRingView(rdBuf, rdOrder, offLeftProd, offLeftCons)
	c.wr = newRingView(wrBuf, wrOrder, offRightProd, offRightCons)
	c.sh.setOrders(rdOrder, wrOrder)
	c.sh.setFlag(flagCliLive, liveWaiting)
	c.sh.setFlag(flagSrvLive, liveOpen)
	c.sh.setFlag(flagCliNotify, notifyWrite)
	// event-channel first: a client that sees ring-ref finds both.
	write := cfg.Store.Write
	if pw, ok := cfg.Store.(PermWriter); ok {
		write = func(ctx context.Context, path, value string) error {
			return pw.WriteReadableBy(ctx, path, value, cfg.Remote)
		}
	}
	if err := write(ctx, cfg.Path+"/event-channel", strconv.FormatUint(uint64(port), 10)); err != nil {
		return nil, fmt.Errorf("vchan: listen: advertise: %w", err)
	}
	if err := write(ctx, cfg.Path+"/ring-ref", strconv.FormatUint(uint64(c.ctrlShare.Refs[0]), 10)); err != nil {
		return nil, fmt.Errorf("vchan: listen: advertise: %w", err)
	}
	ok = true
	return &Listener{c: c}, nil
}

// releaseSetup undoes a failed Listen or Dial; nothing was connected, so
// nothing waits for the peer.
func (c *Conn) releaseSetup() {
	if c.resumed() {
		c.releaseResumed()
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.closeTimeout())
	defer cancel()
	if c.sh.b != nil {
		c.sh.setFlag(c.myLive, liveClosed)
	}
	if c.server {
		if c.sh.b != nil {
			c.cfg.Store.Rm(ctx, c.cfg.Path)
		}
		for _, s := range []*gnttab.Share{c.rdShare, c.wrShr, c.ctrlShare} {
			if s != nil {
				c.unshare(ctx, s)
			}
		}
	} else {
		for _, m := range []*gnttab.Mapping{c.rdMap, c.wrMap, c.ctrlMap} {
			if m != nil {
				c.cfg.Memory.Unmap(m)
			}
		}
	}
	if c.portBound {
		c.cfg.Events.Close(c.port)
	}
}

// Addr returns the server's address.
func (l *Listener) Addr() net.Addr { return l.c.LocalAddr() }

// Accept waits until the client has connected (its live flag leaves the
// waiting state) and returns the server end. It succeeds once; afterwards
// the Conn owns every resource. Closing the listener ends a pending
// Accept.
func (l *Listener) Accept(ctx context.Context) (*Conn, error) {
	l.mu.Lock()
	done := l.closed || l.accepted
	l.mu.Unlock()
	c := l.c
	if done {
		return nil, fmt.Errorf("vchan: accept: %w", net.ErrClosed)
	}
	// Holding rmu keeps Close from releasing the page under us; Close
	// wakes us through the read deadline's context.
	c.rmu.Lock()
	defer c.rmu.Unlock()
	if c.closed.Load() {
		return nil, fmt.Errorf("vchan: accept: %w", net.ErrClosed)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	defer context.AfterFunc(c.rdl.Context(), cancel)()
	for {
		seen := evtchn.Generation(c.gen.Load())
		v, err := liveState("client", c.sh.flag(flagCliLive))
		if err != nil {
			return nil, fmt.Errorf("vchan: accept: %w", err)
		}
		if v != liveWaiting {
			// A client that came and went already reads as EOF.
			l.mu.Lock()
			defer l.mu.Unlock()
			if l.closed || l.accepted {
				return nil, fmt.Errorf("vchan: accept: %w", net.ErrClosed)
			}
			l.accepted = true
			c.watchPeer()
			return c, nil
		}
		if c.resumed() {
			return nil, fmt.Errorf("vchan: accept: %w", ErrResumed)
		}
		g, err := c.cfg.Events.Wait(ctx, c.port, seen)
		if err != nil {
			if c.closed.Load() {
				err = net.ErrClosed
			} else if errors.Is(err, evtchn.ErrResumed) {
				c.lost.Store(true)
				err = ErrResumed
			}
			return nil, fmt.Errorf("vchan: accept on port %d: %w", c.port, err)
		}
		c.gen.Store(uint64(g))
	}
}

// Close withdraws a listener that has not handed its Conn to Accept: it
// marks the server closed, removes the xenstore nodes, revokes the grants
// and closes the port. After a successful Accept it does nothing.
func (l *Listener) Close() error {
	l.mu.Lock()
	handed := l.closed || l.accepted
	l.closed = true
	l.mu.Unlock()
	if handed {
		return nil
	}
	return l.c.Close()
}
