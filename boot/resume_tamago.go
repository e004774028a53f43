//go:build tamago

package boot

import (
	"fmt"
	"time"
	"unsafe"

	"github.com/gozen-dev/gozen/hypercall"
)

// The clock and the console across a domain suspend. Package platform
// calls these in its ordered Suspend and Resume; nothing else should.

// suspendedAt is the runtime clock when SuspendClock ran.
var suspendedAt int64

// SuspendClock records the clock before the domain suspends, so that
// ResumeClock can keep it from going backwards.
func SuspendClock() { suspendedAt = nanotime() }

// ResumeSharedInfo adds the shared-info page again at its address after
// a suspend that Xen reported as a resume into a new domain: a restored
// domain has none there (the page at that address is then ordinary memory
// holding the saved copy), and the event-channel bitmaps, vCPU 0's
// vcpu_info and the wall clock are read from it, so it comes first in a
// resume, before any event channel is bound or scanned. In a domain that
// did not move it changes nothing.
func ResumeSharedInfo() error {
	if err := hypercall.AddToPhysmap(hypercall.MapSpaceSharedInfo, 0, uint64(sharedInfoPage>>12)); err != nil {
		return fmt.Errorf("boot: resume: shared info: %w", err)
	}
	return nil
}

// ResumeClock brings the clock back after a suspend. With reinit (Xen
// reported a resume into a new domain) the vCPU time area is registered
// again: a restored domain has none (ResumeSharedInfo has already put the
// shared-info page back). In all cases the runtime's clock, which is
// also its monotonic clock, is then kept from going backwards: a new host's
// Xen system time starts elsewhere, so the offset to it is moved by what
// the clock lost, and time.Now stays monotonic across the resume. It
// returns that correction in nanoseconds.
func ResumeClock(reinit bool) (int64, error) {
	if reinit {
		err := hypercall.RegisterVCPUTimeArea(0, uintptr(unsafe.Pointer(&vcpuTime)))
		if err != nil {
			// the clock falls back to vCPU 0's record in shared info
			vcpuTimeResult = -1
		} else {
			vcpuTimeResult = 0
		}
	}
	fix := resumeCorrection(suspendedAt, nanotime())
	wallOffset += fix
	return fix, nil
}

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
// After PrepareRelease, the heap's zero pages are given back to Xen just
// before the hypercall and populated again just after it (see
// release_tamago.go): the toolstack then saves, sends and restores only
// the pages in use.
func EnterSuspend() int64 {
	t0, c0 := nanotime(), rdtsc()
	cli()
	flushConsole()
	releaseZero()
	ret := hypercall.Shutdown(hypercall.ShutdownSuspend)
	repopulate()
	sti()
	timeRelease(time.Duration(nanotime()-t0), rdtsc()-c0)
	return ret
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
