package netfront

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/gozen-dev/gozen/domid"
	"github.com/gozen-dev/gozen/drivers/netif"
	"github.com/gozen-dev/gozen/drivers/ring"
	"github.com/gozen-dev/gozen/evtchn"
	"github.com/gozen-dev/gozen/gnttab"
)

// queue is one of a connection's queues: the two ring pages, the two buffer
// pools, the event channels and the state of both paths. A new queue is
// made at every (re)connection.
type queue struct {
	index  int            // queue-<index> in xenstore
	qc     *queueCounters // the counters of queue number index
	ev     evtchn.Events
	mem    gnttab.SharedMemory
	remote domid.ID

	txShare, rxShare *gnttab.Share // the ring pages
	txPool, rxPool   *gnttab.Share // the buffer pages, one per slot
	tx, rx           *ring.Front
	txPort, rxPort   evtchn.Port // equal without split event channels
	split            bool

	// stop ends the waits of Send and Receive on this queue (suspend,
	// close, reconnection).
	stop     context.Context
	stopWait context.CancelFunc

	dead errBox // the protocol error that broke the queue

	// Under NIC.txMu.
	txFree    []uint16 // free transmit ids (= pool pages)
	txBusy    []bool   // by id: sent, not answered
	txSeen    evtchn.Generation
	txScratch [netif.TxRequestSize]byte

	// Under NIC.rxMu.
	rxSeen    evtchn.Generation
	rxPending [][netif.RxResponseSize]byte // responses of the packet being parsed
	rxFirst   uint32                       // ring index of rxPending[0]
	rxScratch []byte                       // reassembly of multi-slot frames
	rxPkt     rxPacket
}

type errBox struct {
	mu  sync.Mutex
	err error
}

func (b *errBox) set(err error) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.err == nil {
		b.err = err
	}
	return b.err
}

func (b *errBox) get() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.err
}

// newQueue grants the rings and the pools to remote and binds the event
// channels (two if split).
func newQueue(ev evtchn.Events, mem gnttab.SharedMemory, remote domid.ID, split bool) (_ *queue, err error) {
	q := &queue{ev: ev, mem: mem, remote: remote, split: split}
	q.stop, q.stopWait = context.WithCancel(context.Background())
	defer func() {
		// q, not the result: a failing return sets that to nil.
		if err != nil {
			q.release()
		}
	}()
	if q.txShare, err = mem.Share(remote, 1, true); err != nil {
		return nil, fmt.Errorf("netfront: granting the tx ring: %w", err)
	}
	if q.rxShare, err = mem.Share(remote, 1, true); err != nil {
		return nil, fmt.Errorf("netfront: granting the rx ring: %w", err)
	}
	if q.tx, err = ring.NewFront(q.txShare.Buf, netif.TxLayout); err != nil {
		return nil, fmt.Errorf("netfront: tx ring: %w", err)
	}
	if q.rx, err = ring.NewFront(q.rxShare.Buf, netif.RxLayout); err != nil {
		return nil, fmt.Errorf("netfront: rx ring: %w", err)
	}
	if q.txPool, err = mem.Share(remote, q.tx.Size(), false); err != nil {
		return nil, fmt.Errorf("netfront: granting %d tx pages: %w", q.tx.Size(), err)
	}
	if q.rxPool, err = mem.Share(remote, q.rx.Size(), true); err != nil {
		return nil, fmt.Errorf("netfront: granting %d rx pages: %w", q.rx.Size(), err)
	}
	if q.txPort, err = ev.AllocUnbound(remote); err != nil {
		return nil, fmt.Errorf("netfront: event channel: %w", err)
	}
	q.rxPort = q.txPort
	if split {
		if q.rxPort, err = ev.AllocUnbound(remote); err != nil {
			return nil, fmt.Errorf("netfront: rx event channel: %w", err)
		}
	}
	q.txFree = make([]uint16, q.tx.Size())
	for i := range q.txFree {
		q.txFree[i] = uint16(len(q.txFree) - 1 - i)
	}
	q.txBusy = make([]bool, q.tx.Size())
	q.rxPending = make([][netif.RxResponseSize]byte, 0, maxRxSlots)
	q.rxScratch = make([]byte, netif.SlotsMin*gnttab.PageSize)
	return q, nil
}

