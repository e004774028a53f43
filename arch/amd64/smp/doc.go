// Package smp runs a Gozen guest's Go code on every vCPU the domain has.
//
// Xen starts a PVH domain on vCPU 0 only. Start brings up the others
// without real mode or INIT/SIPI: for each one it fills a 64-bit struct
// vcpu_hvm_context (Context) and makes VCPUOP_initialise and VCPUOP_up, so
// the vCPU enters apEntry in long mode with the boot vCPU's page tables
// (CR3, CR0, CR4 and EFER copied), its own stack, and its record in RDI.
// There it loads its own GDT and task-state segment (package trap's
// CPUTables: exception and interrupt stacks of its own), the shared IDT,
// points GS at its record (Current reads the vCPU id from GS:0), enables
// its local APIC and parks with HLT until the runtime gives it an M.
//
// The number of vCPUs comes from Xen, not from CPUID topology: Count
// probes VCPUOP_is_up upwards until Xen answers -ENOENT (no such vCPU).
// Xen's local APIC ids are 2 * vcpu_id; each vCPU reads its own.
//
// Runtime hooks (runtime/goos of the TamaGo compiler): Task is called by
// the runtime (newosproc) for each new M; it hands the M to the next
// parked vCPU and wakes it with an IPI, and that vCPU runs mstart on the
// M's g0 stack. On GOOS=tamago an idle M keeps its P, so the runtime
// asks for one M per P: GOMAXPROCS - 1 Tasks. When it asks for more
// (after a stop-the-world, for runtime.LockOSThread), the vCPUs host them
// (hosting_tamago.go): Ms switch at the runtime's yield points, and Task
// puts the new M into the pool of Ms waiting for a vCPU. ProcID returns
// Current.
// Start sets runtime.NumCPU (the runtime's own count stays 1 otherwise)
// and GOMAXPROCS to the vCPU count.
//
// Idle: each vCPU's scheduler calls Idle when it finds nothing to run.
// A vCPU halts (STI; HLT) with its local APIC's one-shot timer armed for
// the runtime's next timer, so an idle vCPU costs nothing until an
// interrupt, an IPI from another vCPU or its timer. The runtime gives no
// hook when it makes work runnable for another vCPU to steal, so the idle
// policy (Policy) keeps watch instead: while another vCPU runs Go code an
// idle one naps briefly (growing from NapMin to NapMax while it finds
// nothing) and steals what appeared; when none runs it sleeps until its
// timer, at most SleepMax; a vCPU woken from a sleep by its timer or an
// interrupt wakes one sleeping peer to watch it when no peer naps
// already, and a napping vCPU that sees a peer Running for longer than
// RouseSleepers wakes all sleepers (a stop-the-world waits for every P).
// An idle vCPU that sees a peer Running for longer than StaleRunning
// readies a goroutine, so that Ms the runtime left waiting for a P after
// a stop-the-world get one again (see Idle).
//
// Interrupts: device interrupts (Xen's event-channel upcall) are taken
// by package irq's entry on whichever vCPU Xen raises them; with more
// than one vCPU that entry only records the interrupt and wakes an idle
// vCPU (WakeIdleAddr), whose Idle then makes the upcall goroutine
// runnable through the runtime (a channel send), since waking it from
// interrupt context is not safe while other vCPUs run the scheduler.
//
// Suspend: Freeze stops every other vCPU in its wake-vector gate
// (interrupts off, wherever its code was) for package boot's suspend,
// SuspendOn0 makes the suspend hypercall on vCPU 0 (from its gate when
// the caller runs elsewhere) and Thaw lets them go on; a restore brings
// every vCPU back where it stopped. Config.Prepare lets the platform
// register a vCPU's vcpu_info and time area while it is still down
// (package boot registers every vCPU's vcpu_info with
// VCPUOP_register_vcpu_info: the shared-info page holds those of vCPUs 0
// to 31 only, and Xen's 2-level event ABI serves any number of vCPUs
// through them).
//
// vCPUs are limited to MaxCPUs (128). Hot-unplug is not supported: an M
// can never leave the runtime.
package smp

import "time"

