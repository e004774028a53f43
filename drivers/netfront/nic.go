package netfront

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"

	"github.com/gozen-dev/gozen/drivers/netif"
	"github.com/gozen-dev/gozen/evtchn"
	"github.com/gozen-dev/gozen/gnttab"
	"github.com/gozen-dev/gozen/xenbus/device"
)

// Config is what a NIC is built on.
type Config struct {
	// Events is the domain's event-channel service.
	Events evtchn.Events
	// Grants is the domain's grant service.
	Grants gnttab.SharedMemory
	// MaxQueues caps the queues used when the backend offers
	// multi-queue-max-queues: min(offer, MaxQueues). Zero or one uses one
	// queue (the keys in the device directory).
	MaxQueues int
}

// Features is what was negotiated with the backend.
type Features struct {
	// SG: frames may span several pages (feature-sg).
	SG bool
	// GSOTCPv4 and GSOTCPv6: the backend takes GSO frames of that type.
	GSOTCPv4, GSOTCPv6 bool
	// SplitEventChannels: transmit and receive have their own event
	// channel.
	SplitEventChannels bool
	// MaxQueues is the backend's multi-queue-max-queues (0 if not
	// offered); Queues is the number used, min(MaxQueues,
	// Config.MaxQueues) or 1.
	MaxQueues, Queues int
}

// QueueStats counts one queue's frames.
type QueueStats struct {
	// TXFrames counts frames put on the queue's transmit ring, RXFrames
	// frames taken from its receive ring and handed to Receive's callback.
	TXFrames, RXFrames uint64
}

// Stats counts a NIC's traffic since it was connected.
type Stats struct {
	// TXFrames and TXBytes count frames put on the ring.
	TXFrames, TXBytes uint64
	// TXErrors counts transmit responses with an error status.
	TXErrors uint64
	// TXDropped counts frames still in flight when the domain resumed in
	// a new one (their pages were lost).
	TXDropped uint64
	// RXFrames and RXBytes count frames handed to Receive's callback.
	RXFrames, RXBytes uint64
	// RXErrors counts received frames dropped: an error status, unusable
	// GSO information, empty.
	RXErrors uint64
	// Queues counts frames per queue number, over every connection.
	Queues []QueueStats
}

// queueCounters are one queue number's counters.
type queueCounters struct{ tx, rx atomic.Uint64 }

type counters struct {
	txFrames, txBytes, txErrors, txDropped atomic.Uint64
	rxFrames, rxBytes, rxErrors            atomic.Uint64
}

// NIC states.
const (
	stRunning = iota
	stSuspended
	stClosed
)

// NIC is a connected network device. Send and Receive may be called
// concurrently with each other and with the lifecycle methods (the
// device.Conn ones, called by a device.Bus); Send may be called by
// several goroutines, Receive by one at a time.
type NIC struct {
	cfg  Config
	name string
	mac  net.HardwareAddr
	mtu  int

	mu      sync.Mutex
	st      int
	qs      []*queue // the connection's queues, queue-<i> at index i
	ft      Features
	changed chan struct{} // closed at every change of st or qs
	zombies []*queue      // queues whose grants the backend still mapped
	qc      []*queueCounters
	mq      bool // multi-queue-num-queues was published

	txMu   sync.Mutex
	rxMu   sync.Mutex
	rxNext int           // the queue Receive looks at first (under rxMu)
	rxKick chan struct{} // a receive event on some queue (several queues)
	c      counters
}

var _ device.Conn = (*NIC)(nil)

// MAC returns the NIC's MAC address, read from the device directory.
func (n *NIC) MAC() net.HardwareAddr { return n.mac }

// MTU returns the MTU, read from the device directory (1500 by default).
func (n *NIC) MTU() int { return n.mtu }

// Name returns the device's name, e.g. "vif/0".
func (n *NIC) Name() string { return n.name }

// Features returns what was negotiated with the backend.
func (n *NIC) Features() Features {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.ft
}

