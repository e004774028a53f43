//go:build tamago

package smp

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"runtime"
	"runtime/goos"
	"sync/atomic"
	"time"
	"unsafe"
	_ "unsafe"

	"github.com/gozen-dev/gozen/arch/amd64/trap"
	"github.com/gozen-dev/gozen/hypercall"
	"github.com/gozen-dev/gozen/internal/phys"
)

// cpu is one vCPU's record. The entry code reads it through RDI and GS;
// the layout up to tls is shared with smp_amd64.s (checked by Start).
type cpu struct {
	id    uint64  // 0: the vCPU id (GS:0)
	gdtr  uintptr // 8: its GDT pointer
	idtr  uintptr // 16: the shared IDT pointer
	sp    uint64  // 24: the M's g0 stack top (Task)
	mp    uint64  // 32: the M (Task)
	gp    uint64  // 40: the M's g0 (Task)
	pc    uint64  // 48: runtime·mstart, written last (Task)
	apic  uint32  // 56: its local APIC id
	state uint32  // 60: Parked, Running, Napping, Sleeping
	alive uint32  // 64: set by the vCPU once in long mode with its tables
	_     uint32
	tls   uint64 // 72: &m.tls (Task)

	policy Policy          // 80
	tables *trap.CPUTables // 96
	stack  []byte          // 104: boot stack until it gets an M

	lastRouse int64 // 128: when this vCPU last roused the runtime (Idle)
	_         [96]byte
	entry     [3]uint64 // 232: package trap's entry words (trap.InitEntry)
}

const cpuSize = 256

var (
	cpus       [MaxCPUs]cpu
	ncpu       uint32 // vCPUs in the scheduler (read by wakeIdle)
	wakeVector uint32 // read by wakeIdle and halt
	next       atomic.Uint32
	mTLS       uintptr // offset of m.tls in the runtime's m
	cfg        Config
	started    atomic.Bool
	rouse      = make(chan struct{}, 1) // to the rouser goroutine (see Idle)
	hostingOff string                   // why initHosting turned hosting down
)

// StaleRunning is how long a vCPU may stay in Running without calling
// Idle before an idle vCPU rouses the runtime (see Idle).
const StaleRunning = 10 * time.Millisecond

// Config is what Start needs from the platform.
type Config struct {
	// WakeVector (32-255, used by nothing else) carries the IPIs between
	// vCPUs and the idle timer.
	WakeVector int
	// Pending reports, with interrupts off, whether work waits that Kick
	// makes runnable (an interrupt package irq recorded, events Xen
	// flagged): an idle vCPU then kicks instead of halting.
	Pending func() bool
	// Kick makes that work runnable; Idle calls it with interrupts on.
	Kick func()
	// Prepare, if set, is called for each vCPU other than the boot one
	// while it is down, before Xen initialises it (VCPUOP_initialise,
	// which Xen refuses for a vCPU without a vcpu_info) and starts it
	// (VCPUOP_up): the platform registers its vcpu_info and time area
	// there. An error leaves that vCPU down, and Start brings up no more.
	Prepare func(id int) error
}

func gsID() uint64
func setGSBase(addr uintptr)
func controlRegs() (cr0, cr3, cr4, efer uint64)
func apicID() uint32

func fsBase() uintptr
func cli()
func sti()
func halt(counts uint32, vector uint32)
func sendIPI(apic, vector uint32)
func entryAddrs() (ap, wake, wakeIdle uintptr)

//go:linkname nanotime runtime.nanotime
func nanotime() int64

// Current returns the id of the vCPU running the caller (0 before Start).
// A goroutine may move to another vCPU at any call that can reschedule,
// so the answer is for statistics and diagnosis, or for nosplit code
// (which cannot be moved: package boot's clock reads the caller's own
// vCPU time record with it).
//
//go:nosplit
func Current() int {
	if !started.Load() {
		return 0
	}
	return int(gsID())
}

// NumCPU returns the vCPUs in the scheduler: 1 before Start.
//
//go:nosplit
func NumCPU() int {
	if n := atomic.LoadUint32(&ncpu); n > 0 {
		return int(n)
	}
	return 1
}

