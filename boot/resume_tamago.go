//go:build tamago

package boot

import (
	"errors"
	"fmt"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/gozen-dev/gozen/arch/amd64/smp"
	"github.com/gozen-dev/gozen/hypercall"
)

// The clock and the console across a domain suspend. Package platform
// calls these in its ordered Suspend and Resume; nothing else should.

// suspendedAt is the runtime clock when SuspendClock ran.
var suspendedAt int64

// SuspendClock records the clock before the domain suspends, so that the
// resume can keep it from going backwards.
func SuspendClock() { suspendedAt, resumedLocked = nanotime(), false }

// ResumeSharedInfo adds the shared-info page again at its address after
// a suspend that Xen reported as a resume into a new domain: a restored
// domain has none there (the page at that address is then ordinary memory
// holding the saved copy), and the event-channel bitmaps, the vcpu_info
// records and the wall clock are read from it, so it comes first in a
// resume, before any event channel is bound or scanned. EnterSuspend has
// already done so before it let the other vCPUs go on; this reports what
// Xen answered then, and adds the page again. In a domain that did not
// move it changes nothing.
func ResumeSharedInfo() error {
	if r := shinfoResult; r != 0 {
		shinfoResult = 0
		return fmt.Errorf("boot: resume: shared info: %w", hypercall.Check("memory_op(add_to_physmap)", r))
	}
	if err := hypercall.AddToPhysmap(hypercall.MapSpaceSharedInfo, 0, uint64(sharedInfoPage>>12)); err != nil {
		return fmt.Errorf("boot: resume: shared info: %w", err)
	}
	return nil
}

// ResumeClock reports how the clock came back after a suspend:
// EnterSuspend has already registered every vCPU's time area again and
// kept the clock from going backwards (a new host's Xen system time starts
// elsewhere: the offset to it was moved by what the clock lost, so that
// time.Now stays monotonic across the resume), before any other vCPU ran.
// It returns that correction in nanoseconds. reinit is whether Xen
// reported a resume into a new domain; if no suspend hypercall was made
// through EnterSuspend since SuspendClock (a caller that suspended the
// platform's parts and resumes them itself), ResumeClock does that work
// for vCPU 0 here: with reinit it registers vCPU 0's time area again, and
// it corrects the clock from the reading SuspendClock made.
func ResumeClock(reinit bool) (int64, error) {
	if !resumedLocked {
		if reinit {
			registerTime(0)
		}
		now, _ := rawNanotime()
		lastFix = resumeCorrection(suspendedAt, now)
		wallOffset += lastFix
	}
	fix := lastFix
	lastFix, resumedLocked = 0, false
	return fix, nil
}

// ErrFreeze is returned by EnterSuspend when another vCPU did not stop:
// the domain did not suspend.
var ErrFreeze = errors.New("boot: suspend: another vCPU did not stop within a second; the domain did not suspend")

// EnterSuspend makes the suspend hypercall (SCHEDOP_shutdown with
// SHUTDOWN_suspend; an HVM or PVH guest passes no start-info frame) once
// package platform has suspended everything, and returns when the domain
// runs again: Xen's return value, 1 for a suspend that was cancelled (in
// practice only written for guests with a callback IRQ), 0 otherwise (a
// checkpoint looks the same as a restore: see platform.Resume), negative
// if Xen refused the call.
//
// Interrupts are off from the last console flush to the return: no
// upcall runs in between, and a restored domain, which has no upcall
// vector yet, takes none before package platform sets it again. The
// flush is made again here, with nothing between it and the hypercall
// that can switch goroutines, so that output made since the platform's
// console step (by a goroutine the runtime ran meanwhile) is not left in
// a ring a restore will clear.
//
// With more than one vCPU, as Linux does: the other vCPUs are stopped
// (smp.Freeze), the hypercall is made on vCPU 0 (smp.SuspendOn0), and,
// unless Xen cancelled, before they go on (smp.Thaw) the shared-info page
// is added again and every vCPU's vcpu_info and time area registered
// again (another vCPU is taken down for it, VCPUOP_down, and up again),
// and the clock is corrected: so no vCPU reads a stale page, a stale
// vcpu_info or a stale time record. If a
// vCPU does not stop, the domain does not suspend and the error is
// ErrFreeze.
//
// After PrepareRelease, the heap's zero pages are given back to Xen just
// before the hypercall and populated again just after it (see
// release_tamago.go): the toolstack then saves, sends and restores only
// the pages in use. Both happen with the other vCPUs stopped, so that none
// writes a released page.
func EnterSuspend() (int64, error) {
	t0, c0 := nanotime(), rdtsc()
	cli()
	flushConsole()
	ret, ok := suspendLocked()
	sti()
	if !ok {
		return 0, ErrFreeze
	}
	timeRelease(time.Duration(nanotime()-t0), rdtsc()-c0)
	return ret, nil
}

