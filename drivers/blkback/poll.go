package blkback

import (
	"context"
	"time"
)

// Adaptive polling.
//
// After answering requests, a ring's server keeps looking at the ring for
// the frontend's next request for a while (the window) before it sets
// req_event (FinalCheckForRequests) and waits for the event channel.
// While req_event is not re-armed, the frontend's RING_PUSH_REQUESTS_AND_
// CHECK_NOTIFY finds no need to notify, so a request that arrives within
// the window costs neither side an event: no hypercall in the frontend,
// no interrupt, wake-up and unmask in the backend. The window adapts to
// the gaps seen between answering and the next request, as Linux's KVM
// adapts its halt polling: it starts at the cap; a request found while
// polling keeps it; a request that came after the window but within the
// cap doubles it (from at least cap/pollGrowFrom); a wait longer than the
// cap halves it, and closes it below cap/pollGrowFrom, so that one slow
// request does not close a window that pays, and a ring gone idle costs
// at most a few windows (less than twice the cap in all) and then
// nothing. Polling yields the processor between looks
// (runtime.Gosched), so the other goroutines of a process with one P (a
// dom0 of one vCPU) still run.

// DefaultPollMax is Config.PollMax when zero: on hardware a frontend
// answers a response with its next request within tens of microseconds
// (an interrupt, a thread woken, a system call). Under emulation
// everything is tens to a hundred times slower: in the test rig (Xen
// under QEMU's TCG) a Linux domU's gaps are mostly 0.5-8 ms, and there a
// cap of milliseconds pays (gozen-backend vbd -poll 10ms).
const DefaultPollMax = 50 * time.Microsecond

// pollGrowFrom: a closed window reopens at PollMax/pollGrowFrom.
const pollGrowFrom = 16

// nextWindow returns the polling window after a ring's server, having
// polled for window without finding a request, waited gap for the next
// one (from answering the last requests to being woken), with the window
// capped at most.
func nextWindow(window, gap, most time.Duration) time.Duration {
	floor := most / pollGrowFrom
	switch {
	case most <= 0:
		return 0
	case gap > most:
		if window/2 < floor {
			return 0 // idle: stop polling
		}
		return window / 2
	case gap <= window:
		return window // woken early (a spurious event): no evidence
	default:
		return min(most, max(2*window, floor))
	}
}

// poll looks at the ring for a request until one waits (true), the window
// that opened at start has passed, ctx ends or the ring fails. It returns
// the time it stopped.
func (c *conn) poll(ctx context.Context, start time.Time, window time.Duration) (bool, time.Time, error) {
	deadline := start.Add(window)
	for {
		n, err := c.back.UnconsumedRequests()
		now := c.s.now()
		if n > 0 || err != nil {
			return n > 0, now, err
		}
		if !now.Before(deadline) || ctx.Err() != nil {
			return false, now, nil
		}
		c.s.yield()
	}
}
