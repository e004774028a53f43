//go:build tamago

package boot

import (
	"time"
	"unsafe"

	"github.com/gozen-dev/gozen/hypercall"
	"github.com/gozen-dev/gozen/internal/phys"
)

// Zero pages around a suspend. A page of the heap that reads all zeros
// (never used since boot, most of a guest's RAM) need not be saved: just
// before the suspend hypercall it is given back to Xen, so that xl save,
// xl migrate and xl restore copy only the pages in use, and right after
// the hypercall returns it is populated again with a fresh zeroed page:
// its contents are what they were. Pages granted to other domains, the
// suspending goroutine's stack and the page map itself are kept. The
// release and the repopulation run with interrupts off and call only
// nosplit code, so nothing else runs, and no stack grows, between them.

// Page states in release.state.
const (
	pageCandidate = 0 // release if it reads all zeros
	pageKeep      = 1
	pageReleased  = 2
)

// releaseBatch is how many frames one memory_op carries.
const releaseBatch = 512

// release is the state of one suspend's zero-page release.
var release struct {
	enabled bool
	base    uint64 // frame of state[0]
	state   []byte // one byte per frame from base
	batch   [releaseBatch]uint64
	stats   ReleaseStats
	tsc     [4]uint64 // before the release, after it, after the suspend, after repopulating
}

// ReleaseStats is what the last suspend did with zero pages.
type ReleaseStats struct {
	// Scanned counts the heap pages looked at; Released those given back
	// to Xen before the suspend (and populated again after it).
	Scanned, Released uint64
	// Zeroed counts released frames the domain found populated after
	// the resume (a live migration sent them earlier), zeroed instead.
	Zeroed uint64
	// Short counts frames Xen did not take or give back at the first
	// try; the ones it never gave back crash the domain instead.
	Short uint64
	// Release and Repopulate are how long giving the pages back and
	// taking them again took (the scan included).
	Release, Repopulate time.Duration
}

// LastRelease reports what the last suspend did with zero pages.
func LastRelease() ReleaseStats { return release.stats }

// PrepareRelease readies the zero-page release of the next EnterSuspend.
// keep lists frame ranges [start, end) that must stay populated (pages
// granted to other domains). Call it just before EnterSuspend.
func PrepareRelease(keep [][2]uint64) {
	lo := (heapBase + 0xfff) >> 12
	hi := (ramStart + ramSize) >> 12
	release.enabled = false
	if heapBase == 0 || hi <= lo {
		return
	}
	n := int(hi - lo)
	if cap(release.state) < n {
		release.state = make([]byte, n)
	}
	release.state = release.state[:n]
	clear(release.state)
	release.base = lo
	for _, r := range keep {
		keepFrames(r[0], r[1])
	}
	// the page map is written during the scan
	s := uint64(uintptr(unsafe.Pointer(&release.state[0])))
	keepFrames(s>>12, (s+uint64(n)+0xfff)>>12)
	release.enabled = true
}

// keepFrames marks frames [start, end) to be kept.
//
//go:nosplit
func keepFrames(start, end uint64) {
	if start < release.base {
		start = release.base
	}
	for f := start; f < end && f-release.base < uint64(len(release.state)); f++ {
		release.state[f-release.base] = pageKeep
	}
}

// stackWindow is how far around the stack pointer releaseZero keeps
// pages: the nosplit frames below it and the caller's above.
const stackWindow = 64 << 10

// releaseZero gives every zero candidate page back to Xen. It runs with
// interrupts off.
//
//go:nosplit
func releaseZero() {
	release.stats = ReleaseStats{}
	release.tsc[0] = rdtsc()
	if !release.enabled {
		return
	}
	var here byte
	sp := uint64(uintptr(unsafe.Pointer(&here)))
	keepFrames((sp-stackWindow)>>12, (sp+stackWindow)>>12+1)
	n := 0
	for i := range release.state {
		if release.state[i] != pageCandidate {
			continue
		}
		release.stats.Scanned++
		if !zeroPage(uintptr(release.base+uint64(i)) << 12) {
			continue
		}
		release.batch[n] = release.base + uint64(i)
		n++
		if n == releaseBatch {
			giveBack(n)
			n = 0
		}
	}
	if n > 0 {
		giveBack(n)
	}
	release.tsc[1] = rdtsc()
}

// giveBack releases the n frames in release.batch and marks those Xen
// took.
//
//go:nosplit
func giveBack(n int) {
	done := hypercall.DecreaseReservation(&release.batch[0], n)
	if done < 0 {
		done = 0
	}
	for i := 0; i < int(done); i++ {
		release.state[release.batch[i]-release.base] = pageReleased
	}
	release.stats.Released += uint64(done)
	release.stats.Short += uint64(n) - uint64(done)
}