// MaxCPUs is the most vCPUs Start brings up: 128, the most Xen gives an
// HVM or PVH domain (HVM_MAX_VCPUS), and the most the xAPIC IPIs reach:
// Xen's local APIC ids are 2 * vcpu_id, and a physical xAPIC destination
// is 8 bits (255 is the broadcast). Each vCPU costs a record here, a
// 64-byte vcpu_info and a 32-byte time area (package boot), and its
// M's stacks.
const MaxCPUs = 128

// Idle policy bounds (see Policy).
const (
	// NapMin is the first nap of an idle vCPU while another runs.
	NapMin = 100 * time.Microsecond
	// NapMax is the longest nap.
	NapMax = 4 * time.Millisecond
	// SleepMax bounds a sleep while no vCPU runs. No stop-the-world
	// can be under way then (it needs a running vCPU), and once a vCPU
	// runs the napping watcher it wakes wakes the sleepers
	// (RouseSleepers), so the bound is only a backstop.
	SleepMax = 500 * time.Millisecond
	// RouseSleepers: a napping vCPU that sees a peer Running for longer
	// than this wakes every sleeping vCPU, so that a garbage collector's
	// stop-the-world, which waits for every P, does not wait for a
	// sleeper's bound.
	RouseSleepers = time.Millisecond
	// BusyGap: a vCPU that spent longer than this between two idle
	// calls ran something, and its naps start again at NapMin.
	BusyGap = 500 * time.Microsecond
)

// Idle states of a vCPU, as the other vCPUs see them.
const (
	// Parked: brought up, waiting for an M (not in the scheduler).
	Parked uint32 = iota
	// Running: in the scheduler or running Go code.
	Running
	// Napping: halted for a short while, watching running peers.
	Napping
	// Sleeping: halted until its timer, an interrupt or an IPI.
	Sleeping
)

// Policy decides how long an idle vCPU halts. It is pure: the vCPU's
// current nap length and the peers' states in, a decision out.
type Policy struct {
	// Nap is the length of this vCPU's next nap (zero: NapMin).
	Nap time.Duration
	// LastExit is when this vCPU last returned from Idle (ns).
	LastExit int64
}

// Decision is what Policy.Decide chose.
type Decision struct {
	// State is Napping or Sleeping.
	State uint32
	// Until is when to wake (ns, same clock as now): the runtime's next
	// timer or the policy's bound, whichever is first.
	Until int64
	// Bounded reports that Until is the policy's bound, not the runtime's
	// timer: waking then is no event, and wakes no peer.
	Bounded bool
}

// Decide returns how long to halt at now, with the runtime's next timer at
// pollUntil (0 or math.MaxInt64: none) and peerRunning telling whether
// another vCPU runs Go code. It advances the nap length.
func (p *Policy) Decide(now, pollUntil int64, peerRunning bool) Decision {
	if p.Nap == 0 || now-p.LastExit > int64(BusyGap) {
		p.Nap = NapMin
	}
	d := Decision{State: Sleeping}
	limit := SleepMax
	if peerRunning {
		d.State = Napping
		limit = p.Nap
		p.Nap *= 2
		if p.Nap > NapMax {
			p.Nap = NapMax
		}
	}
	d.Until = now + int64(limit)
	d.Bounded = true
	if pollUntil != 0 && pollUntil < d.Until {
		d.Until = pollUntil
		d.Bounded = false
	}
	return d
}

// WakeWatcher reports whether a vCPU returning from a halt should wake a
// sleeping peer to watch it: after a sleep that ended on an event (its
// timer, an interrupt, an IPI: not the policy's bound), when no peer naps.
func WakeWatcher(d Decision, early bool, peerNapping bool) bool {
	if d.State != Sleeping || peerNapping {
		return false
	}
	return early || !d.Bounded
}

// ENOENT is Xen's -ENOENT, VCPUOP_is_up's answer for a vCPU the domain
// does not have.
const ENOENT = -2

// Count returns how many vCPUs the domain has, from isUp, Xen's raw
// VCPUOP_is_up result for a vCPU id (1 up, 0 down, -ENOENT none): vCPU 0
// runs this, and the count ends at the first id Xen does not know or at
// max. It also reports whether the domain has vCPUs beyond max.
func Count(isUp func(id uint32) int64, max int) (n int, more bool) {
	n = 1
	for id := uint32(1); ; id++ {
		r := isUp(id)
		if r < 0 {
			return n, false
		}
		if int(id) >= max {
			return n, true
		}
		n++
	}
}
