package vchan

import (
	"context"
	"errors"
	"net"
	"os"
	"sync"
	"time"
)

// errDeadlineChanged cancels a wait whose deadline was replaced; the
// waiter goes round again with the new one.
var errDeadlineChanged = errors.New("vchan: deadline changed")

// deadline turns a net.Conn deadline into a context for evtchn waits.
type deadline struct {
	mu     sync.Mutex
	ctx    context.Context
	cancel context.CancelCauseFunc
	timer  *time.Timer
	done   bool
}

func newDeadline() *deadline {
	d := &deadline{}
	d.ctx, d.cancel = context.WithCancelCause(context.Background())
	return d
}

// set replaces the deadline, waking current waiters.
func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.done {
		return
	}
	if d.timer != nil {
		d.timer.Stop()
		d.timer = nil
	}
	d.cancel(errDeadlineChanged)
	ctx, cancel := context.WithCancelCause(context.Background())
	d.ctx, d.cancel = ctx, cancel
	if t.IsZero() {
		return
	}
	if dur := time.Until(t); dur <= 0 {
		cancel(os.ErrDeadlineExceeded)
	} else {
		d.timer = time.AfterFunc(dur, func() { cancel(os.ErrDeadlineExceeded) })
	}
}

// context returns the context that ends at the deadline, or when the
// deadline changes, or when the connection closes.
func (d *deadline) context() context.Context {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.ctx
}

// close wakes waiters for good with net.ErrClosed.
func (d *deadline) close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.done = true
	if d.timer != nil {
		d.timer.Stop()
	}
	d.cancel(net.ErrClosed)
}

// expired returns the error a call must fail with before starting:
// os.ErrDeadlineExceeded if the deadline has passed, nil otherwise.
func (d *deadline) expired() error {
	ctx := d.context()
	if ctx.Err() != nil && context.Cause(ctx) == os.ErrDeadlineExceeded {
		return os.ErrDeadlineExceeded
	}
	return nil
}
