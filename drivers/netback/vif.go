package netback

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/gozen-dev/gozen/domid"
	"github.com/gozen-dev/gozen/drivers/netif"
	"github.com/gozen-dev/gozen/drivers/ring"
	"github.com/gozen-dev/gozen/evtchn"
	"github.com/gozen-dev/gozen/gnttab"
	"github.com/gozen-dev/gozen/xenbus/device"
	"github.com/gozen-dev/gozen/xenbus/wire"
)

// closeWait bounds the waits of the close handshake.
const closeWait = 5 * time.Second

// VIF serves one frontend's network device.
type VIF struct {
	b   *device.Backend
	o   Options
	ctx context.Context
	end context.CancelFunc

	done chan struct{}

	mu      sync.Mutex
	c       *conn
	changed chan struct{} // closed when c changes
	errs    []error
	stats   Stats

	rxMu    sync.Mutex
	frameMu sync.Mutex // one OnFrame call at a time
}

// Stats counts a backend's traffic and failures.
type Stats struct {
	// Connections counts the connections made.
	Connections int
	// Queues is the number of queues of the last connection.
	Queues int
	// TXFrames counts frames received from the frontend (its transmits),
	// RXFrames frames given to it.
	TXFrames, RXFrames int
	// TXErrors counts transmitted packets answered with an error status.
	TXErrors int
	// QueueTXFrames and QueueRXFrames count TXFrames and RXFrames per
	// queue number, over every connection.
	QueueTXFrames, QueueRXFrames []int
}

// conn is one connection to the frontend: its queues.
type conn struct {
	ev     evtchn.Events
	mem    gnttab.SharedMemory
	front  domid.ID
	qs     []*queue
	ctx    context.Context
	cancel context.CancelCauseFunc
}

// queue is one pair of rings of a connection, with its event channel(s).
type queue struct {
	index          int // queue-<index> in xenstore
	txMap, rxMap   *gnttab.Mapping
	tx, rx         *ring.Back
	txPort, rxPort evtchn.Port
	txDone         chan struct{} // closed when txLoop ends (or never started)
	rxSeen         evtchn.Generation
}

// Serve starts serving the device b (opened with device.OpenBackend)
// until Close: it publishes the features, goes InitWait and follows the
// frontend.
func Serve(ctx context.Context, b *device.Backend, o Options) (*VIF, error) {
	if o.Events == nil || o.Grants == nil {
		return nil, fmt.Errorf("netback %s: Options need Events and Grants", b.Name())
	}
	v := &VIF{b: b, o: o, done: make(chan struct{}), changed: make(chan struct{})}
	v.ctx, v.end = context.WithCancel(ctx)
	go v.run()
	return v, nil
}

// Close stops serving: the connection is dropped (rings unmapped, ports
// closed) and our state goes Closed.
func (v *VIF) Close() error {
	v.end()
	<-v.done
	return nil
}

// Errors returns the failures of the connections so far (protocol errors
// of the frontend, failed handshakes).
func (v *VIF) Errors() []error {
	v.mu.Lock()
	defer v.mu.Unlock()
	return append([]error(nil), v.errs...)
}

// Stats returns the counters.
func (v *VIF) Stats() Stats {
	v.mu.Lock()
	defer v.mu.Unlock()
	st := v.stats
	st.QueueTXFrames = slices.Clone(st.QueueTXFrames)
	st.QueueRXFrames = slices.Clone(st.QueueRXFrames)
	return st
}

// countLocked adds one to the counter of queue q in *per.
func countLocked(per *[]int, q int) {
	for len(*per) <= q {
		*per = append(*per, 0)
	}
	(*per)[q]++
}

func (v *VIF) fail(err error) {
	v.mu.Lock()
	v.errs = append(v.errs, err)
	v.mu.Unlock()
}

func (v *VIF) setConn(c *conn) {
	v.mu.Lock()
	v.c = c
	if c != nil {
		v.stats.Connections++
		v.stats.Queues = len(c.qs)
	}
	close(v.changed)
	v.changed = make(chan struct{})
	v.mu.Unlock()
}

// Link reports whether a frontend is connected now, and returns a
// channel that is closed at the next change: a connection made or
// dropped. A user whose OnFrame may wait (a queue full) waits for this
// channel too, since a dropped connection's teardown waits for OnFrame.
func (v *VIF) Link() (connected bool, changed <-chan struct{}) {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.c != nil && v.c.ctx.Err() == nil, v.changed
}

// Done returns a channel that is closed once the VIF has stopped serving
// (Close, or the context given to Serve ended).
func (v *VIF) Done() <-chan struct{} { return v.done }

