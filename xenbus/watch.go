package xenbus

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gozen-dev/gozen/xenbus/wire"
)

// WatchEvent reports that a node under a watched path changed (was
// created, written, removed or had its permissions changed), or is the
// initial event that fires when a watch is registered. Watches may fire
// spuriously: re-read the state you care about.
type WatchEvent struct {
	// Path is the absolute path that changed (the watched path itself for
	// the initial event and for removals of a parent).
	Path string
}

// maxQueued bounds the events queued for a slow consumer; beyond it the
// queue collapses into one event for the watched path ("rescan").
const maxQueued = 1024

// cleanupTimeout bounds best-effort cleanup calls made after the caller's
// context ended.
const cleanupTimeout = 5 * time.Second

// Watch is a registered watch. Its events arrive on Events until Unwatch
// or the client's Close.
type Watch struct {
	c     *Client
	path  atomic.Pointer[string] // moved by a resume into a new domain
	token string
	ch    chan WatchEvent

	mu      sync.Mutex
	queue   []string
	stopped bool
	wake    chan struct{} // cap 1
	halt    chan struct{} // closed by stop
}

// Watch registers a watch on path (relative to the home unless absolute,
// or a special path such as "@releaseDomain") and every node under it.
// The store fires it once right away.
func (c *Client) Watch(ctx context.Context, path string) (*Watch, error) {
	p := path
	if !wire.IsSpecialWatch(path) {
		var err error
		if p, err = c.abs(ctx, path); err != nil {
			return nil, err
		}
	} else if len(p) > wire.AbsPathMax {
		return nil, fmt.Errorf("xenbus: watch %q: %w", path, wire.ErrTooLong)
	}
	w := &Watch{
		c:    c,
		ch:   make(chan WatchEvent),
		wake: make(chan struct{}, 1),
		halt: make(chan struct{}),
	}
	w.path.Store(&p)
	// Register the token before sending: the initial event may overtake
	// the reply.
	c.mu.Lock()
	if c.err != nil {
		err := c.err
		c.mu.Unlock()
		return nil, err
	}
	c.nextTok++
	w.token = "gozen" + strconv.FormatUint(c.nextTok, 10)
	c.watches[w.token] = w
	c.mu.Unlock()
	go w.pump()

	m, err := c.request(ctx, wire.Watch, 0, p, wire.Strings(p, w.token))
	if err == nil {
		err = okReply(m, p)
	}
	if err != nil {
		c.mu.Lock()
		delete(c.watches, w.token)
		c.mu.Unlock()
		w.stop()
		return nil, err
	}
	return w, nil
}

// Path returns the absolute (or special) path being watched. A watch
// under the domain's home follows the home when a resume finds the
// domain restored under another domid.
func (w *Watch) Path() string { return *w.path.Load() }

// Events returns the channel of events. It is closed after Unwatch or when
// the client is closed or broken.
func (w *Watch) Events() <-chan WatchEvent { return w.ch }

// Unwatch removes the watch from the store and closes the Events channel.
func (w *Watch) Unwatch(ctx context.Context) error {
	c := w.c
	c.mu.Lock()
	_, live := c.watches[w.token]
	delete(c.watches, w.token)
	c.mu.Unlock()
	w.stop()
	if !live {
		return nil
	}
	p := w.Path()
	m, err := c.request(ctx, wire.Unwatch, 0, p, wire.Strings(p, w.token))
	if err != nil {
		return err
	}
	return okReply(m, p)
}

func (c *Client) dispatchWatch(m wire.Msg) {
	ev, err := wire.ParseWatchEvent(m.Payload)
	if err != nil {
		c.malformedEvents.Add(1)
		return
	}
	c.mu.Lock()
	w := c.watches[ev.Token]
	c.mu.Unlock()
	if w == nil {
		c.unknownWatches.Add(1)
		return
	}
	w.enqueue(ev.Path)
}

func (w *Watch) enqueue(p string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.stopped {
		return
	}
	// The head may be in flight to the consumer; later duplicates are not
	// needed since the consumer re-reads after each event.
	if len(w.queue) > 1 {
		for _, q := range w.queue[1:] {
			if q == p {
				return
			}
		}
	}
	if len(w.queue) >= maxQueued {
		w.queue = append(w.queue[:1], w.Path())
	} else {
		w.queue = append(w.queue, p)
	}
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

func (w *Watch) stop() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.stopped {
		w.stopped = true
		close(w.halt)
	}
}

func (w *Watch) pump() {
	defer close(w.ch)
	for {
		w.mu.Lock()
		if w.stopped {
			w.mu.Unlock()
			return
		}
		if len(w.queue) == 0 {
			w.mu.Unlock()
			select {
			case <-w.wake:
			case <-w.halt:
				return
			}
			continue
		}
		p := w.queue[0]
		w.mu.Unlock()
		select {
		case w.ch <- WatchEvent{Path: p}:
			w.mu.Lock()
			w.queue = w.queue[1:]
			w.mu.Unlock()
		case <-w.halt:
			return
		}
	}
}

// WaitFor watches path and calls check after every event (the first comes
// right away) until check returns true or an error, or ctx ends. It is the
// building block of "wait until the backend is Connected" loops.
func (c *Client) WaitFor(ctx context.Context, path string, check func() (bool, error)) error {
	w, err := c.Watch(ctx, path)
	if err != nil {
		return err
	}
	defer func() {
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
		w.Unwatch(uctx)
		cancel()
	}()
	for {
		select {
		case _, ok := <-w.Events():
			if !ok {
				if err := c.Err(); err != nil {
					return err
				}
				return fmt.Errorf("xenbus: watch on %s ended", w.Path())
			}
			done, err := check()
			if err != nil || done {
				return err
			}
		case <-ctx.Done():
			return fmt.Errorf("xenbus: waiting on %s: %w", w.Path(), ctx.Err())
		}
	}
}
