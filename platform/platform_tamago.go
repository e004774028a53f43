//go:build tamago

package platform

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/gozen-dev/gozen/arch/amd64/irq"
	"github.com/gozen-dev/gozen/arch/amd64/smp"
	"github.com/gozen-dev/gozen/boot"
	"github.com/gozen-dev/gozen/domid"
	"github.com/gozen-dev/gozen/evtchn"
	"github.com/gozen-dev/gozen/evtchn/evxen"
	"github.com/gozen-dev/gozen/gnttab/gntxen"
	"github.com/gozen-dev/gozen/hypercall"
	"github.com/gozen-dev/gozen/xenbus"
	"github.com/gozen-dev/gozen/xenbus/device"
	"github.com/gozen-dev/gozen/xenbus/xsxen"
)

// UpcallVector is the LAPIC vector event-channel upcalls arrive on.
const UpcallVector = 0xf3

// RetryVector is the LAPIC timer vector package irq retries deferred
// wake-ups of the upcall goroutine on.
const RetryVector = 0xf4

// WakeVector is the LAPIC vector of the IPIs between vCPUs and of their
// idle timers (package arch/amd64/smp).
const WakeVector = 0xf5

// HoleLimit bounds the guest-physical hole of the grant table and map
// window: it stays in the write-back part of the low 4 GiB, clear of the
// 32-bit PCI/MMIO area.
const HoleLimit = 0xc0000000

// Platform is what the domain holds of Xen. There is one, made before
// main; Domain returns it.
type Platform struct {
	life *Lifecycle

	events    *evxen.Events
	timerPort evtchn.Port
	timerHits atomic.Uint64
	upcalls   bool // upcalls routed; idle blocks on events

	mu       sync.Mutex
	grants   *gntxen.Grants
	grantErr error
	hole     uint64
	store    *xenbus.Client
	storeErr error
}

var domain *Platform

// Domain returns the domain's platform.
func Domain() *Platform { return domain }

func init() {
	// vCPU 0's vcpu_info first, from vCPU 0, before the event bitmaps are
	// viewed through it (the others': boot.PrepareVCPU)
	if err := boot.RegisterVCPUInfo(0); err != nil {
		print("gozen: ", err.Error(), "; it stays in shared info\n")
	}
	p := &Platform{events: evxen.New(boot.SharedInfoAddr(), boot.VCPUInfo)}
	p.life = NewLifecycle(storePart{p}, grantPart{p}, timePart{}, consolePart{}, eventPart{p})
	domain = p
	n := smp.CountVCPUs()
	if n > 1 {
		if err := irq.EnableSMP(smp.WakeIdleAddr()); err != nil {
			print("gozen: ", err.Error(), "\n")
			n = 1
		}
	}
	if err := p.startEvents(); err != nil {
		print("gozen: ", err.Error(), "; idle will poll\n")
		if n > 1 {
			print("gozen: staying on vCPU 0 of ", n, " (no event upcalls)\n")
		}
		return
	}
	if n > 1 {
		p.startSMP(n)
	}
}

// startSMP brings up vCPUs 1 to n-1 and routes each one's event upcalls
// to the upcall vector, so ports bound to it (BindVCPU) interrupt it.
func (p *Platform) startSMP(n int) {
	err := smp.Start(n, smp.Config{
		WakeVector: WakeVector,
		Pending:    func() bool { return irq.Pending() || p.events.UpcallPending() },
		Kick:       irq.Kick,
		Prepare:    boot.PrepareVCPU,
	})
	if err != nil {
		print("gozen: ", err.Error(), "\n")
	}
	if err := p.events.EnableVCPUs(smp.NumCPU(), UpcallVector); err != nil {
		print("gozen: ", err.Error(), "\n")
	}
}

// startEvents binds VIRQ_TIMER for idle wake-ups, routes upcalls to the
// interrupt goroutine of package irq and switches idle to blocking.
func (p *Platform) startEvents() error {
	if err := p.bindTimer(); err != nil {
		return err
	}
	boot.CPU.LAPIC.Enable()
	if err := irq.Serve(UpcallVector, RetryVector, p.events.Upcall); err != nil {
		return fmt.Errorf("platform: upcall interrupt: %w", err)
	}
	if err := p.events.EnableUpcall(UpcallVector); err != nil {
		return err
	}
	p.upcalls = true
	boot.UseEvents(p.events)
	return nil
}

func (p *Platform) bindTimer() error {
	port, err := p.events.BindVIRQ(evxen.VIRQTimer, func() { p.timerHits.Add(1) })
	if err != nil {
		return fmt.Errorf("platform: binding VIRQ_TIMER: %w", err)
	}
	p.timerPort = port
	return nil
}

// Events returns the domain's event channels.
func (p *Platform) Events() *evxen.Events { return p.events }

// TimerEvents counts VIRQ_TIMER events (the idle loop's wake-up timer).
func (p *Platform) TimerEvents() uint64 { return p.timerHits.Load() }

