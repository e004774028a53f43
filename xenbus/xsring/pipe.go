package xsring

import (
	"context"
	"fmt"
	"sync"

	"github.com/gozen-dev/gozen/evtchn"
)

// LocalNotifier is one end of an in-process notification pair made by
// [NewLocalPair], for host tests: Notify bumps the peer's generation and
// Wait waits for the local one, with the semantics of evtchn.Events.
type LocalNotifier struct {
	peer *LocalNotifier
	mu   sync.Mutex
	gen  evtchn.Generation
	ch   chan struct{} // closed and replaced on every change
	shut bool
}

// NewLocalPair returns two connected notifiers: a.Notify wakes b.Wait and
// b.Notify wakes a.Wait.
func NewLocalPair() (a, b *LocalNotifier) {
	a = &LocalNotifier{ch: make(chan struct{})}
	b = &LocalNotifier{ch: make(chan struct{}), peer: a}
	a.peer = b
	return a, b
}

func (l *LocalNotifier) bump(closing bool) {
	l.mu.Lock()
	if closing {
		l.shut = true
	} else {
		l.gen++
	}
	close(l.ch)
	l.ch = make(chan struct{})
	l.mu.Unlock()
}

// Notify wakes the peer. It fails with an error wrapping evtchn.ErrClosed
// once either end is closed.
func (l *LocalNotifier) Notify() error {
	l.mu.Lock()
	shut := l.shut
	l.mu.Unlock()
	if shut {
		return fmt.Errorf("local notifier: %w", evtchn.ErrClosed)
	}
	l.peer.bump(false)
	return nil
}

// Wait blocks until the local generation exceeds seen, ctx ends or the
// pair is closed (an error wrapping evtchn.ErrClosed).
func (l *LocalNotifier) Wait(ctx context.Context, seen evtchn.Generation) (evtchn.Generation, error) {
	for {
		l.mu.Lock()
		gen, shut, ch := l.gen, l.shut, l.ch
		l.mu.Unlock()
		if gen > seen {
			return gen, nil
		}
		if shut {
			return gen, fmt.Errorf("local notifier: %w", evtchn.ErrClosed)
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return gen, ctx.Err()
		}
	}
}

// Close closes both ends, waking every waiter with evtchn.ErrClosed.
func (l *LocalNotifier) Close() error {
	l.bump(true)
	l.peer.bump(true)
	return nil
}
