// Package irq takes a guest's device interrupts (Xen's event-channel
// upcall) without running Go runtime code that the interrupt may have
// stopped in the middle of.
//
// TamaGo's own interrupt path wakes its service goroutine from the
// interrupt itself by rewriting that goroutine's sleep timer in the
// runtime's timer heap. When the interrupt lands while the runtime is
// sifting that heap or updating the same timer, the rewrite can be lost and
// the goroutine sleeps until some unrelated timer fires (measured: the
// last round of evtchn/PingPong between two Gozen domUs waited 30 s for
// its deadline in 2 of 5 runs). This package's entry instead:
//
//   - records the interrupt in a flag and acknowledges the LAPIC (EOI);
//   - wakes the service goroutine directly only when the interrupted code
//     holds no runtime lock (the M's lock count is zero, so neither the
//     timer heap nor any timer is being changed) and the goroutine is
//     asleep;
//   - otherwise arms the LAPIC one-shot timer on a second vector to try
//     again later (20 µs, doubling up to 10 ms while it keeps failing), and
//     the scheduler's idle hook (Kick, with interrupts off) makes the
//     wake-up from normal context as soon as nothing else runs.
//
// The entry runs on the vCPU's interrupt stack (trap.SetHandler), never
// on the stack of the goroutine it stopped beyond the CPU's frame.
// The service goroutine clears the flag before it calls the handler, so an
// interrupt that arrives while the handler runs makes it run again: no
// interrupt is lost and several are coalesced into one call.
//
// With more than one vCPU (EnableSMP, package arch/amd64/smp) the entry
// never wakes the goroutine itself: another vCPU may be changing the same
// timer heap, and the interrupted M's lock count says nothing about it.
// The entry records the interrupt, acknowledges its own LAPIC and sends
// an IPI to an idle vCPU; that vCPU's idle hook calls Kick, which readies
// the service goroutine with a channel send, an ordinary runtime
// operation with its locks. The entry runs on whichever vCPU Xen raised
// the upcall on, on that vCPU's own interrupt stack.
//
// The lock-count check needs the offset of m.locks in the runtime's M,
// which Serve measures at start (runtime.procPin raises it by one); if it
// cannot, the entry never wakes directly and only the retry timer and
// idle do, which is slower under load but still loses nothing.
package irq

// Stats counts what the interrupt entry and the idle hook did.
type Stats struct {
	// Interrupts counts entries on the serviced vector.
	Interrupts uint64
	// Direct counts wake-ups made by the entry itself.
	Direct uint64
	// Deferred counts entries (first or retried) that could not wake the
	// goroutine and armed the retry timer.
	Deferred uint64
	// Retries counts entries on the retry vector.
	Retries uint64
	// Kicks counts wake-ups made by the idle hook.
	Kicks uint64
	// Calls counts calls of the handler.
	Calls uint64
}