// WakeIdleAddr returns the address of the assembly routine package irq's
// entry calls, with more than one vCPU, to wake an idle vCPU (see
// irq.EnableSMP). It clobbers AX, BX, CX and DX.
func WakeIdleAddr() uintptr {
	_, _, w := entryAddrs()
	return w
}

// CountVCPUs returns how many vCPUs the domain has (see Count), at most
// MaxCPUs, and prints a note when Xen gives it more.
func CountVCPUs() int {
	n, more := Count(hypercall.VCPUIsUpRaw, MaxCPUs)
	if more {
		print("smp: the domain has more than ", MaxCPUs, " vCPUs; using ", MaxCPUs, "\n")
	}
	return n
}

// Start brings up vCPUs 1 to n-1, makes the runtime schedule Go code on
// all n (GOMAXPROCS and runtime.NumCPU become n) and switches every
// vCPU's idle to Idle. Package trap must be installed, the boot vCPU's
// local APIC enabled, and, when interrupts are serviced, package irq
// switched to SMP with irq.EnableSMP before it served. Start returns an
// error, and leaves the domain on the vCPUs that came up (the error says
// how many), when Xen refuses a vCPU, Config.Prepare fails for one, or one
// does not come up within a second of the one before.
func Start(n int, c Config) error {
	if n < 2 || n > MaxCPUs {
		return fmt.Errorf("smp: %d vCPUs: want 2 to %d", n, MaxCPUs)
	}
	if c.WakeVector < 32 || c.WakeVector > 255 || c.Pending == nil || c.Kick == nil {
		return errors.New("smp: Config needs a wake vector (32-255), Pending and Kick")
	}
	if !trap.Installed() {
		return errors.New("smp: the trap gates are not installed")
	}
	if started.Load() {
		return errors.New("smp: already started")
	}
	if err := checkLayout(); err != nil {
		return err
	}
	off, err := measureTLS()
	if err != nil {
		return err
	}
	mTLS = off
	cfg = c
	hcPage = hypercall.Page()
	wakeVector = uint32(c.WakeVector)
	ap, wake, _ := entryAddrs()
	if err := trap.SetHandler(c.WakeVector, wake); err != nil {
		return fmt.Errorf("smp: %w", err)
	}

	boot := &cpus[0]
	boot.apic = apicID()
	boot.state = Running
	boot.alive = 1
	boot.policy.LastExit = nanotime()
	trap.InitEntry(uintptr(unsafe.Pointer(boot)), nil)
	setGSBase(uintptr(unsafe.Pointer(boot)))
	started.Store(true)

	cr0, cr3, cr4, efer := controlRegs()
	up := 1
	var startErr error
	for i := 1; i < n; i++ {
		if err := startVCPU(i, ap, cr0, cr3, cr4, efer); err != nil {
			startErr = err
			break
		}
		up++
	}
	// wait for the vCPUs Xen started to reach their parking loop, each
	// within a second of the one before (many vCPUs may share a pCPU)
	deadline := time.Now().Add(time.Second)
	alive := 1
	for alive < up {
		if atomic.LoadUint32(&cpus[alive].alive) != 0 {
			alive++
			deadline = time.Now().Add(time.Second)
			continue
		}
		if time.Now().After(deadline) {
			startErr = fmt.Errorf("smp: vCPU %d did not come up within a second", alive)
			break
		}
		time.Sleep(100 * time.Microsecond)
	}
	if startErr != nil {
		startErr = fmt.Errorf("%w; running on %d of the domain's %d vCPUs", startErr, alive, n)
	}
	if alive == 1 {
		return startErr
	}
	go func() {
		for range rouse {
		}
	}()
	next.Store(0)
	if err := initHosting(); err != nil {
		hostingOff = err.Error()
		print("smp: no hosting of more Ms than vCPUs: ", hostingOff, "\n")
	}
	atomic.StoreUint32(&ncpu, uint32(alive))
	goos.ProcID = procID
	goos.Task = task
	goos.Idle = Idle
	if !setNumCPU(alive) {
		print("smp: runtime.NumCPU not found in the runtime's code; it stays 1 (GOMAXPROCS is ", alive, ")\n")
	}
	runtime.GOMAXPROCS(alive)
	return startErr
}