// WaitConnected waits until a frontend is connected.
func (v *VIF) WaitConnected(ctx context.Context) error {
	_, err := v.current(ctx)
	return err
}

func (v *VIF) current(ctx context.Context) (*conn, error) {
	for {
		v.mu.Lock()
		c, ch := v.c, v.changed
		v.mu.Unlock()
		if c != nil && c.ctx.Err() == nil {
			return c, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-v.done:
			return nil, fmt.Errorf("netback %s: %w", v.b.Name(), ErrClosed)
		}
	}
}

// waitFront waits until the frontend's state is one of want (a missing
// node reads Unknown), or ctx ends.
func (v *VIF) waitFront(ctx context.Context, want ...device.State) (device.State, error) {
	var got device.State
	err := v.b.Store().WaitFor(ctx, v.b.Frontend+"/state", func() (bool, error) {
		var err error
		got, err = v.b.FrontendState(ctx)
		if err != nil {
			return false, err
		}
		for _, w := range want {
			if got == w {
				return true, nil
			}
		}
		return false, nil
	})
	return got, err
}

// run is the backend's state machine (Linux netback's frontend_changed).
func (v *VIF) run() {
	defer close(v.done)
	ctx := v.ctx
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), closeWait)
		v.b.SwitchState(cctx, device.Closed)
		cancel()
	}()
	for ctx.Err() == nil {
		kvs := []device.KV{{Key: "feature-rx-copy", Value: "1"}, {Key: "feature-rx-flip", Value: "0"}}
		for _, f := range []struct {
			k  string
			on bool
		}{{"feature-sg", v.o.SG}, {"feature-gso-tcpv4", v.o.GSOTCPv4}, {"feature-gso-tcpv6", v.o.GSOTCPv6}, {"feature-split-event-channels", v.o.SplitEventChannels}} {
			if f.on {
				kvs = append(kvs, device.KV{Key: f.k, Value: "1"})
			}
		}
		if v.o.MaxQueues > 0 {
			kvs = append(kvs, device.Uint("multi-queue-max-queues", uint(v.o.MaxQueues)))
		}
		if err := v.b.Publish(ctx, kvs, device.InitWait); err != nil {
			v.fail(err)
			return
		}
		// Like Linux's netback: connect when the frontend is Connected
		// (its rings published); Initialised is not enough.
		st, err := v.waitFront(ctx, device.Connected, device.Closing, device.Closed, device.Unknown)
		if err != nil {
			return
		}
		if st == device.Connected {
			c, err := v.connect(ctx)
			if err != nil {
				v.fail(err)
			} else {
				v.setConn(c)
				for _, q := range c.qs {
					go v.txLoop(c, q)
				}
				st, err = v.waitConnected(c)
				v.setConn(nil)
				v.teardown(c)
				if err != nil {
					return
				}
				if st == device.Initialising {
					continue // the frontend reconnects
				}
			}
		}
		if st == device.Unknown {
			return
		}
		cctx, cancel := context.WithTimeout(ctx, closeWait)
		v.b.Disconnect(cctx, closeWait)
		cancel()
		st, err = v.waitFront(ctx, device.Initialising, device.Unknown)
		if err != nil || st == device.Unknown {
			return
		}
	}
}

// waitConnected follows a connected frontend until it leaves, or the
// connection broke (its state is then reported as Closing).
func (v *VIF) waitConnected(c *conn) (device.State, error) {
	st, err := v.waitFront(c.ctx, device.Closing, device.Closed, device.Unknown, device.Initialising)
	if err != nil && v.ctx.Err() == nil && c.ctx.Err() != nil {
		return device.Closing, nil
	}
	return st, err
}