// Stats returns the traffic counters.
func (n *NIC) Stats() Stats {
	st := Stats{
		TXFrames: n.c.txFrames.Load(), TXBytes: n.c.txBytes.Load(), TXErrors: n.c.txErrors.Load(), TXDropped: n.c.txDropped.Load(),
		RXFrames: n.c.rxFrames.Load(), RXBytes: n.c.rxBytes.Load(), RXErrors: n.c.rxErrors.Load(),
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	for _, c := range n.qc {
		st.Queues = append(st.Queues, QueueStats{TXFrames: c.tx.Load(), RXFrames: c.rx.Load()})
	}
	return st
}

// counters returns the counters of queue number i.
func (n *NIC) counters(i int) *queueCounters {
	n.mu.Lock()
	defer n.mu.Unlock()
	for len(n.qc) <= i {
		n.qc = append(n.qc, new(queueCounters))
	}
	return n.qc[i]
}

// Err returns the error that broke the current connection, or nil.
func (n *NIC) Err() error {
	n.mu.Lock()
	qs := n.qs
	n.mu.Unlock()
	return deadErr(qs)
}

// deadErr returns the error that broke one of the queues, or nil.
func deadErr(qs []*queue) error {
	for _, q := range qs {
		if err := q.dead.get(); err != nil {
			return err
		}
	}
	return nil
}

// active returns the running queues, waiting while the NIC is suspended
// or reconnecting.
func (n *NIC) active(ctx context.Context) ([]*queue, error) {
	for {
		n.mu.Lock()
		st, qs, ch := n.st, n.qs, n.changed
		n.mu.Unlock()
		switch {
		case st == stClosed:
			return nil, fmt.Errorf("netfront %s: %w", n.name, ErrClosed)
		case st == stRunning && len(qs) > 0:
			if err := deadErr(qs); err != nil {
				return nil, err
			}
			return qs, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// still reports whether qs, returned by active, are still the running
// queues. Send and Receive check it once they hold txMu or rxMu: Close,
// Resume and Reconnect take both before they release or replace queues,
// so queues that are still current stay usable while the lock is held.
func (n *NIC) still(qs []*queue) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.st == stRunning && len(n.qs) == len(qs) && len(qs) > 0 && n.qs[0] == qs[0]
}

// changeLocked wakes the callers waiting in active.
func (n *NIC) changeLocked() {
	close(n.changed)
	n.changed = make(chan struct{})
}

// Send puts the frames on the transmit ring, in order, and notifies the
// backend once per batch. It copies each frame into granted pages, so the
// caller may reuse the frames' buffers as soon as Send returns. It blocks
// while the ring or the page pool is full (back-pressure), while the NIC
// is suspended or reconnecting, until ctx ends. A frame that cannot be
// sent (see ErrFrame) fails Send before anything of it is put; the frames
// before it were sent. With several queues each frame goes on the queue
// its flow hashes to (netif.FlowHash): a flow's frames stay in order.
func (n *NIC) Send(ctx context.Context, frames ...Frame) error {
	for len(frames) > 0 {
		qs, err := n.active(ctx)
		if err != nil {
			return err
		}
		// The frames up to the first bound for another queue.
		q, run := qs[0], len(frames)
		if len(qs) > 1 {
			pick := func(f *Frame) *queue { return qs[netif.FlowHash(f.Data)%uint32(len(qs))] }
			q, run = pick(&frames[0]), 1
			for run < len(frames) && pick(&frames[run]) == q {
				run++
			}
		}
		n.mu.Lock()
		ft := n.ft
		n.mu.Unlock()
		n.txMu.Lock()
		if !n.still(qs) {
			n.txMu.Unlock()
			continue // closed, suspended or reconnected meanwhile
		}
		sent, err := n.sendSome(q, ft, frames[:run])
		frames = frames[sent:]
		if err != nil || len(frames) == 0 {
			n.txMu.Unlock()
			return err
		}
		if sent > 0 {
			n.txMu.Unlock()
			continue
		}
		// No room: ask for a notification at the next response, then
		// wait for it unless responses came meanwhile.
		more, err := q.tx.FinalCheckForResponses()
		seen, port := q.txSeen, q.txPort // read under txMu: Close clears them
		n.txMu.Unlock()
		if err != nil {
			return q.dead.set(fmt.Errorf("netfront: tx ring: %w", err))
		}
		if more {
			continue
		}
		g, err := q.wait(ctx, port, seen)
		if errors.Is(err, errStopped) {
			continue
		}
		if err != nil {
			return err
		}
		n.txMu.Lock()
		q.txSeen = max(q.txSeen, g)
		n.txMu.Unlock()
	}
	return nil
}

// sendSome reclaims answered pages and puts as many frames as fit,
// pushing and notifying once. Called with txMu held.
func (n *NIC) sendSome(q *queue, ft Features, frames []Frame) (int, error) {
	if err := q.gcTx(&n.c); err != nil {
		return 0, err
	}
	sent := 0
	var err error
	for i := range frames {
		f := &frames[i]
		if err = checkFrame(f, ft); err != nil {
			break
		}
		var ok bool
		if ok, err = q.putFrame(f); !ok || err != nil {
			break
		}
		sent++
		q.qc.tx.Add(1)
		n.c.txFrames.Add(1)
		n.c.txBytes.Add(uint64(len(f.Data)))
	}
	if sent > 0 && q.tx.PushRequestsAndCheckNotify() {
		if nerr := q.notify(q.txPort); nerr != nil && err == nil {
			err = nerr
		}
	}
	return sent, err
}

// Receive waits until at least one frame arrived, then calls fn for each
// frame waiting (at most max frames if max > 0), in order, and returns
// how many it handed over. The Frame given to fn is lent: its Data is
// valid only until fn returns (copy what must be kept). If fn returns an
// error, Receive stops and returns it; the frame counts as handed over.
// Receive blocks while the NIC is suspended or reconnecting, until ctx
// ends. Call it from one goroutine at a time; fn must not call Close.
// With several queues every queue's frames are handed over, each queue's
// in order (a flow's frames come on one queue), the queues taken in
// turn.
func (n *NIC) Receive(ctx context.Context, max int, fn func(Frame) error) (int, error) {
	for {
		qs, err := n.active(ctx)
		if err != nil {
			return 0, err
		}
		n.rxMu.Lock()
		if !n.still(qs) {
			n.rxMu.Unlock()
			continue // closed, suspended or reconnected meanwhile
		}
		got := 0
		start := n.rxNext
		n.rxNext = (n.rxNext + 1) % len(qs)
		for i := range qs {
			left := 0 // no limit
			if max > 0 {
				if left = max - got; left <= 0 {
					break
				}
			}
			k, err := n.receiveSome(qs[(start+i)%len(qs)], left, fn)
			got += k
			if err != nil {
				n.rxMu.Unlock()
				return got, err
			}
		}
		if got > 0 {
			n.rxMu.Unlock()
			return got, nil
		}
		more := false
		for _, q := range qs {
			m, err := q.rx.FinalCheckForResponses()
			if err != nil {
				n.rxMu.Unlock()
				return 0, q.dead.set(fmt.Errorf("netfront: rx ring: %w", err))
			}
			more = more || m
		}
		q := qs[0]
		seen, stop, port := q.rxSeen, q.stop, q.rxPort // read under rxMu: Close clears them
		n.rxMu.Unlock()
		if more {
			continue
		}
		if len(qs) > 1 {
			// The queues' watchers kick on their receive events.
			select {
			case <-n.rxKick:
			case <-stop.Done():
			case <-ctx.Done():
				return 0, ctx.Err()
			}
			continue
		}
		g, err := q.wait(ctx, port, seen)
		if errors.Is(err, errStopped) {
			continue
		}
		if err != nil {
			return 0, err
		}
		n.rxMu.Lock()
		q.rxSeen = max2(q.rxSeen, g)
		n.rxMu.Unlock()
	}
}

// watchRx kicks Receive at every receive event of q until stop ends (one
// goroutine per queue of a multi-queue connection). A failing port breaks
// the queue.
func (n *NIC) watchRx(q *queue, port evtchn.Port, stop context.Context) {
	var seen evtchn.Generation
	for {
		g, err := n.cfg.Events.Wait(stop, port, seen)
		if stop.Err() != nil {
			return
		}
		if err != nil {
			if !errors.Is(err, evtchn.ErrClosed) {
				q.dead.set(fmt.Errorf("netfront: queue %d: waiting on port %d: %w", q.index, port, err))
				n.kick()
			}
			return // a backend closing its end: silent, as on Xen
		}
		seen = g
		n.kick()
	}
}

// kick wakes Receive.
func (n *NIC) kick() {
	select {
	case n.rxKick <- struct{}{}:
	default:
	}
}

// startWatchersLocked starts the receive watchers of a multi-queue
// connection.
func (n *NIC) startWatchersLocked() {
	if len(n.qs) < 2 {
		return
	}
	for _, q := range n.qs {
		go n.watchRx(q, q.rxPort, q.stop)
	}
}

func max2(a, b evtchn.Generation) evtchn.Generation {
	if a > b {
		return a
	}
	return b
}

// receiveSome hands the complete packets waiting to fn, then offers the
// consumed pages again. Called with rxMu held.
func (n *NIC) receiveSome(q *queue, max int, fn func(Frame) error) (int, error) {
	got := 0
	var ferr error
	mask := uint32(q.rx.Size() - 1)
	for ferr == nil && (max <= 0 || got < max) {
		if len(q.rxPending) == 0 {
			q.rxFirst = q.rx.RspCons()
		}
		complete, err := parseRx(&q.rxPkt, q.rxPending, q.rxFirst, mask)
		if err != nil {
			return got, q.dead.set(err)
		}
		if !complete {
			var b [netif.RxResponseSize]byte
			ok, err := q.rx.TakeResponse(b[:])
			if err != nil {
				return got, q.dead.set(fmt.Errorf("netfront: rx ring: %w", err))
			}
			if !ok {
				break
			}
			q.rxPending = append(q.rxPending, b)
			continue
		}
		p := &q.rxPkt
		if p.drop != nil {
			n.c.rxErrors.Add(1)
		} else {
			f := Frame{Flags: p.flags, GSO: p.gso}
			if p.nfrags == 1 {
				off := int(p.frags[0].slot&mask)*gnttab.PageSize + p.frags[0].off
				f.Data = q.rxPool.Buf[off : off+p.frags[0].n : off+p.frags[0].n]
			} else {
				k := 0
				for _, fr := range p.frags[:p.nfrags] {
					off := int(fr.slot&mask)*gnttab.PageSize + fr.off
					k += copy(q.rxScratch[k:], q.rxPool.Buf[off:off+fr.n])
				}
				f.Data = q.rxScratch[:k:k]
			}
			got++
			q.qc.rx.Add(1)
			n.c.rxFrames.Add(1)
			n.c.rxBytes.Add(uint64(len(f.Data)))
			ferr = fn(f)
		}
		q.rxPending = q.rxPending[:0]
	}
	notify, err := q.fillRx()
	if err != nil {
		return got, q.dead.set(fmt.Errorf("netfront: rx ring: %w", err))
	}
	if notify {
		if err := q.notify(q.rxPort); err != nil {
			return got, err
		}
	}
	return got, ferr
}

// Suspend quiesces the NIC before the domain suspends: Send and Receive
// block from now on; the frames in flight are waited for until ctx ends
// (those not answered by then are dropped if the domain resumes as a new
// one).
func (n *NIC) Suspend(ctx context.Context) error {
	n.mu.Lock()
	if n.st != stRunning {
		n.mu.Unlock()
		return nil
	}
	n.st = stSuspended
	qs := n.qs
	for _, q := range qs {
		q.stopWait()
	}
	n.changeLocked()
	n.mu.Unlock()
	for _, q := range qs {
		if !n.drainTx(ctx, q) {
			break
		}
	}
	return nil
}

// drainTx waits until ctx ends for q's frames in flight to be answered;
// it reports false if ctx ended.
func (n *NIC) drainTx(ctx context.Context, q *queue) bool {
	for q.dead.get() == nil {
		n.txMu.Lock()
		err := q.gcTx(&n.c)
		left := q.inflight()
		var more bool
		if err == nil && left > 0 {
			more, err = q.tx.FinalCheckForResponses()
		}
		seen := q.txSeen
		n.txMu.Unlock()
		if err != nil || left == 0 {
			return true
		}
		if more {
			continue
		}
		g, err := n.cfg.Events.Wait(ctx, q.txPort, seen)
		if err != nil {
			return false // the rest is dropped if the domain moves
		}
		n.txMu.Lock()
		q.txSeen = max2(q.txSeen, g)
		n.txMu.Unlock()
	}
	return true
}

// Resume restarts the NIC after Suspend. With cancelled true the rings
// are used again as they are. With cancelled false the domain is new:
// the ports are forgotten, the grants released locally (those the old
// backend still maps are revoked later), and Reconnect must follow.
func (n *NIC) Resume(cancelled bool) error {
	n.txMu.Lock()
	defer n.txMu.Unlock()
	n.rxMu.Lock()
	defer n.rxMu.Unlock()
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.st != stSuspended {
		return nil
	}
	if cancelled {
		for _, q := range n.qs {
			q.stop, q.stopWait = context.WithCancel(context.Background())
		}
		n.startWatchersLocked()
		n.st = stRunning
		n.changeLocked()
		return nil
	}
	for _, q := range n.qs {
		n.c.txDropped.Add(uint64(q.inflight()))
		// The ports are gone with the old domain; their numbers may be
		// handed out again, so they must not be closed.
		q.txPort, q.rxPort = 0, 0
		n.dropQueueLocked(q)
	}
	n.qs = nil
	n.changeLocked()
	return nil
}

// dropQueueLocked releases q, keeping it for a later try if the backend
// still maps some of its pages.
func (n *NIC) dropQueueLocked(q *queue) {
	q.release()
	if q.held() {
		n.zombies = append(n.zombies, q)
	}
}

// reapLocked retries the release of old queues' grants.
func (n *NIC) reapLocked() error {
	var errs []error
	k := 0
	for _, z := range n.zombies {
		if err := z.release(); err != nil {
			errs = append(errs, err)
		}
		if z.held() {
			n.zombies[k] = z
			k++
		}
	}
	n.zombies = n.zombies[:k]
	return errors.Join(errs...)
}

// Reconnect connects the NIC again after Resume(false), on f re-opened
// in the new domain, and restarts Send and Receive.
func (n *NIC) Reconnect(ctx context.Context, f *device.Frontend) error {
	n.mu.Lock()
	if n.st != stSuspended || len(n.qs) != 0 {
		n.mu.Unlock()
		return fmt.Errorf("netfront %s: Reconnect without Resume(false)", n.name)
	}
	n.mu.Unlock()
	qs, ft, err := n.handshake(ctx, f)
	n.mu.Lock()
	defer n.mu.Unlock()
	n.reapLocked() // the old backend has let go of the old pages by now
	if err != nil {
		for _, q := range qs {
			n.dropQueueLocked(q) // Close retries what the backend still maps
		}
		return err
	}
	n.qs, n.ft, n.st = qs, ft, stRunning
	n.startWatchersLocked()
	n.changeLocked()
	return nil
}

// Close releases every grant and port the NIC holds; Send and Receive
// fail with ErrClosed from now on. Without a device.Bus, run the close
// handshake (device.Frontend.Disconnect) first, so that the backend has
// let go of the pages: grants it still maps cannot be revoked, and Close
// returns an error wrapping gnttab.ErrInUse (a later Close tries again).
func (n *NIC) Close() error {
	n.txMu.Lock()
	defer n.txMu.Unlock()
	n.rxMu.Lock()
	defer n.rxMu.Unlock()
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.st != stClosed {
		n.st = stClosed
		n.changeLocked()
	}
	for _, q := range n.qs {
		n.dropQueueLocked(q)
	}
	n.qs = nil
	return n.reapLocked()
}