// Self returns the domain's id from Xen's HVM CPUID leaf, or false when
// Xen does not publish it there (the xenstore client then reads it).
func (p *Platform) Self() (domid.ID, bool) {
	id, ok := boot.DomID()
	return domid.ID(id), ok
}

// Grants returns the domain's grant table, setting it up on first use in
// a hole above the memory map (see GrantHole). A failure is returned
// again by later calls.
func (p *Platform) Grants() (*gntxen.Grants, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.grants != nil || p.grantErr != nil {
		return p.grants, p.grantErr
	}
	var regions []gntxen.Region
	for _, r := range boot.Start.Memmap {
		regions = append(regions, gntxen.Region{Addr: r.Addr, Size: r.Size})
	}
	base, err := gntxen.ChooseHole(regions, gntxen.HoleSize, HoleLimit)
	if err != nil {
		p.grantErr = fmt.Errorf("platform: grant table: %w", err)
		return nil, p.grantErr
	}
	g, err := gntxen.New(base)
	if err != nil {
		p.grantErr = fmt.Errorf("platform: grant table: %w", err)
		return nil, p.grantErr
	}
	if id, ok := p.Self(); ok {
		g.SetSelf(id)
	}
	p.grants, p.hole = g, base
	return g, nil
}

// GrantHole returns the guest-physical address of the grant frames and
// map window (zero before Grants).
func (p *Platform) GrantHole() uint64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.hole
}

// Store returns the domain's xenstore client, connecting on first use.
// Paths are relative to /local/domain/<domid> unless absolute. A failure
// (dom0 started by Xen alone has no xenstore) is returned again by later
// calls.
func (p *Platform) Store() (*xenbus.Client, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.store != nil || p.storeErr != nil {
		return p.store, p.storeErr
	}
	id, known := p.Self()
	c, _, err := xsxen.Connect(p.events, id, known)
	if err != nil {
		p.storeErr = fmt.Errorf("platform: xenstore: %w", err)
		return nil, p.storeErr
	}
	p.store = c
	return c, nil
}

// ConnectStdin connects the console's input side to os.Stdin (a domU
// with a PV console); see boot.ConnectStdin.
func (p *Platform) ConnectStdin() error { return boot.ConnectStdin(p.events) }

// AddDevice adds a connected device to those Suspend and Resume take.
func (p *Platform) AddDevice(d Device) { p.life.AddDevice(d) }

// RemoveDevice drops a closed device.
func (p *Platform) RemoveDevice(d Device) { p.life.RemoveDevice(d) }

// Devices returns the connected devices.
func (p *Platform) Devices() []Device { return p.life.Devices() }

// StartDevices starts the device model (package xenbus/device) over the
// domain's xenstore with drivers registered: every device/<class>/<n> of
// their classes is connected, devices added later too (hot-plug), and the
// bus's devices are suspended and resumed with the platform. onError, if
// not nil, is told of each device that fails (the others go on). The bus
// follows its devices until its Close: the end of ctx does not stop it
// (each connection is bounded by the bus's Timeout, device.DefaultTimeout
// unless set), so a caller may start it under a short deadline.
func (p *Platform) StartDevices(ctx context.Context, onError func(*device.DeviceError), drivers ...device.Driver) (*device.Bus, error) {
	xs, err := p.Store()
	if err != nil {
		return nil, err
	}
	bus := device.NewBus(xs)
	bus.OnError = onError
	for _, d := range drivers {
		if err := bus.Register(d); err != nil {
			return nil, fmt.Errorf("platform: %w", err)
		}
	}
	p.life.AddSource(func() []Device {
		var ds []Device
		for _, d := range bus.Devices() {
			ds = append(ds, d)
		}
		return ds
	})
	if err := bus.Start(context.WithoutCancel(ctx)); err != nil {
		return bus, fmt.Errorf("platform: %w", err)
	}
	return bus, nil
}

// Suspend quiesces the devices, xenstore, grants, time, console and
// events, in that order, before the domain suspends (SCHEDOP_shutdown
// with SHUTDOWN_suspend). If a step refuses, the domain goes on as
// before and the error wraps ErrRefused.
func (p *Platform) Suspend(ctx context.Context) error { return p.life.Suspend(ctx) }

// Times reports how long the steps of the last suspend and resume took.
func (p *Platform) Times() Times { return p.life.Times() }

