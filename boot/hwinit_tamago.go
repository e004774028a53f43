//go:build tamago

package boot

import (
	"crypto/fips140"
	"math"
	"os"
	"runtime/goos"
	"strings"
	"sync/atomic"
	"unsafe"
	_ "unsafe"

	"github.com/usbarmory/tamago/amd64"
	"github.com/usbarmory/tamago/amd64/lapic"

	"github.com/gozen-dev/gozen/arch/amd64/irq"
	"github.com/gozen-dev/gozen/arch/amd64/trap"
	"github.com/gozen-dev/gozen/arch/amd64/xencpuid"
	"github.com/gozen-dev/gozen/hypercall"
	"github.com/gozen-dev/gozen/internal/phys"
)

// CPU is the boot vCPU (TamaGo's amd64 CPU: exceptions, interrupts, LAPIC).
var CPU = &amd64.CPU{TimerMultiplier: 1}

// Start is the decoded start info the domain booted with.
var Start *StartInfo

// Xen describes the hypervisor's CPUID leaves.
var Xen *xencpuid.Leaves

// SharedInfoAddr returns the address of the mapped shared-info page.
func SharedInfoAddr() uintptr { return sharedInfoPage }

// IsDom0 reports whether this domain is the initial domain.
func IsDom0() bool { return Start != nil && Start.IsInitDomain() }

func unsafeAdd(p uintptr) unsafe.Pointer { return phys.Pointer(p) }

//go:linkname hwinit1 runtime/goos.Hwinit1
func hwinit1() {
	if err := hypercall.Init(hypercallPage); err != nil {
		panic(err)
	}
	goos.Exit = exit
	goos.Idle = pollIdle

	CPU.LAPIC = &lapic.LAPIC{Base: amd64.LAPIC_BASE}

	var err error
	if Xen, err = xencpuid.Detect(); err != nil {
		panic(err)
	}
	n := memmapEntries
	Start, err = ParseStartInfo(startInfoRaw[:], memmapRaw[:], n, int(memmapStride), cmdlineRaw[:])
	if err != nil {
		print("gozen: ", err.Error(), "\n")
		exit(1)
	}
	initConsole()

	// TamaGo's own timer helpers convert TSC ticks with TimerMultiplier.
	if ti := TimeInfoNow(); ti.TSCHz() != 0 {
		hz := ti.TSCHz()
		CPU.TimerMultiplier = 1e9 / float64(hz)
		CPU.TimerOffset = nanotime() - int64(float64(rdtsc())*CPU.TimerMultiplier)
	}
}

// IdleEvents is what the idle loop asks of the domain's event channels
// before it blocks the vCPU: package platform sets it with UseEvents once
// upcalls are routed.
type IdleEvents interface {
	// UpcallPending reports whether Xen flagged events not yet scanned.
	UpcallPending() bool
	// PollPorts appends every bound port to dst for SCHEDOP_poll, or
	// reports false when there are more than SCHEDOP_poll takes.
	PollPorts(dst []uint32) ([]uint32, bool)
}

var idleEvents IdleEvents

// UseEvents switches idle from polling Xen's timer to blocking until the
// runtime's next timer or an event on any port ev has bound (or, with the
// boot option gozen.idle=hlt, to HLT with a one-shot timer). Call it after
// event upcalls are routed and VIRQ_TIMER is bound.
func UseEvents(ev IdleEvents) {
	idleEvents = ev
	if idleHLT {
		goos.Idle = idleHalt
		return
	}
	goos.Idle = idle
}

func init() {
	// Go's FIPS 140-3 DRBG seeds itself by touching its 32 MiB entropy
	// buffer, which a trimmed image's heap overlaps (trim.go).
	if _, trimmed := Trimmed(); trimmed && fips140.Enabled() {
		print("gozen: FIPS 140-3 mode needs Go's entropy buffer, which this image was trimmed of; build it with GOZEN_TRIM=0\n")
		exit(1)
	}
	CPU.EnableExceptions()
	trap.Install(trap.Config{
		HypercallPage: hypercallPage,
		RAMStart:      ramStart,
		RAMEnd:        ramStart + ramSize,
		Out:           faultOut,
		Crash:         faultCrash,
	})
	// os.Args: a program name and the words of the command line (xl's
	// extra=), so that the flag package works as on any OS.
	os.Args = []string{"gozen"}
	if Start != nil {
		for _, w := range strings.Fields(Start.Cmdline) {
			if strings.HasPrefix(w, "gozen.") {
				bootOption(w)
				continue
			}
			os.Args = append(os.Args, w)
		}
	}
}

// faultOut writes a CPU exception report to port 0xE9 (Xen's serial, as
// "(dN)" lines) and to the console (the PV ring, or console_io for dom0).
func faultOut(b []byte) {
	for _, c := range b {
		outb(0xe9, c)
		if consoleMode != consoleEarly {
			printk(c)
		}
	}
}

// faultCrash ends the domain after a fault report.
func faultCrash() {
	flushConsole()
	for {
		xenShutdown(hypercall.ShutdownCrash)
	}
}

