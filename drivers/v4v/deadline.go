package v4v

import (
	"context"
	"errors"
	"net"
	"os"
	"sync"
	"time"
)

// errDeadlineChanged ends a wait whose deadline was replaced; the waiter
// goes round again under the new deadline.
var errDeadlineChanged = errors.New("v4v: deadline changed")

// deadline turns a net.PacketConn read or write deadline into a context:
// it ends with os.ErrDeadlineExceeded at the deadline, errDeadlineChanged
// when the deadline is replaced, and net.ErrClosed on close.
type deadline struct {
	mu     sync.Mutex
	ctx    context.Context
	cancel context.CancelCauseFunc
	timer  *time.Timer
	closed bool
}

func newDeadline() *deadline {
	d := &deadline{}
	d.ctx, d.cancel = context.WithCancelCause(context.Background())
	return d
}

func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
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

func (d *deadline) context() context.Context {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.ctx
}

func (d *deadline) close() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closed = true
	if d.timer != nil {
		d.timer.Stop()
	}
	d.cancel(net.ErrClosed)
}