// SuspendDomain answers the toolstack's suspend request (xl save, xl save
// -c, migration; package xenbus/control calls it once it acknowledged the
// request): Suspend, then the suspend hypercall (SCHEDOP_shutdown with
// SHUTDOWN_suspend), which returns when the domain runs again (after a
// checkpoint, a cancelled save, or in a restored or migrated domain), then
// Resume with what Xen reported. It returns the kind the resume found. If
// Suspend refuses, the domain does not suspend: the error wraps ErrRefused
// and the kind is Cancelled.
func (p *Platform) SuspendDomain(ctx context.Context) (Kind, error) {
	if err := p.Suspend(ctx); err != nil {
		return Cancelled, err
	}
	// The heap's zero pages are left out of the saved image, all but
	// the pages granted to other domains.
	var keep [][2]uint64
	p.mu.Lock()
	g := p.grants
	p.mu.Unlock()
	if g != nil {
		keep = g.SharedFrames(keep)
	}
	boot.PrepareRelease(keep)
	// Nothing may print from here on: the console was flushed, and a
	// restored domain's ring is new until the console part resumes.
	ret, err := boot.EnterSuspend()
	if err != nil {
		// another vCPU did not stop: the domain did not suspend
		k, rerr := p.Resume(true)
		return k, errors.Join(fmt.Errorf("%w: %w", ErrRefused, err), rerr)
	}
	if ret < 0 {
		// Xen refused the hypercall: the domain never stopped
		k, err := p.Resume(true)
		return k, errors.Join(fmt.Errorf("platform: suspend hypercall: %w", hypercall.Check("sched_op(shutdown, suspend)", ret)), err)
	}
	return p.Resume(ret > 0)
}

// Resume brings everything back after the suspend hypercall returned, in
// the reverse order. cancelled is what Xen reported (the hypercall's
// return value); Xen cannot report it to HVM and PVH guests without a
// callback IRQ, so a "new domain" whose timer VIRQ is still bound is
// taken as SameDomain. It returns the kind found and the joined errors of
// the steps that failed.
func (p *Platform) Resume(cancelled bool) (Kind, error) {
	k := Cancelled
	if !cancelled {
		k = NewDomain
		if p.timerPort != 0 && p.events.StillBound(p.timerPort, evxen.VIRQTimer) {
			k = SameDomain
		}
	}
	return k, p.life.Resume(k)
}

// The parts, in suspend order.

type storePart struct{ p *Platform }

func (storePart) Name() string { return "xenstore" }

func (s storePart) Suspend(ctx context.Context) error {
	if c := s.client(); c != nil {
		return c.Suspend(ctx)
	}
	return nil
}

func (s storePart) client() *xenbus.Client {
	s.p.mu.Lock()
	defer s.p.mu.Unlock()
	return s.p.store
}

// Resume takes the ring up again; for SameDomain too, since the toolstack
// may have reset it (the watches are registered again; the store's
// "already registered" answer for a surviving one is fine).
func (s storePart) Resume(k Kind) error {
	c := s.client()
	if c == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), resumeTimeout)
	defer cancel()
	if k == Cancelled {
		return c.Resume(ctx, true, nil, nil)
	}
	_, err := xsxen.Reconnect(ctx, s.p.events, c)
	return err
}

type grantPart struct{ p *Platform }

func (grantPart) Name() string                  { return "grants" }
func (grantPart) Suspend(context.Context) error { return nil }

func (g grantPart) Resume(k Kind) error {
	g.p.mu.Lock()
	t := g.p.grants
	g.p.mu.Unlock()
	if t == nil || k == Cancelled {
		return nil
	}
	if err := t.Resume(k == NewDomain); err != nil {
		return err
	}
	if id, ok := g.p.Self(); ok {
		t.SetSelf(id) // a restored domain has a new id
	}
	return nil
}

type timePart struct{}

func (timePart) Name() string { return "time" }

func (timePart) Suspend(context.Context) error {
	boot.SuspendClock()
	return nil
}

func (timePart) Resume(k Kind) error {
	_, err := boot.ResumeClock(k != Cancelled)
	return err
}

type consolePart struct{}

func (consolePart) Name() string { return "console" }

func (consolePart) Suspend(context.Context) error {
	boot.FlushConsole()
	return nil
}

func (consolePart) Resume(k Kind) error {
	if k == Cancelled {
		return nil
	}
	if err := boot.ResumeConsole(); err != nil {
		return err
	}
	return boot.ResumeStdin()
}

type eventPart struct{ p *Platform }

func (eventPart) Name() string { return "events" }

// Suspend has nothing to do: with more than one vCPU, boot.EnterSuspend
// stops the others around the hypercall itself.
func (eventPart) Suspend(context.Context) error { return nil }

// Resume comes first in a resume. Unless cancelled, the shared-info page,
// which holds the event bitmaps, is added again before anything else (a
// restored domain has none: binding or scanning ports before it would
// work on a stale copy).
func (e eventPart) Resume(k Kind) error {
	ev := e.p.events
	if k != Cancelled {
		if err := boot.ResumeSharedInfo(); err != nil {
			return err
		}
	}
	switch k {
	case Cancelled:
		ev.Upcall() // deliver what came meanwhile
		return nil
	case NewDomain:
		ev.Reset()
		if err := e.p.bindTimer(); err != nil {
			return err
		}
	}
	if !e.p.upcalls {
		return nil
	}
	// every vCPU's upcall vector again: Xen keeps them only in the
	// domain they were set in
	if err := ev.ResumeVCPUs(UpcallVector); err != nil {
		return err
	}
	return ev.EnableUpcall(UpcallVector)
}
