// Package platform is the one home of what a Gozen guest holds of Xen:
// its event channels, grant table, xenstore connection, console and
// clock, and the list of connected devices, with the ordered steps that
// suspend and resume them.
//
// In the guest (GOOS=tamago) [Domain] returns the domain's platform, set
// up before main: event upcalls routed and the idle loop blocking on
// them. The grant table and the xenstore connection are set up on first
// use, so an app that needs neither pays for neither:
//
//	p := platform.Domain()
//	xs, err := p.Store()   // *xenbus.Client
//	mem, err := p.Grants() // *gntxen.Grants
//	ev := p.Events()       // *evxen.Events
//
// # Suspend and resume
//
// [Lifecycle] runs the steps in a fixed order, as Linux's
// drivers/xen/manage.c and Mini-OS's pre_suspend/post_suspend do:
// Suspend takes the devices (frontends) first, then the parts in the
// order they were given (in the guest: xenstore, grants, time, console,
// events); Resume runs the parts in the reverse order, then the devices.
// A part that cannot suspend refuses: the parts and devices already
// suspended are resumed as after a cancelled suspend, and the error names
// the part and wraps [ErrRefused].
//
// In the guest, Platform.SuspendDomain is the whole suspend that package
// xenbus/control makes on the toolstack's request: Suspend, the suspend
// hypercall, then Resume with what it returned. A resume that is not
// cancelled first adds the shared-info page again (the events step, the
// first to resume), since the event bitmaps live there, and routes every
// vCPU's upcalls again. With more than one vCPU the hypercall itself is
// made on vCPU 0 with the other vCPUs stopped, and the page and every
// vCPU's time area are back before they go on (boot.EnterSuspend).
//
// What a resume found is a [Kind]. Xen reports "new domain" to HVM and PVH
// guests whenever it cannot write the cancelled flag (tools/libs/guest
// xg_resume.c writes it only with a callback IRQ), so the guest checks
// for itself: its timer VIRQ still bound means [SameDomain]. What each
// kind does to a port, a grant and a watch is part of the portable
// contracts: see packages evtchn and gnttab ("Suspend and resume") and
// xenbus (Client.Suspend, Client.Resume).
package platform

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
)

// Kind is what a resume found.
type Kind int

const (
	// Cancelled means the suspend did not happen: the domain went on.
	Cancelled Kind = iota
	// SameDomain means Xen reported a new domain but the domain's own
	// bindings survived (a checkpoint such as xl save -c, or a cancelled
	// suspend Xen could not report): what the toolstack may have reset
	// (xenstore and console rings) is taken up again, nothing is lost.
	SameDomain
	// NewDomain means the domain was restored or migrated: event
	// channels, grants and mappings are gone and are made anew.
	NewDomain
)

var kindNames = [...]string{"cancelled", "same-domain", "new-domain"}

// String returns "cancelled", "same-domain" or "new-domain".
func (k Kind) String() string {
	if k >= 0 && int(k) < len(kindNames) {
		return kindNames[k]
	}
	return fmt.Sprintf("Kind(%d)", int(k))
}

// Part is one piece of the platform that a suspend quiesces and a resume
// brings back.
type Part interface {
	// Name names the part in errors, e.g. "xenstore".
	Name() string
	// Suspend quiesces the part, or refuses with an error.
	Suspend(ctx context.Context) error
	// Resume brings the part back after a suspend of kind k.
	Resume(k Kind) error
}

// Device is a connected frontend the platform suspends and resumes (the
// device model of package xenbus/device provides them).
type Device interface {
	// Name is "<class>/<id>", e.g. "vif/0".
	Name() string
	// Suspend quiesces the device before the domain suspends: no new
	// requests, in-flight ones completed or recorded for re-issue.
	Suspend(ctx context.Context) error
	// Resume brings the device back. cancelled means the domain did not
	// move (rings and grants still valid); otherwise the domain is new
	// and the frontend reconnects to its backend from scratch.
	Resume(cancelled bool) error
	// Close disconnects from the backend and releases every grant and
	// port.
	Close() error
}

// ErrRefused is wrapped by Suspend when a part or device cannot quiesce;
// the domain then goes on as before.
var ErrRefused = errors.New("platform: suspend refused")

// ErrState is wrapped when Suspend or Resume is called out of turn.
var ErrState = errors.New("platform: suspend and resume out of turn")

// Lifecycle runs the ordered suspend and resume of a set of parts and
// devices. It is portable: the guest's platform is one, and tests build
// others from fakes. The zero value has no parts.
type Lifecycle struct {
	mu        sync.Mutex
	parts     []Part
	devices   []Device
	sources   []func() []Device
	suspended []Device // the devices the last Suspend took, nil if none
	inSuspend bool
	times     Times
}

// Times is how long the steps of the last suspend and resume took.
type Times struct {
	// SuspendDevices and SuspendParts: quiescing the devices, then the
	// parts; ResumeParts and ResumeDevices: the way back.
	SuspendDevices, SuspendParts, ResumeParts, ResumeDevices time.Duration
	// Resumes is how long each part's resume took, in resume order.
	Resumes []StepTime
}

// StepTime is how long one part's step took.
type StepTime struct {
	Name string
	Took time.Duration
}

