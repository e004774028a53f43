//go:build tamago

package smp

import (
	"errors"
	"runtime"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/gozen-dev/gozen/hypercall"
	"github.com/gozen-dev/gozen/internal/phys"
)

// Hosting more Ms than vCPUs.
//
// The runtime starts an M per P, and sometimes one more: after a
// stop-the-world it starts a new M for a P with work when no M is parked
// yet (one that stopped its P may still be on its way to the idle list),
// and runtime.LockOSThread starts a template thread. On GOOS=tamago a
// parked M spins in semasleep, so an M cannot simply wait on a vCPU
// that runs another.
//
// The runtime yields at the points where an M waits: with the hook
// _cgo_yield set (a C function the runtime calls through asmcgocall when
// cgo's thread sanitizer support asks for it), an M asleep on a note
// (notesleep, notetsleep) sleeps in 10 ms slices and calls the hook
// between them (at most every 100 µs in a timed sleep), and every
// scheduling round calls it once; notesleep's loop has to be mended for
// that first (notesleep.go). yield is that hook, and Idle calls it too.
// It switches to an M that waits in the pool, if one may run: a new M
// first (task puts the Ms for which no vCPU is left there), then one
// that was woken (its semaphore count is raised: it was given a P, or
// its note was signalled) or that holds a P and has waited HostSlice.
// An M that sleeps (it holds no P, or its P is stopped for a
// stop-the-world) also lets a sleeping M of the pool run once that has
// waited RotateAfter, so that a timed sleep sees its deadline. The M
// that yields goes into the pool in its place.
//
// A switch saves the callee-saved registers, the flags and the FS base
// (the M's thread-local storage) on and for the M's own g0 stack, like a
// coroutine switch: both sides are at a call boundary, so no other
// state is live, and an M may come back on any vCPU. While the pool is
// empty a yield costs one compare; while it holds Ms, a scan of it under
// a lock (MaxHosted records at most).
//
// Liveness. An M in the pool that holds a P runs again within about
// HostSlice of any vCPU's next scheduling round, sleep or idle (an idle
// vCPU halts for at most HostSlice while one waits: poolWantsTurn), so a
// stop-the-world or a garbage collection's safe point that waits for its
// P goes on. A woken M runs at the next such point. A goroutine that
// runs without a scheduling point keeps its vCPU, as it keeps its P
// without hosting (GOOS=tamago has no asynchronous preemption).
//
// The runtime's structures are read at offsets that gozen-image symbols
// writes into the image (offsets.go): without them there is no hosting,
// and task stops the domain with a message as before.

// MaxHosted is how many Ms can have a hosting record: the Ms beyond one
// per vCPU, and each vCPU's first M once it has been switched out.
const MaxHosted = 64

// RotateAfter is how long an M that holds no P waits in the pool without
// a wake-up before a vCPU whose M sleeps or idles lets it run again.
const RotateAfter = 10 * time.Millisecond

// HostSlice is how long an M that holds a P waits in the pool before a
// vCPU lets it run again at its M's next scheduling round, sleep or idle
// (a stop-the-world waits for that P).
const HostSlice = time.Millisecond

// host is one hosted M.
type host struct {
	mp    uintptr // 0: the M
	sp    uintptr // 8: its saved stack pointer (suspended) or first frame (new)
	fs    uintptr // 16: its FS base; 0 for a new M
	state uint32  // 24: hostFree, hostNew, hostOnCPU, hostLeaving, hostSuspended
	_     uint32
	since int64   // 32: when it last went into the pool
	top   uintptr // 40: a new M's g0 stack top
	gp    uintptr // 48: its g0
	tls   uintptr // 56: &m.tls
	pc    uintptr // 64: runtime·mstart
}

const hostSize = 72

// host states
const (
	hostFree = iota
	hostNew
	hostOnCPU
	hostLeaving // being switched out: not yet resumable
	hostSuspended
)

var (
	hosts     [MaxHosted]host
	nhosts    uint32 // records in use (never shrinks: an M never exits)
	hostLock  uint32
	hostReady uint32          // records hostNew or hostSuspended (yield's fast path)
	onCPU     [MaxCPUs]uint32 // record+1 of the M each vCPU runs (0: its first M, no record yet)
	leaving   [MaxCPUs]uint32 // record+1 a vCPU is switching out
	switches  [MaxCPUs]uint64 // switches made by each vCPU
	newHosted uint32          // Ms task put into the pool
	hosting   bool

	// runtime offsets (offsets.go), read by yield
	offMP      uintptr
	offWaitsem uintptr
	offPStatus uintptr
)

//go:linkname cgoYield _cgo_yield
var cgoYield unsafe.Pointer

// yield is the runtime's _cgo_yield hook (smp_amd64.s).
func yield()