// fillRx offers every free receive slot to the backend: the request of
// ring index i offers page i mod size, with id i mod size. It reports
// whether the backend must be notified.
func (q *queue) fillRx() (bool, error) {
	var b [netif.RxRequestSize]byte
	mask := uint32(q.rx.Size() - 1)
	n := 0
	for !q.rx.Full() {
		i := q.rx.ReqProdPvt() & mask
		netif.RxRequest{ID: uint16(i), Gref: uint32(q.rxPool.Refs[i])}.Encode(b[:])
		if err := q.rx.PutRequest(b[:]); err != nil {
			return false, err
		}
		n++
	}
	if n == 0 {
		return false, nil
	}
	return q.rx.PushRequestsAndCheckNotify(), nil
}

// wait waits on port for a generation past seen, or until ctx or the
// queue's stop ends. errStopped means the queue was stopped.
func (q *queue) wait(ctx context.Context, port evtchn.Port, seen evtchn.Generation) (evtchn.Generation, error) {
	wctx, cancel := context.WithCancel(ctx)
	unhook := context.AfterFunc(q.stop, cancel)
	g, err := q.ev.Wait(wctx, port, seen)
	if err != nil && wctx.Err() == nil && errors.Is(err, evtchn.ErrClosed) {
		// The backend closed its end (it is going away): on Xen the
		// port just stays silent. Wait as there, for our stop (close,
		// suspend, reconnection) or ctx, rather than fail every wait
		// at once and have the caller spin.
		<-wctx.Done()
	}
	unhook()
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return seen, ctx.Err()
		}
		if q.stop.Err() != nil {
			return seen, errStopped
		}
		return seen, fmt.Errorf("netfront: waiting on port %d: %w", port, err)
	}
	return g, nil
}

var errStopped = errors.New("netfront: queue stopped")

// notify kicks the backend on port.
func (q *queue) notify(port evtchn.Port) error {
	if err := q.ev.Notify(port); err != nil {
		return fmt.Errorf("netfront: notifying port %d: %w", port, err)
	}
	return nil
}

// release closes the ports and revokes the grants still held. Shares the
// backend still maps are kept (and returned as an error wrapping
// gnttab.ErrInUse) so that a later release can revoke them; shares and
// ports lost by a resume into a new domain are forgotten.
func (q *queue) release() error {
	q.stopWait()
	var errs []error
	for _, p := range []*evtchn.Port{&q.txPort, &q.rxPort} {
		if *p != 0 {
			if err := q.ev.Close(*p); err != nil && !errors.Is(err, evtchn.ErrResumed) && !errors.Is(err, evtchn.ErrBadPort) {
				errs = append(errs, fmt.Errorf("netfront: closing port %d: %w", *p, err))
			}
			if q.rxPort == q.txPort {
				q.rxPort = 0
			}
			*p = 0
		}
	}
	for _, s := range []**gnttab.Share{&q.txShare, &q.rxShare, &q.txPool, &q.rxPool} {
		if *s == nil {
			continue
		}
		err := q.mem.Unshare(*s)
		if errors.Is(err, gnttab.ErrInUse) {
			errs = append(errs, fmt.Errorf("netfront: revoking grants: %w", err))
			continue
		}
		if err != nil && !errors.Is(err, gnttab.ErrResumed) {
			errs = append(errs, fmt.Errorf("netfront: revoking grants: %w", err))
		}
		*s = nil
	}
	return errors.Join(errs...)
}

// held reports whether the queue still holds grants or ports.
func (q *queue) held() bool {
	return q.txPort != 0 || q.rxPort != 0 || q.txShare != nil || q.rxShare != nil || q.txPool != nil || q.rxPool != nil
}