// startVCPU initialises vCPU i to enter ap in long mode and starts it.
func startVCPU(i int, ap uintptr, cr0, cr3, cr4, efer uint64) error {
	c := &cpus[i]
	c.id = uint64(i)
	c.state = Parked
	c.tables = trap.NewCPUTables()
	trap.InitEntry(uintptr(unsafe.Pointer(c)), c.tables)
	c.gdtr = c.tables.GDTR()
	c.idtr = trap.IDTR()
	c.stack = make([]byte, 16<<10)
	top := (uintptr(unsafe.Pointer(&c.stack[len(c.stack)-1])) + 1) &^ 15
	ctx := Context{
		RSP:    uint64(top),
		RDI:    uint64(uintptr(unsafe.Pointer(c))),
		RIP:    uint64(ap),
		RFLAGS: 2, // interrupts off
		CR0:    cr0,
		CR3:    cr3,
		CR4:    cr4,
		EFER:   efer &^ (1 << 10), // LMA is Xen's to set
	}
	// Prepare first: Xen refuses to initialise a vCPU that has no
	// vcpu_info (EINVAL), which is the case of vCPUs 32 and up until the
	// platform registered theirs
	if cfg.Prepare != nil {
		if err := cfg.Prepare(i); err != nil {
			return fmt.Errorf("smp: vCPU %d: %w", i, err)
		}
	}
	var buf [ContextSize]byte
	ctx.Encode(buf[:])
	if err := hypercall.VCPUInitialise(uint32(i), uintptr(unsafe.Pointer(&buf[0]))); err != nil {
		return fmt.Errorf("smp: vCPU %d: %w", i, err)
	}
	runtime.KeepAlive(&buf)
	if err := hypercall.VCPUUp(uint32(i)); err != nil {
		return fmt.Errorf("smp: vCPU %d: %w", i, err)
	}
	return nil
}

// checkLayout checks struct cpu against the offsets of smp_amd64.s.
func checkLayout() error {
	var c cpu
	offs := []struct {
		name      string
		got, want uintptr
	}{
		{"gdtr", unsafe.Offsetof(c.gdtr), 8}, {"idtr", unsafe.Offsetof(c.idtr), 16},
		{"sp", unsafe.Offsetof(c.sp), 24}, {"mp", unsafe.Offsetof(c.mp), 32},
		{"gp", unsafe.Offsetof(c.gp), 40}, {"pc", unsafe.Offsetof(c.pc), 48},
		{"apic", unsafe.Offsetof(c.apic), 56}, {"state", unsafe.Offsetof(c.state), 60},
		{"alive", unsafe.Offsetof(c.alive), 64}, {"tls", unsafe.Offsetof(c.tls), 72},
		{"entry", unsafe.Offsetof(c.entry), trap.EntryOffset},
		{"size", unsafe.Sizeof(c), cpuSize},
	}
	for _, o := range offs {
		if o.got != o.want {
			return fmt.Errorf("smp: struct cpu %s at %d, the entry code expects %d", o.name, o.got, o.want)
		}
	}
	return nil
}

// gM is the offset of g.m in the runtime's g (as in package irq).
const gM = 48

// measureTLS finds the offset of m.tls in the runtime's m: the boot vCPU
// runs m0, whose FS base the runtime set to &m0.tls + 8 (settls).
func measureTLS() (uintptr, error) {
	g, _ := runtime.GetG()
	if g == 0 {
		return 0, errors.New("smp: no g")
	}
	m := *(*uintptr)(phys.Pointer(uintptr(g) + gM))
	fs := fsBase()
	if m == 0 || fs < m+8 || fs-8-m > 4096 {
		return 0, fmt.Errorf("smp: m.tls not found (m %#x, FS base %#x)", m, fs)
	}
	return fs - 8 - m, nil
}

// procID is goos.ProcID: the runtime records it as the M's procid.
func procID() uint64 { return uint64(Current()) }