// repopulate backs every released page again. After a non-live save and
// restore, or a checkpoint, the released frames are unpopulated. After a
// live migration they may not be: its first pass sent every page while
// the domain ran, so the new domain may already hold them, with what they
// held then. Populating a frame twice would leak a page and can exceed the
// domain's allowance, so a few released frames are sampled first
// (HVMOP_get_mem_type): all unpopulated, every one is populated; all
// populated, every one is zeroed (each was zero when released); mixed,
// each frame is looked at. A page Xen will not give back would read as
// all ones and drop writes: the domain crashes rather than run on with
// memory missing.
//
//go:nosplit
func repopulate() {
	release.tsc[2] = rdtsc()
	if !release.enabled {
		release.tsc[3] = release.tsc[2]
		return
	}
	mode := sampleReleased()
	n := 0
	for i := range release.state {
		if release.state[i] != pageReleased {
			continue
		}
		f := release.base + uint64(i)
		switch mode {
		case fillZero:
			clearPage(uintptr(f) << 12)
			release.state[i] = pageCandidate
			release.stats.Zeroed++
			continue
		case fillEach:
			if populated(f) {
				clearPage(uintptr(f) << 12)
				release.state[i] = pageCandidate
				release.stats.Zeroed++
				continue
			}
		}
		release.batch[n] = f
		n++
		if n == releaseBatch {
			takeBack(n)
			n = 0
		}
	}
	if n > 0 {
		takeBack(n)
	}
	release.enabled = false
	release.tsc[3] = rdtsc()
}

// timeRelease turns the TSC stamps of the last suspend into durations,
// given how long it took in all (wall) and in TSC ticks (ticks).
func timeRelease(wall time.Duration, ticks uint64) {
	if ticks == 0 || release.tsc[1] < release.tsc[0] || release.tsc[3] < release.tsc[2] {
		return
	}
	per := float64(wall) / float64(ticks)
	release.stats.Release = time.Duration(float64(release.tsc[1]-release.tsc[0]) * per)
	release.stats.Repopulate = time.Duration(float64(release.tsc[3]-release.tsc[2]) * per)
}

// How repopulate fills the released frames.
const (
	fillPopulate = iota // all unpopulated
	fillZero            // all populated
	fillEach            // look at each
)

// samples is how many released frames sampleReleased looks at.
const samples = 8

// sampleReleased looks at up to samples released frames, spread over
// them, and tells how to fill them.
//
//go:nosplit
func sampleReleased() int {
	total := release.stats.Released
	if total == 0 {
		return fillPopulate
	}
	step := total / samples
	if step == 0 {
		step = 1
	}
	var seen, pop uint64
	var k uint64
	for i := range release.state {
		if release.state[i] != pageReleased {
			continue
		}
		if k%step == 0 {
			seen++
			if populated(release.base + uint64(i)) {
				pop++
			}
		}
		k++
	}
	switch pop {
	case 0:
		return fillPopulate
	case seen:
		return fillZero
	}
	return fillEach
}

// populated reports whether frame f is backed by RAM: HVMOP_get_mem_type,
// or, if Xen will not answer that, whether the page reads as something
// other than the all-ones of an unpopulated frame.
//
//go:nosplit
func populated(f uint64) bool {
	t, r := hypercall.GetMemType(f)
	if r == 0 {
		return t == hypercall.HVMMemRAM
	}
	return *(*uint64)(phys.Pointer(uintptr(f) << 12)) != ^uint64(0)
}

// clearPage zeroes the 4 KiB page at addr.
//
//go:nosplit
func clearPage(addr uintptr) {
	p := (*[512]uint64)(phys.Pointer(addr))
	for i := range p {
		p[i] = 0
	}
}

// takeBack populates the n frames in release.batch, retrying the rest of
// a short answer once.
//
//go:nosplit
func takeBack(n int) {
	done := hypercall.PopulatePhysmap(&release.batch[0], n)
	if done < 0 {
		done = 0
	}
	if int(done) < n {
		release.stats.Short += uint64(n) - uint64(done)
		more := hypercall.PopulatePhysmap(&release.batch[done], n-int(done))
		if more < 0 || int(done+more) < n {
			hypercall.Shutdown(hypercall.ShutdownCrash)
		}
	}
	for i := 0; i < n; i++ {
		release.state[release.batch[i]-release.base] = pageCandidate
	}
}

// zeroPage reports whether the 4 KiB page at addr reads all zeros.
//
//go:nosplit
func zeroPage(addr uintptr) bool {
	p := (*[512]uint64)(phys.Pointer(addr))
	for i := 0; i < 512; i += 4 {
		if p[i]|p[i+1]|p[i+2]|p[i+3] != 0 {
			return false
		}
	}
	return true
}