// idleYield switches, from Idle, to an M of the pool that may run (rank
// 2 or more: new, woken or holding a P), and reports whether it did (this
// M has then come back, perhaps on another vCPU).
func idleYield() bool

func yieldAddr() uintptr
func freshAddr() uintptr

// pRunning is the runtime's _Prunning.
const pRunning = 1

// initHosting checks the runtime-offset record against the boot M (which
// holds a running P here) and installs yield; it returns why hosting is
// off, or nil.
func initHosting() error {
	offs, ok := OffsetRecord()
	if !ok {
		return errors.New("the image has no runtime-offset record (build it with make, which runs gozen-image symbols)")
	}
	if unsafe.Sizeof(host{}) != hostSize || unsafe.Offsetof(host{}.pc) != 64 {
		return errors.New("struct host does not match smp_amd64.s")
	}
	g, _ := runtime.GetG()
	if g == 0 {
		return errors.New("no g")
	}
	m := *(*uintptr)(phys.Pointer(uintptr(g) + gM))
	if offs[0] > 4096 || offs[1] > 4096 || offs[2] > 64 {
		return errors.New("runtime offsets out of range")
	}
	p := *(*uintptr)(phys.Pointer(m + offs[0]))
	if p == 0 || p%8 != 0 || *(*uint32)(phys.Pointer(p + offs[2])) != pRunning {
		return errors.New("the runtime offsets do not find the boot M's running P")
	}
	addr, size := FuncRecord(0)
	if addr == 0 || size == 0 || size > 4096 {
		return errors.New("the image's runtime-offset record has no runtime.notesleep")
	}
	code := phys.Bytes(addr, int(size))
	off, mended, err := MendNotesleep(code, uint64(addr))
	if err != nil {
		return err
	}
	offMP, offWaitsem, offPStatus = offs[0], offs[1], offs[2]
	copy(code[off:], mended)
	hosting = true
	cgoYield = phys.Pointer(yieldAddr())
	return nil
}

// hostNewM puts a new M (task's arguments, top its g0 stack top) into the
// pool, or reports false when hosting is off or the pool is full.
func hostNewM(top uintptr, mp, gp, fn unsafe.Pointer) bool {
	if !hosting {
		return false
	}
	lockHosts()
	i := freeHost()
	if i < 0 {
		unlockHosts()
		return false
	}
	h := &hosts[i]
	h.mp = uintptr(mp)
	h.gp = uintptr(gp)
	h.tls = uintptr(mp) + mTLS
	h.pc = uintptr(fn)
	h.top = top
	h.fs = 0
	// the frame yield's switch pops: R15 R14 R13 R12 BX BP, the flags
	// (interrupts off) and the return address, freshEntry, which finds
	// the record in R12
	frame := [8]uintptr{0, 0, 0, uintptr(unsafe.Pointer(h)), 0, 0, 2, freshAddr()}
	h.sp = top - 16 - uintptr(len(frame))*8
	for k, w := range frame {
		*(*uintptr)(phys.Pointer(h.sp + uintptr(k)*8)) = w
	}
	h.since = nanotime()
	atomic.StoreUint32(&h.state, hostNew)
	unlockHosts()
	atomic.AddUint32(&hostReady, 1)
	atomic.AddUint32(&newHosted, 1)
	return true
}

// freeHost returns the first free record, counted in nhosts from now on,
// or -1; the lock is held.
//
//go:nosplit
func freeHost() int {
	for i := 0; i < MaxHosted; i++ {
		if atomic.LoadUint32(&hosts[i].state) == hostFree {
			if uint32(i) >= atomic.LoadUint32(&nhosts) {
				atomic.StoreUint32(&nhosts, uint32(i)+1)
			}
			return i
		}
	}
	return -1
}

//go:nosplit
func lockHosts() {
	for !atomic.CompareAndSwapUint32(&hostLock, 0, 1) {
		pause()
	}
}

//go:nosplit
func unlockHosts() { atomic.StoreUint32(&hostLock, 0) }

// woken reports whether M mp's semaphore count was raised (semawakeup).
//
//go:nosplit
func woken(mp uintptr) bool {
	return atomic.LoadUint32((*uint32)(phys.Pointer(mp+offWaitsem))) > 0
}

// poolWantsTurn reports whether the pool holds an M that runs again
// without a vCPU's M sleeping: a new one, a woken one, or one that holds
// a P. Idle then halts for at most HostSlice.
//
//go:nosplit
func poolWantsTurn() bool {
	if atomic.LoadUint32(&hostReady) == 0 {
		return false
	}
	n := int(atomic.LoadUint32(&nhosts))
	for i := 0; i < n; i++ {
		h := &hosts[i]
		switch atomic.LoadUint32(&h.state) {
		case hostNew:
			return true
		case hostSuspended:
			if woken(h.mp) || holdsP(h.mp) {
				return true
			}
		}
	}
	return false
}

