// Package deadline turns net.Conn and net.PacketConn read and write
// deadlines into contexts that blocking waits (event channels, VIRQs) can
// select on. The vchan and v4v drivers share it.
package deadline

import (
	"context"
	"errors"
	"net"
	"os"
	"sync"
	"time"
)

// ErrChanged is the cause of a context canceled because its deadline was
// replaced; the waiter goes round again with the new one.
var ErrChanged = errors.New("deadline changed")

// Deadline is one direction's deadline of a connection.
type Deadline struct {
	mu     sync.Mutex
	ctx    context.Context
	cancel context.CancelCauseFunc
	timer  *time.Timer
	at     time.Time
	done   bool
}

// New returns a Deadline that never expires until Set.
func New() *Deadline {
	d := &Deadline{}
	d.ctx, d.cancel = context.WithCancelCause(context.Background())
	return d
}

// Set replaces the deadline, waking current waiters.
func (d *Deadline) Set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.done {
		return
	}
	if d.timer != nil {
		d.timer.Stop()
		d.timer = nil
	}
	d.cancel(ErrChanged)
	ctx, cancel := context.WithCancelCause(context.Background())
	d.ctx, d.cancel, d.at = ctx, cancel, t
	if t.IsZero() {
		return
	}
	if dur := time.Until(t); dur <= 0 {
		cancel(os.ErrDeadlineExceeded)
	} else {
		d.timer = time.AfterFunc(dur, func() { cancel(os.ErrDeadlineExceeded) })
	}
}

// Wake wakes current waiters (their context ends with ErrChanged) to look
// again at what they wait for, keeping the deadline.
func (d *Deadline) Wake() {
	d.mu.Lock()
	at := d.at
	d.mu.Unlock()
	d.Set(at)
}

// Context returns the context that ends at the deadline, or when the
// deadline changes, or when the connection closes.
func (d *Deadline) Context() context.Context {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.ctx
}

// Close wakes waiters for good with net.ErrClosed.
func (d *Deadline) Close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.done = true
	if d.timer != nil {
		d.timer.Stop()
	}
	d.cancel(net.ErrClosed)
}

// Expired returns the error a call must fail with before starting:
// os.ErrDeadlineExceeded if the deadline has passed, nil otherwise.
func (d *Deadline) Expired() error {
	ctx := d.Context()
	if ctx.Err() != nil && context.Cause(ctx) == os.ErrDeadlineExceeded {
		return os.ErrDeadlineExceeded
	}
	return nil
}
