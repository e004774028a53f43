//go:build tamago

package irq

import (
	"errors"
	"fmt"
	"math"
	"runtime"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/gozen-dev/gozen/arch/amd64/trap"
	"github.com/gozen-dev/gozen/internal/phys"
)

var (
	// shared with the entry code
	pending     uint32  // an interrupt recorded, not yet taken by the service goroutine
	serviceG    uintptr // the service goroutine's g
	mLocks      uintptr // address of the M's lock count; 0: never wake from the entry
	delay       uint64  // next retry delay in LAPIC timer counts
	retryVector uint32
	smpWake     uintptr // with more than one vCPU: routine waking an idle vCPU (EnableSMP)

	interrupts, direct, deferred, retries uint64

	kicks, calls atomic.Uint64
	serving      atomic.Bool
	kickCh       = make(chan struct{}, 1) // SMP: wakes the service goroutine
)

// EnableSMP switches the interrupt path to a domain running Go on more
// than one vCPU (package arch/amd64/smp); call it before Serve. The entry
// then never touches the runtime: waking the service goroutine by
// rewriting its timer is safe only while no other vCPU can be changing the
// same timer heap, which the entry cannot know. It records the interrupt,
// acknowledges the LAPIC and calls wakeIdle, an assembly routine (smp's
// WakeIdleAddr, clobbering AX-DX) that wakes an idle vCPU; the idle hook
// there calls Kick, which makes the service goroutine runnable with an
// ordinary channel send. The service goroutine waits on that channel
// instead of sleeping. An interrupt taken while every vCPU runs Go code
// is serviced when the first of them goes idle.
func EnableSMP(wakeIdle uintptr) error {
	if serving.Load() {
		return errors.New("irq: EnableSMP after Serve")
	}
	if wakeIdle == 0 {
		return errors.New("irq: EnableSMP: no wake routine")
	}
	smpWake = wakeIdle
	return nil
}

// SMP reports whether EnableSMP has switched the interrupt path.
func SMP() bool { return smpWake != 0 }

func halt()
func entryAddrs() (upcall, retry uintptr)

//go:linkname procPin runtime.procPin
func procPin() int

//go:linkname procUnpin runtime.procUnpin
func procUnpin()

// Serve installs the interrupt entry on vector and the retry timer on
// retry (both 32-255, distinct, and unused by anything else), starts the
// service goroutine and returns once it waits: from then on, each
// interrupt on vector makes handler run on that goroutine (several
// interrupts may make one call). The LAPIC must be enabled and
// trap.Install must have run. Serve may be called once.
func Serve(vector, retry int, handler func()) error {
	if vector < 32 || vector > 255 || retry < 32 || retry > 255 || vector == retry {
		return fmt.Errorf("irq: vectors %d and %d: want two distinct vectors in 32-255", vector, retry)
	}
	if !trap.Installed() {
		return errors.New("irq: the trap gates are not installed")
	}
	if !serving.CompareAndSwap(false, true) {
		return errors.New("irq: already serving")
	}
	if smpWake != 0 {
		mLocks = 0 // never wake from the entry (EnableSMP)
	} else if off, ok := measureLocks(); ok {
		mLocks = off
	} else {
		print("irq: the runtime's lock count was not found; interrupts wake their goroutine only from idle and the retry timer\n")
	}
	retryVector = uint32(retry)
	delay = 0

	started := make(chan struct{})
	go func() {
		g, _ := runtime.GetG()
		atomic.StoreUintptr(&serviceG, uintptr(g))
		close(started)
		for {
			if atomic.SwapUint32(&pending, 0) != 0 {
				calls.Add(1)
				handler()
				continue
			}
			if smpWake != 0 {
				<-kickCh // Kick, from an idle vCPU
				continue
			}
			// Woken by the entry (runtime.WakeG) or by Kick.
			time.Sleep(math.MaxInt64)
		}
	}()
	<-started
	up, re := entryAddrs()
	if err := trap.SetHandler(retry, re); err != nil {
		return fmt.Errorf("irq: %w", err)
	}
	if err := trap.SetHandler(vector, up); err != nil {
		return fmt.Errorf("irq: %w", err)
	}
	return nil
}