// String lists the steps as "name 12ms, name 3ms".
func (t Times) String() string {
	var b strings.Builder
	for i, s := range t.Resumes {
		if i > 0 {
			b.WriteString(", ")
		}
		fmt.Fprintf(&b, "%s %v", s.Name, s.Took.Round(time.Millisecond))
	}
	return b.String()
}

// Times reports how long the steps of the last suspend and resume took.
func (l *Lifecycle) Times() Times {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.times
}

// NewLifecycle returns a lifecycle over parts, given in suspend order.
func NewLifecycle(parts ...Part) *Lifecycle {
	return &Lifecycle{parts: parts}
}

// AddDevice adds a connected device; it is suspended before the parts.
func (l *Lifecycle) AddDevice(d Device) {
	l.mu.Lock()
	l.devices = append(l.devices, d)
	l.mu.Unlock()
}

// RemoveDevice drops d from the list (after it was closed).
func (l *Lifecycle) RemoveDevice(d Device) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for i, x := range l.devices {
		if x == d {
			l.devices = append(l.devices[:i], l.devices[i+1:]...)
			return
		}
	}
}

// AddSource adds a source of devices that come and go (a device bus):
// each Suspend takes the devices it lists then, after those added with
// AddDevice.
func (l *Lifecycle) AddSource(list func() []Device) {
	l.mu.Lock()
	l.sources = append(l.sources, list)
	l.mu.Unlock()
}

// Devices returns the connected devices: those added, then those the
// sources list.
func (l *Lifecycle) Devices() []Device {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.devicesLocked()
}

func (l *Lifecycle) devicesLocked() []Device {
	ds := append([]Device(nil), l.devices...)
	for _, src := range l.sources {
		ds = append(ds, src()...)
	}
	return ds
}

// Suspended reports whether Suspend succeeded and Resume has not run.
func (l *Lifecycle) Suspended() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.inSuspend
}

// Suspend quiesces the devices, then the parts in order. If one refuses,
// everything already suspended is resumed (as Cancelled, in reverse
// order) and the error names it and wraps ErrRefused and its own error.
func (l *Lifecycle) Suspend(ctx context.Context) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.inSuspend {
		return fmt.Errorf("platform: suspend: already suspended: %w", ErrState)
	}
	devices := l.devicesLocked()
	l.times = Times{}
	start := time.Now()
	for i, d := range devices {
		if err := d.Suspend(ctx); err != nil {
			rerr := l.undo(devices[:i], nil)
			return errors.Join(fmt.Errorf("platform: suspend: device %s: %w: %w", d.Name(), ErrRefused, err), rerr)
		}
	}
	l.times.SuspendDevices = time.Since(start)
	start = time.Now()
	for i, p := range l.parts {
		if err := p.Suspend(ctx); err != nil {
			rerr := l.undo(devices, l.parts[:i])
			return errors.Join(fmt.Errorf("platform: suspend: %s: %w: %w", p.Name(), ErrRefused, err), rerr)
		}
	}
	l.times.SuspendParts = time.Since(start)
	l.inSuspend, l.suspended = true, devices
	return nil
}

// undo resumes, as Cancelled and in reverse order, what a refused Suspend
// had already suspended.
func (l *Lifecycle) undo(devices []Device, parts []Part) error {
	var errs []error
	for i := len(parts) - 1; i >= 0; i-- {
		if err := parts[i].Resume(Cancelled); err != nil {
			errs = append(errs, fmt.Errorf("platform: undoing suspend: %s: %w", parts[i].Name(), err))
		}
	}
	for i := len(devices) - 1; i >= 0; i-- {
		if err := devices[i].Resume(true); err != nil {
			errs = append(errs, fmt.Errorf("platform: undoing suspend: device %s: %w", devices[i].Name(), err))
		}
	}
	return errors.Join(errs...)
}

// Resume brings the parts back in the reverse of their suspend order,
// then the devices (told cancelled unless k is NewDomain). Every step
// runs even if an earlier one fails; the errors are joined, each naming
// its step.
func (l *Lifecycle) Resume(k Kind) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if !l.inSuspend {
		return fmt.Errorf("platform: resume (%s): not suspended: %w", k, ErrState)
	}
	devices := l.suspended
	l.inSuspend, l.suspended = false, nil
	var errs []error
	start := time.Now()
	l.times.Resumes = l.times.Resumes[:0]
	for i := len(l.parts) - 1; i >= 0; i-- {
		t0 := time.Now()
		if err := l.parts[i].Resume(k); err != nil {
			errs = append(errs, fmt.Errorf("platform: resume (%s): %s: %w", k, l.parts[i].Name(), err))
		}
		l.times.Resumes = append(l.times.Resumes, StepTime{l.parts[i].Name(), time.Since(t0)})
	}
	l.times.ResumeParts = time.Since(start)
	start = time.Now()
	for _, d := range devices {
		if err := d.Resume(k != NewDomain); err != nil {
			errs = append(errs, fmt.Errorf("platform: resume (%s): device %s: %w", k, d.Name(), err))
		}
	}
	l.times.ResumeDevices = time.Since(start)
	return errors.Join(errs...)
}

// resumeTimeout bounds each step of a resume that talks to a backend.
const resumeTimeout = 30 * time.Second