// task is goos.Task, called by the runtime (newosproc, possibly without a
// P) to start M mp with g0 gp at fn: it hands them to the next parked
// vCPU, which runs fn on g0's own stack (sp, the stack newosproc
// allocated, only when g0 has none). Once every vCPU has its M, it puts
// the new one into the pool of hosted Ms (hosting_tamago.go).
func task(sp, mp, gp, fn unsafe.Pointer) {
	top := *(*uint64)(unsafe.Add(gp, 8)) // g.stack.hi
	if top == 0 {
		top = uint64(uintptr(sp))
	}
	top &^= 15
	i := int(next.Add(1))
	if n := int(atomic.LoadUint32(&ncpu)); i >= n {
		// newm holds no runtime lock here (allocm took and released
		// sched.lock), so GOMAXPROCS may take it
		switch procs := runtime.GOMAXPROCS(0); {
		case procs > n:
			print("smp: GOMAXPROCS (", procs, ") is above the vCPU count (", n, "): the vCPUs host the runtime's extra threads only while GOMAXPROCS is at most the vCPU count\n")
		case hostNewM(uintptr(top), mp, gp, fn):
			return
		case hosting:
			print("smp: the runtime started more threads than the vCPUs can host (", MaxHosted, " hosting records)\n")
		default:
			print("smp: the runtime started more threads than there are vCPUs (", i+1, " > ", n, ") and hosting is off: ", hostingOff, "\n")
		}
		hypercall.Shutdown(hypercall.ShutdownCrash)
		return
	}
	c := &cpus[i]
	c.sp = top
	c.mp = uint64(uintptr(mp))
	c.gp = uint64(uintptr(gp))
	c.tls = c.mp + uint64(mTLS)
	atomic.StoreUint64(&c.pc, uint64(uintptr(fn)))
	sendIPI(c.apic, wakeVector)
}

// Idle is every vCPU's idle hook (goos.Idle) once Start has run: it kicks
// pending interrupt work, or halts this vCPU as Policy decides, until the
// runtime's next timer (pollUntil, in nanotime; 0 or math.MaxInt64: none)
// at the latest.
func Idle(pollUntil int64) {
	// an M of the pool that may run goes first: this M's P is idle
	if atomic.LoadUint32(&hostReady) != 0 && idleYield() {
		return
	}
	c := &cpus[gsID()]
	cli()
	if cfg.Pending() {
		sti()
		cfg.Kick()
		return
	}
	now := nanotime()
	if pollUntil == math.MaxInt64 {
		pollUntil = 0
	}
	if pollUntil != 0 && pollUntil <= now {
		sti()
		return
	}
	// After a stop-the-world (garbage collection, GOMAXPROCS,
	// ReadMemStats) the runtime restarts only the Ms whose P has work,
	// plus one spinning M; the others wait in stopm, which on
	// GOOS=tamago spins, until some M's wakep starts them, and wakep does
	// nothing while an M spins (an idle one stays spinning here). Such a
	// vCPU stays Running without calling Idle. Readying a goroutine here
	// makes this M run it and stop spinning, and the runtime's wakep then
	// gives an idle P to a waiting M, whose own Idle does the same: the
	// chain ends when no P is idle. A peer that is only running a long
	// goroutine costs one goroutine switch per StaleRunning.
	if now-c.lastRouse > int64(StaleRunning) && peerStale(c, now) {
		c.lastRouse = now
		sti()
		select {
		case rouse <- struct{}{}:
		default:
		}
		return
	}
	d := c.policy.Decide(now, pollUntil, peerIn(c, Running))
	if d.State == Sleeping {
		// publish, then look again: a peer that starts running from
		// here on sees this vCPU asleep and wakes it (WakeWatcher)
		atomic.StoreUint32(&c.state, Sleeping)
		if peerIn(c, Running) {
			d = c.policy.Decide(now, pollUntil, true)
		}
	}
	atomic.StoreUint32(&c.state, d.State)
	ns := d.Until - now
	if ns > int64(HostSlice) && poolWantsTurn() {
		// an M waits in the pool to run: look again after a slice
		ns = int64(HostSlice)
	}
	if ns < 1 {
		ns = 1
	}
	halt(lapicCounts(ns), wakeVector)
	atomic.StoreUint32(&c.state, Running)
	end := nanotime()
	atomic.StoreInt64(&c.policy.LastExit, end)
	if WakeWatcher(d, end < d.Until, peerIn(c, Napping)) {
		wakeSleepers(c, false)
	}
	if d.State == Napping && peerRunningFor(c, end, int64(RouseSleepers)) {
		wakeSleepers(c, true)
	}
}