// holdsP reports whether M mp holds a P.
//
//go:nosplit
func holdsP(mp uintptr) bool {
	return atomic.LoadUintptr((*uintptr)(phys.Pointer(mp+offMP))) != 0
}

// choose is yield's decision, made with interrupts off on g0 (the g the
// thread-local storage names), sp its stack pointer with the
// callee-saved registers pushed, fs its FS base: it returns the stack pointer and FS base of the M to switch to,
// of rank minRank or more (3 new; 2 woken, or holding a P and waiting for
// HostSlice; 1 holding none and waiting for RotateAfter), and
// marks mp leaving, or 0, 0 to stay.
//
//go:nosplit
func choose(g0, sp, fs, minRank uintptr) (nsp, nfs uintptr) {
	mp := *(*uintptr)(phys.Pointer(g0 + gM))
	if lo, hi := *(*uintptr)(phys.Pointer(g0)), *(*uintptr)(phys.Pointer(g0 + 8)); sp <= lo || sp >= hi {
		// the FS base names another M than the stack runs
		print("smp: hosting: on vCPU ", gsID(), " the stack pointer ", sp, " is outside g0's stack [", lo, ", ", hi, ") of M ", mp, " (FS base ", fs, ")\n")
		hypercallCrash()
		return 0, 0
	}
	if woken(mp) {
		return 0, 0
	}
	v := gsID()
	now := nanotime()
	lockHosts()
	t, rank := -1, int(minRank)-1
	var tSince int64
	n := int(atomic.LoadUint32(&nhosts))
	for i := 0; i < n; i++ {
		h := &hosts[i]
		r := 0
		switch atomic.LoadUint32(&h.state) {
		case hostNew:
			r = 3
		case hostSuspended:
			switch {
			case woken(h.mp):
				r = 2
			case now-h.since >= int64(HostSlice) && holdsP(h.mp):
				r = 2
			case now-h.since >= int64(RotateAfter):
				r = 1
			}
		}
		if r > rank || t >= 0 && r == rank && h.since < tSince {
			t, rank, tSince = i, r, h.since
		}
	}
	if t < 0 {
		unlockHosts()
		return 0, 0
	}
	// the running M must not be in the pool as well
	for i := 0; i < n; i++ {
		if h := &hosts[i]; h.mp == mp && i != int(onCPU[v])-1 {
			if st := atomic.LoadUint32(&h.state); st != hostFree {
				unlockHosts()
				print("smp: hosting: M ", mp, " runs on vCPU ", v, " (record ", int(onCPU[v])-1, ") and is record ", i, " in state ", st, "; fs ", fs, " want ", mp+mTLS+8, "\n")
				hypercallCrash()
				return 0, 0
			}
		}
	}
	if fs != mp+mTLS+8 {
		unlockHosts()
		print("smp: hosting: M ", mp, " on vCPU ", v, " has FS base ", fs, ", want ", mp+mTLS+8, "\n")
		hypercallCrash()
		return 0, 0
	}
	// the leaving M's record: the one it runs as, or a free one
	c := int(onCPU[v]) - 1
	if c < 0 || hosts[c].mp != mp {
		if c = freeHost(); c < 0 {
			unlockHosts()
			return 0, 0
		}
	}
	h := &hosts[c]
	h.mp, h.sp, h.fs, h.since = mp, sp, fs, now
	atomic.StoreUint32(&h.state, hostLeaving)
	leaving[v] = uint32(c) + 1
	nh := &hosts[t]
	atomic.StoreUint32(&nh.state, hostOnCPU)
	onCPU[v] = uint32(t) + 1
	unlockHosts()
	atomic.AddUint32(&hostReady, ^uint32(0))
	atomic.AddUint64(&switches[v], 1)
	return nh.sp, nh.fs
}

//go:nosplit
func hypercallCrash() { hypercall.Shutdown(hypercall.ShutdownCrash) }

// switched runs on the new M's stack right after a switch: the M that
// left may now be resumed by any vCPU.
//
//go:nosplit
func switched() {
	v := gsID()
	c := leaving[v] - 1
	leaving[v] = 0
	atomic.StoreUint32(&hosts[c].state, hostSuspended)
	atomic.AddUint32(&hostReady, 1)
}

// Hosting reports whether this domain can host more Ms than vCPUs, how
// many Ms the runtime started beyond one per vCPU (an M never exits),
// and how many M switches each of the first n vCPUs made.
func Hosting(n int) (on bool, extra int, perVCPU []uint64) {
	if n > MaxCPUs {
		n = MaxCPUs
	}
	perVCPU = make([]uint64, n)
	for i := range perVCPU {
		perVCPU[i] = atomic.LoadUint64(&switches[i])
	}
	return hosting, int(atomic.LoadUint32(&newHosted)), perVCPU
}