// Pending reports whether an interrupt was taken and its handler has not
// started yet. Idle hooks call it with interrupts off before blocking.
func Pending() bool { return atomic.LoadUint32(&pending) != 0 }

// Kick records a pending interrupt (as the entry would) and wakes the
// service goroutine if it sleeps. It is for the scheduler's idle hook,
// which runs no timer code, with interrupts off; it makes the wake-ups the
// entry had to defer, and services events the hypervisor flagged without
// an interrupt having been seen yet.
//
// With EnableSMP it sends on the service goroutine's channel instead
// (without blocking): any vCPU's idle hook may call it.
func Kick() {
	atomic.StoreUint32(&pending, 1)
	if smpWake != 0 {
		select {
		case kickCh <- struct{}{}:
			kicks.Add(1)
		default:
		}
		return
	}
	g := uint(atomic.LoadUintptr(&serviceG))
	if g != 0 && runtime.Asleep(g) {
		runtime.Wake(g)
		kicks.Add(1)
	}
}

// Halt blocks the CPU until the next interrupt, unless one is already
// pending (checked with interrupts off, so none is missed in between).
func Halt() { halt() }

// ReadStats returns the counters.
func ReadStats() Stats {
	return Stats{
		Interrupts: atomic.LoadUint64(&interrupts),
		Direct:     atomic.LoadUint64(&direct),
		Deferred:   atomic.LoadUint64(&deferred),
		Retries:    atomic.LoadUint64(&retries),
		Kicks:      kicks.Load(),
		Calls:      calls.Load(),
	}
}

// gM is the offset of g.m in the runtime's g (after stack, stackguard0,
// stackguard1, _panic and _defer); measureLocks checks it.
const gM = 48

// mScan bounds how much of the runtime's m is searched.
const mScan = 2048

// measureLocks finds the address of the current M's lock count: the one
// 32-bit word of the M that runtime.procPin raises by exactly one and
// procUnpin lowers again (checked twice, so a field that changed by
// chance is not taken). With GOMAXPROCS=1 and no other M, every goroutine
// and every interrupt runs on this M.
func measureLocks() (uintptr, bool) {
	g, _ := runtime.GetG()
	if g == 0 {
		return 0, false
	}
	m := *(*uintptr)(phys.Pointer(uintptr(g) + gM))
	if m == 0 {
		return 0, false
	}
	// m.curg is the running goroutine: check that m is an M.
	found := false
	for off := uintptr(0); off < mScan; off += 8 {
		if *(*uintptr)(phys.Pointer(m + off)) == uintptr(g) {
			found = true
			break
		}
	}
	if !found {
		return 0, false
	}
	var before, pinned, after [mScan / 4]int32
	cand := -1
	for round := 0; round < 2; round++ {
		snap(m, &before)
		procPin()
		snap(m, &pinned)
		procUnpin()
		snap(m, &after)
		n := -1
		for i := range before {
			if pinned[i] == before[i]+1 && after[i] == before[i] {
				if n >= 0 {
					return 0, false // ambiguous
				}
				n = i
			}
		}
		if n < 0 || (cand >= 0 && n != cand) {
			return 0, false
		}
		cand = n
	}
	return m + uintptr(cand)*4, true
}

func snap(m uintptr, dst *[mScan / 4]int32) {
	*dst = *(*[mScan / 4]int32)(unsafe.Pointer(phys.Pointer(m)))
}

// LAPICState describes the local APIC's in-service and request bits of
// vectors 224-255 and its timer, for diagnosis.
func LAPICState() string {
	r := func(off uintptr) uint32 { return *(*uint32)(phys.Pointer(0xfee00000 + off)) }
	return fmt.Sprintf("isr7=%#x irr7=%#x tpr=%#x lvt-timer=%#x count=%d svr=%#x",
		r(0x170), r(0x270), r(0x80), r(0x320), r(0x390), r(0xf0))
}