// exit shuts the domain down: poweroff for status 0, crash otherwise (the
// runtime exits with 2 after printing a panic's trace).
func exit(code int32) {
	if code != 0 {
		print("exit status ", code, "\n")
	}
	flushConsole()
	reason := uint32(hypercall.ShutdownPoweroff)
	if code != 0 {
		reason = hypercall.ShutdownCrash
	} else if rebootOnExit.Load() {
		reason = hypercall.ShutdownReboot
	}
	xenShutdown(reason)
	for {
		xenShutdown(reason)
	}
}

// pollPorts holds the ports of one SCHEDOP_poll (the most it takes).
var pollPorts [128]uint32

// idle blocks the vCPU until the runtime's next timer (pollUntil, in
// nanotime) or an event on any bound port. With interrupts off it checks
// that no interrupt or upcall is pending, then blocks in SCHEDOP_poll on
// every bound port with the timer as timeout: Xen wakes the vCPU for any of
// them (a port pending before the call returns at once, so no wake-up is
// lost), and the upcall interrupt is taken when interrupts come back on.
//
// The other design, HLT with a one-shot VIRQ_TIMER, was measured in the
// same rig: equal latency for short sleeps, but time.Sleep(1s) came back
// 14-15 ms late against 1-2 ms with poll, so poll is the default. It stays
// the fallback when more ports are bound than SCHEDOP_poll takes.
func idle(pollUntil int64) {
	var timeout uint64
	if pollUntil != math.MaxInt64 {
		if pollUntil <= nanotime() {
			return
		}
		timeout = ToSystemTime(pollUntil)
	}
	cli()
	// An interrupt taken whose wake-up the entry had to defer, or events
	// Xen flagged and nobody scanned yet: wake the service goroutine from
	// here, where no runtime code is interrupted, and let the scheduler
	// run it.
	if irq.Pending() || idleEvents.UpcallPending() {
		irq.Kick()
		sti()
		return
	}
	ports, ok := idleEvents.PollPorts(pollPorts[:0])
	if !ok {
		sti()
		if timeout != 0 && hypercall.SetSingleshotTimer(0, timeout, 0) != nil {
			return
		}
		irq.Halt()
		return
	}
	hypercall.Poll(ports, timeout)
	sti()
}

// idleHLT selects idleHalt (boot option gozen.idle=hlt).
var idleHLT bool

// bootOption applies one "gozen.name=value" word of the command line;
// such words are not passed to the program in os.Args.
//
//	gozen.idle=hlt   idle with HLT and a one-shot VIRQ_TIMER instead of
//	                 SCHEDOP_poll (for comparisons and diagnosis)
func bootOption(w string) {
	switch w {
	case "gozen.idle=hlt":
		idleHLT = true
	case "gozen.idle=poll":
		idleHLT = false
	default:
		print("gozen: unknown boot option ", w, "\n")
	}
}

// idleHalt blocks with HLT until an interrupt, after arming Xen's one-shot
// timer for the runtime's next timer.
func idleHalt(pollUntil int64) {
	cli()
	if irq.Pending() || idleEvents.UpcallPending() {
		irq.Kick()
		sti()
		return
	}
	sti()
	if pollUntil != math.MaxInt64 {
		if pollUntil <= nanotime() {
			return
		}
		if hypercall.SetSingleshotTimer(0, ToSystemTime(pollUntil), 0) != nil {
			return
		}
	}
	irq.Halt()
}

// pollIdle is the idle hook until event upcalls work.
func pollIdle(pollUntil int64) {
	var timeout uint64
	if pollUntil != math.MaxInt64 {
		if pollUntil <= nanotime() {
			return
		}
		timeout = ToSystemTime(pollUntil)
	}
	hypercall.Poll(nil, timeout)
}

// PowerOff shuts the domain down cleanly (as returning from main does).
func PowerOff() { exit(0) }

var rebootOnExit atomic.Bool

// RebootOnExit makes every later clean exit (returning from main,
// os.Exit(0), PowerOff) reboot the domain instead of powering it off.
// Package xenbus/control sets it when the toolstack asks for a reboot, so
// an app that ends main when its shutdown context is canceled reboots.
func RebootOnExit() { rebootOnExit.Store(true) }

// Reboot asks Xen to reboot the domain.
func Reboot() {
	flushConsole()
	hypercall.Shutdown(hypercall.ShutdownReboot)
}

// RuntimeRAM returns the bytes of RAM given to the Go runtime (image, heap
// and stack), from 1 MiB to the end of that memory-map region.
func RuntimeRAM() uint64 { return ramSize }

// EarlyPrint writes s to I/O port 0xE9, which Xen prints at once on its own
// console as "(dN) ..." lines (with guest_loglvl=all): the lowest-latency
// channel to whoever watches the hypervisor's serial line.
func EarlyPrint(s string) {
	for i := 0; i < len(s); i++ {
		outb(0xe9, s[i])
	}
}

// DomID returns this domain's id from Xen's HVM CPUID leaf, or false when
// Xen does not publish it there.
func DomID() (uint16, bool) {
	h, err := Xen.HVMInfo()
	if err != nil || h.Features&xencpuid.HVMFeatureDomID == 0 {
		return 0, false
	}
	return uint16(h.DomID), true
}