// suspendLocked is EnterSuspend's part with the other vCPUs stopped: it
// must not allocate, take a lock or grow its stack (nosplit throughout).
//
//go:nosplit
func suspendLocked() (int64, bool) {
	if !smp.Freeze() {
		return 0, false
	}
	ref := nanotime()
	if suspendedAt > ref {
		ref = suspendedAt
	}
	releaseZero()
	ret := smp.SuspendOn0()
	repopulate()
	if ret == 0 {
		resumeLocked(ref)
	}
	smp.Thaw()
	return ret, true
}

// Static arguments and results of resumeLocked.
var (
	shinfoArg struct {
		domid uint16
		size  uint16
		space uint32
		idx   uint64
		gpfn  uint64
	}
	shinfoResult  int64 // add_to_physmap's answer, for ResumeSharedInfo
	lastFix       int64 // the clock's correction, for ResumeClock
	resumedLocked bool  // resumeLocked ran since SuspendClock
)

// resumeLocked brings back, with the other vCPUs still stopped, what they
// would read as soon as they go on: the shared-info page, every vCPU's
// vcpu_info and time area, and a clock that does not go back from ref
// (the latest reading before the suspend). Xen keeps a registered area
// only in the domain it was registered in; a checkpoint keeps it, and
// registering a time area again is harmless (a vcpu_info area Xen refuses
// then: see vcpuinfo_tamago.go). An area can be registered for another
// vCPU only while it is down: as Linux's xen_vcpu_restore does, each other
// vCPU is taken down, its vcpu_info registered, then its time area, and
// it is brought up again.
//
//go:nosplit
func resumeLocked(ref int64) {
	shinfoArg.domid = 0x7ff0 // DOMID_SELF
	shinfoArg.space = hypercall.MapSpaceSharedInfo
	shinfoArg.idx = 0
	shinfoArg.gpfn = uint64(sharedInfoPage >> 12)
	shinfoResult = hypercall.Raw(opMemory, xenmemAddToPhysmap, uintptr(unsafe.Pointer(&shinfoArg)), 0, 0, 0)

	self := smp.Current()
	n := smp.NumCPU()
	for id := 0; id < n; id++ {
		if id == self {
			resumeVCPUAreas(id)
			continue
		}
		if hypercall.Raw(opVCPU, vcpuopDown, uintptr(id), 0, 0, 0) != 0 {
			// neither area can be registered again; the time is read
			// from the vcpu_info as it was
			if id > 0 {
				atomic.StoreUint32(&apTimeOK[id], 0)
			} else {
				vcpuTimeResult = -1
			}
			continue
		}
		resumeVCPUAreas(id)
		hypercall.Raw(opVCPU, vcpuopUp, uintptr(id), 0, 0, 0)
	}

	now, _ := rawNanotime()
	lastFix = resumeCorrection(ref, now)
	wallOffset += lastFix
	resumedLocked = true
}

// resumeVCPUAreas registers vCPU id's vcpu_info and time area again after
// a suspend; vCPU id is the caller or down.
//
//go:nosplit
func resumeVCPUAreas(id int) {
	if atomic.LoadUint32(&vcpuInfoOK[id]) != 0 {
		registerVCPUInfo(id)
	}
	registerTime(id)
}

// FlushConsole pushes out buffered console output (before a suspend or a
// shutdown).
func FlushConsole() { flushConsole() }

// ResumeConsole re-reads the PV console's page and event channel from the
// HVM parameters after a resume into a new domain (the toolstack sets up a
// fresh ring) and takes it up where its indices stand. Console input, if
// connected, is re-attached by the caller with ResumeStdin.
func ResumeConsole() error {
	if consoleMode != consoleRing {
		return nil
	}
	pfn, err := hypercall.GetParam(hypercall.HVMParamConsolePFN)
	if err != nil || pfn == 0 {
		return fmt.Errorf("boot: resume: no PV console (HVM_PARAM_CONSOLE_PFN %d): %v", pfn, err)
	}
	port, err := hypercall.GetParam(hypercall.HVMParamConsoleEvtchn)
	if err != nil || port == 0 {
		return fmt.Errorf("boot: resume: no PV console event channel (%d): %v", port, err)
	}
	page := uintptr(pfn << 12)
	out := unsafe.Slice((*byte)(unsafeAdd(page+consOut)), consOutSize)
	if err := ringOut.init(out, u32(page+consOutCons), u32(page+consOutProd), consoleNow, consoleKick, consoleYield); err != nil {
		return fmt.Errorf("boot: resume: PV console: %w", err)
	}
	consolePage, consolePort = page, uint32(port)
	return nil
}