// connect reads the frontend's keys, maps its rings and binds its ports.
func (v *VIF) connect(ctx context.Context) (_ *conn, err error) {
	b := v.b
	c := &conn{ev: v.o.Events, mem: v.o.Grants, front: b.FrontendID}
	c.ctx, c.cancel = context.WithCancelCause(v.ctx)
	defer func() {
		// c, not the result: a failing return sets that to nil.
		if err != nil {
			v.teardown(c)
			err = fmt.Errorf("netback %s: connecting: %w", b.Name(), err)
		}
	}()
	if ok, err := b.FrontendFlag(ctx, "request-rx-copy"); err != nil || !ok {
		return nil, errors.Join(err, fmt.Errorf("%w: the frontend did not request rx-copy", ErrProtocol))
	}
	nq := uint64(1)
	if n, err := b.ReadFrontendUint(ctx, "multi-queue-num-queues", 32); err == nil {
		nq = n
	} else if !errors.Is(err, wire.ErrNotExist) {
		return nil, fmt.Errorf("%w: %w", ErrProtocol, err)
	}
	if nq == 0 || nq > uint64(max(1, v.o.MaxQueues)) {
		return nil, fmt.Errorf("%w: multi-queue-num-queues %d, 1 to %d offered", ErrProtocol, nq, max(1, v.o.MaxQueues))
	}
	// Every queue's keys are read before anything is mapped.
	type queueKeys struct{ txRef, rxRef, txPort, rxPort uint64 }
	keys := make([]queueKeys, nq)
	for i := range keys {
		dir := ""
		if nq > 1 {
			dir = "queue-" + strconv.Itoa(i) + "/"
		}
		k := &keys[i]
		if k.txRef, err = b.ReadFrontendUint(ctx, dir+"tx-ring-ref", 32); err != nil {
			return nil, err
		}
		if k.rxRef, err = b.ReadFrontendUint(ctx, dir+"rx-ring-ref", 32); err != nil {
			return nil, err
		}
		if k.txPort, err = b.ReadFrontendUint(ctx, dir+"event-channel", 32); err == nil {
			k.rxPort = k.txPort
		} else if v.o.SplitEventChannels {
			if k.txPort, err = b.ReadFrontendUint(ctx, dir+"event-channel-tx", 32); err != nil {
				return nil, err
			}
			if k.rxPort, err = b.ReadFrontendUint(ctx, dir+"event-channel-rx", 32); err != nil {
				return nil, err
			}
		} else {
			return nil, err
		}
	}
	for i, k := range keys {
		q := &queue{index: i, txDone: make(chan struct{})}
		close(q.txDone) // until txLoop runs
		c.qs = append(c.qs, q)
		if q.txMap, err = c.mem.Map(c.front, []gnttab.Ref{gnttab.Ref(k.txRef)}, true); err != nil {
			return nil, fmt.Errorf("queue %d: %w", i, err)
		}
		if q.rxMap, err = c.mem.Map(c.front, []gnttab.Ref{gnttab.Ref(k.rxRef)}, true); err != nil {
			return nil, fmt.Errorf("queue %d: %w", i, err)
		}
		if q.tx, err = ring.NewBack(q.txMap.Buf, netif.TxLayout); err != nil {
			return nil, err
		}
		if q.rx, err = ring.NewBack(q.rxMap.Buf, netif.RxLayout); err != nil {
			return nil, err
		}
		if q.txPort, err = c.ev.BindInterdomain(c.front, evtchn.Port(k.txPort)); err != nil {
			return nil, fmt.Errorf("queue %d: %w", i, err)
		}
		q.rxPort = q.txPort
		if k.rxPort != k.txPort {
			if q.rxPort, err = c.ev.BindInterdomain(c.front, evtchn.Port(k.rxPort)); err != nil {
				q.rxPort = 0
				return nil, fmt.Errorf("queue %d: %w", i, err)
			}
		}
	}
	for _, q := range c.qs {
		q.txDone = make(chan struct{})
	}
	if err := b.SwitchState(ctx, device.Connected); err != nil {
		for _, q := range c.qs {
			close(q.txDone)
		}
		return nil, err
	}
	return c, nil
}

// teardown stops the connection's loops, unmaps the rings and closes the
// ports.
func (v *VIF) teardown(c *conn) {
	c.cancel(nil)
	for _, q := range c.qs {
		<-q.txDone
	}
	v.rxMu.Lock() // no Send in the middle of the rings
	defer v.rxMu.Unlock()
	for _, q := range c.qs {
		for _, m := range []*gnttab.Mapping{q.txMap, q.rxMap} {
			if m != nil {
				if err := c.mem.Unmap(m); err != nil {
					v.fail(err)
				}
			}
		}
		q.txMap, q.rxMap = nil, nil
		for _, p := range []evtchn.Port{q.txPort, q.rxPort} {
			if p != 0 {
				c.ev.Close(p)
			}
			if q.rxPort == q.txPort {
				break
			}
		}
		q.txPort, q.rxPort = 0, 0
	}
}

// broken drops the connection after a protocol error.
func (v *VIF) broken(c *conn, err error) {
	err = fmt.Errorf("netback %s: %w", v.b.Name(), err)
	v.fail(err)
	c.cancel(err)
}

// notify kicks the frontend, ignoring a port closed meanwhile.
func (c *conn) notify(p evtchn.Port) { c.ev.Notify(p) }
