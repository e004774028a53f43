//go:build tamago

package smp

import (
	"sync/atomic"

	"github.com/gozen-dev/gozen/hypercall"
)

// Stopping the other vCPUs for a suspend of the domain, as Linux's
// stop_machine does around xen_suspend: the vCPU that suspends (the
// leader) turns its interrupts off and calls Freeze; every other vCPU
// takes the wake vector and spins in its gate (wakeEntry), interrupts
// off, wherever its Go code was. The leader then runs only nosplit code
// that neither allocates nor takes a lock until Thaw: a stopped vCPU may
// hold a runtime lock, and a stop-the-world would wait for it forever.

// Suspend requests to vCPU 0's gate (suspendCmd).
const (
	suspendNone = iota
	suspendAsked
	suspendInXen
	suspendDone
)

var (
	freezing    uint32    // set from Freeze to Thaw (read by wakeEntry)
	frozen      uint32    // vCPUs spinning in wakeEntry
	suspendCmd  uint32    // SuspendOn0's request to vCPU 0's gate
	suspendRet  int64     // the hypercall's result, from vCPU 0's gate
	shutdownArg [2]uint32 // struct sched_shutdown for vCPU 0's gate
	hcPage      uintptr   // the hypercall page (for wakeEntry)
	lastLeader  int32     = -1
)

// LastSuspend reports the vCPU that led the last suspend (SuspendOn0's
// caller; -1 if none yet): when it is not 0, vCPU 0 made the hypercall
// from its gate. For tests and diagnosis.
func LastSuspend() int { return int(atomic.LoadInt32(&lastLeader)) }

func pause()

// FreezeLimit is how long Freeze waits for the other vCPUs to stop, in
// nanoseconds.
const FreezeLimit = 1e9

// Freeze stops every other vCPU (see above). The caller must have its
// interrupts off and call only nosplit code until Thaw. It returns false,
// with every vCPU let go again, when one has not stopped within
// FreezeLimit. With one vCPU it does nothing.
//
//go:nosplit
func Freeze() bool {
	n := atomic.LoadUint32(&ncpu)
	if n < 2 {
		return true
	}
	self := gsID()
	atomic.StoreUint32(&freezing, 1)
	for i := uint32(0); i < n; i++ {
		if uint64(i) != self {
			sendIPI(cpus[i].apic, wakeVector)
		}
	}
	deadline := nanotime() + FreezeLimit
	for atomic.LoadUint32(&frozen) < n-1 {
		if nanotime() > deadline {
			Thaw()
			return false
		}
		pause()
	}
	return true
}

// Thaw lets the vCPUs Freeze stopped go on, and waits (at most
// FreezeLimit) until they have left their gate.
//
//go:nosplit
func Thaw() {
	atomic.StoreUint32(&freezing, 0)
	deadline := nanotime() + FreezeLimit
	for atomic.LoadUint32(&frozen) != 0 && nanotime() < deadline {
		pause()
	}
}

// SuspendOn0 makes the suspend hypercall (SCHEDOP_shutdown with
// SHUTDOWN_suspend) on vCPU 0, as Linux does, and returns Xen's result
// when the domain runs again: directly when the caller runs there (or
// there is one vCPU), otherwise through vCPU 0's gate, where Freeze
// stopped it, while the caller waits (Xen pauses it there too). Call it
// between Freeze and Thaw.
//
//go:nosplit
func SuspendOn0() int64 {
	if atomic.LoadUint32(&ncpu) < 2 || gsID() == 0 {
		atomic.StoreInt32(&lastLeader, 0)
		return hypercall.Shutdown(hypercall.ShutdownSuspend)
	}
	atomic.StoreInt32(&lastLeader, int32(gsID()))
	shutdownArg[0] = hypercall.ShutdownSuspend
	atomic.StoreUint32(&suspendCmd, suspendAsked)
	for atomic.LoadUint32(&suspendCmd) != suspendDone {
		pause()
	}
	atomic.StoreUint32(&suspendCmd, suspendNone)
	return atomic.LoadInt64(&suspendRet)
}