// peerIn reports whether a vCPU other than c is in state.
func peerIn(c *cpu, state uint32) bool {
	n := int(atomic.LoadUint32(&ncpu))
	for i := 0; i < n; i++ {
		p := &cpus[i]
		if p != c && atomic.LoadUint32(&p.state) == state {
			return true
		}
	}
	return false
}

// peerStale reports whether a vCPU other than c has been Running, with no
// call of Idle, for longer than StaleRunning.
func peerStale(c *cpu, now int64) bool { return peerRunningFor(c, now, int64(StaleRunning)) }

// peerRunningFor reports whether a vCPU other than c has been Running,
// with no call of Idle, for longer than d nanoseconds.
func peerRunningFor(c *cpu, now, d int64) bool {
	n := int(atomic.LoadUint32(&ncpu))
	for i := 0; i < n; i++ {
		p := &cpus[i]
		if p != c && atomic.LoadUint32(&p.state) == Running && now-atomic.LoadInt64(&p.policy.LastExit) > d {
			return true
		}
	}
	return false
}

// wakeSleepers wakes sleeping vCPUs other than c, marking each napping so
// that no other vCPU wakes it too: the first one only, or all of them.
func wakeSleepers(c *cpu, all bool) {
	n := int(atomic.LoadUint32(&ncpu))
	for i := 0; i < n; i++ {
		p := &cpus[i]
		if p != c && atomic.CompareAndSwapUint32(&p.state, Sleeping, Napping) {
			sendIPI(p.apic, wakeVector)
			if !all {
				return
			}
		}
	}
}

// State returns vCPU id's idle state (Parked, Running, Napping,
// Sleeping), for diagnosis.
func State(id int) uint32 {
	if id < 0 || id >= MaxCPUs {
		return Parked
	}
	return atomic.LoadUint32(&cpus[id].state)
}

// numCPUFunc keeps a callable copy of runtime.NumCPU (see numCPUAddr).
var numCPUFunc = runtime.NumCPU

// numCPUAddr finds the runtime's CPU count (runtime.numCPUStartup, which
// osinit sets to 1 on GOOS=tamago and the linker does not let another
// package name) in the code of runtime.NumCPU, which loads it
// RIP-relative: an optional REX prefix, MOV (8B) or MOVSXD (63) with
// ModRM mod 00, r/m 101, and a 32-bit displacement. The address must lie
// in the runtime's data and hold what runtime.NumCPU returns; otherwise
// it returns 0.
func numCPUAddr() uintptr {
	pc := **(**uintptr)(unsafe.Pointer(&numCPUFunc))
	code := phys.Bytes(pc, 32)
	lo, hi := runtime.DataRegion()
	for i := 0; i+7 <= len(code); i++ {
		j := i
		if code[j]&0xf0 == 0x40 {
			j++
		}
		if (code[j] != 0x8b && code[j] != 0x63) || code[j+1]&0xc7 != 0x05 {
			continue
		}
		disp := int32(binary.LittleEndian.Uint32(code[j+2:]))
		addr := uintptr(int64(pc) + int64(j+6) + int64(disp))
		if uint64(addr) < lo || uint64(addr)+4 > hi {
			continue
		}
		if int(*(*int32)(phys.Pointer(addr))) == numCPUFunc() {
			return addr
		}
	}
	return 0
}

// setNumCPU makes runtime.NumCPU return n, or reports false when the
// count was not found.
func setNumCPU(n int) bool {
	addr := numCPUAddr()
	if addr == 0 {
		return false
	}
	atomic.StoreInt32((*int32)(phys.Pointer(addr)), int32(n))
	return numCPUFunc() == n
}

// LAPICCountNS is the length of one count of the local APIC timer with
// divide-by-1, in nanoseconds: Xen's virtual APIC bus runs at 100 MHz
// (APIC_BUS_CYCLE_NS, 10).
const LAPICCountNS = 10

// lapicCounts converts ns (at least 1) to LAPIC timer counts, rounding up
// and saturating.
func lapicCounts(ns int64) uint32 {
	c := (ns + LAPICCountNS - 1) / LAPICCountNS
	if c < 1 {
		c = 1
	}
	if c > math.MaxUint32 {
		c = math.MaxUint32
	}
	return uint32(c)
}
