//go:build tamago

package boot

import (
	"time"
	"unsafe"

	"github.com/gozen-dev/gozen/hypercall"
	"github.com/gozen-dev/gozen/internal/phys"
)

// Zero pages around a suspend. Most of a guest's RAM is heap it never
// used: just before the suspend hypercall such pages are given back to Xen
// (XENMEM_decrease_reservation), so that xl save, xl migrate and xl
// restore copy only the pages in use, and right after the hypercall
// returns they are populated again (XENMEM_populate_physmap) and, where
// the runtime may read them, cleared: their contents are what they were.
//
// Which pages. Below the runtime's break high-water mark (runtime.blocMax)
// the runtime may treat any page as zero (free memory it cleared, spans it
// knows are zero), so a page there is given back only if it reads all
// zeros. Above it, up to the boot stack at the top of RAM, the runtime's
// sbrk clears memory before it first hands it out and nothing reads it
// before: those pages are given back unread, whatever they hold, and are
// not cleared after. The break is read through the runtime-symbol record
// (symbols.go); without it, or while another vCPU holds the runtime's
// memory lock, every page is read before and cleared after. Pages granted
// to other domains, the suspending goroutine's stack and the page map are
// kept.
//
// Clearing after populate is required: Xen does not hand out zeroed
// pages. free_domheap_pages scrubs only the pages of a dying domain ("we
// expect a domain to clear pages before freeing them"), so a page another
// live domain gave back comes out of populate_physmap with that domain's
// data in it.
//
// Extents. A 2 MiB-aligned run of 512 frames all to be given back goes
// as one order-9 extent (a superpage: one allocation and one p2m entry
// when it comes back), the rest as 4 KiB frames (extent planning in
// extent.go). If Xen refuses an order-9 extent, the rest of that suspend
// uses 4 KiB frames.
//
// The release and the repopulation run with interrupts off and the other
// vCPUs stopped, and call only nosplit code, so nothing else runs, and
// no stack grows, between them.

// Batch sizes: frames (order 0) and 2 MiB extents (order 9) one
// memory_op carries.
const (
	releaseBatch = 512
	hugeBatch    = 64
)

// release is the state of one suspend's zero-page release.
var release struct {
	enabled bool
	base    uint64 // frame of state[0]
	state   []byte // one byte per frame from base (page states in extent.go)
	// free is the frames [free[0], free[1]) above the runtime's break
	// (freeFrames): no scan, no clearing. Empty when the break is unknown.
	free [2]uint64
	// symbols is whether the runtime-symbol record holds addresses in
	// the image's data (PrepareRelease).
	symbols bool
	// noHuge is set when Xen refused an order-9 extent: the rest of the
	// release, or of the repopulation, uses 4 KiB frames.
	noHuge bool
	small  [releaseBatch]uint64
	nsmall int
	huge   [hugeBatch]uint64
	nhuge  int
	stats  ReleaseStats
	// before the release, after the scan, after the release, after the
	// suspend, after repopulating
	tsc [5]uint64
}

// ReleaseStats is what the last suspend did with zero pages.
type ReleaseStats struct {
	// Scanned counts the heap pages read, Zero those of them that read
	// all zeros; Released the frames given back to Xen before the
	// suspend (and populated again after it), Huge the 2 MiB extents
	// among them (512 frames each).
	Scanned, Zero, Released, Huge uint64
	// Unread counts the frames given back without being read: above
	// the runtime's break (Break), where nothing reads memory before the
	// runtime clears it.
	Unread uint64
	// Break is the runtime's break high-water mark the release went by,
	// 0 if it was not known (every frame is then read and cleared).
	Break uint64
	// Cleared counts the frames cleared after the resume: populated
	// again (Xen's pages are not zeroed) or found back in place, below
	// the runtime's break.
	Cleared uint64
	// FoundBack counts the released frames the domain found populated
	// after the resume (a live migration sent them earlier).
	FoundBack uint64
	// Short counts frames and extents Xen did not take or give back at
	// the first try; a frame it never gave back crashes the domain.
	Short uint64
	// Release and Repopulate are how long giving the pages back and
	// taking them again took; Scan is the part of Release spent reading
	// pages.
	Release, Scan, Repopulate time.Duration
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
	// the page map is written during the release
	s := uint64(uintptr(unsafe.Pointer(&release.state[0])))
	keepFrames(s>>12, (s+uint64(n)+0xfff)>>12)
	release.symbols = true
	for i := range RuntimeSymbols {
		if symbolAddr(i) == 0 {
			release.symbols = false
		}
	}
	release.enabled = true
}

// symbolAddr returns the address of the record's variable i if it lies
// in the image's data, or 0.
//
//go:nosplit
func symbolAddr(i int) uintptr {
	if imageSymbols[0] != SymbolsMagic {
		return 0
	}
	a := imageSymbols[1+i]
	if a < ramStart || a+8 > heapBase || a&7 != 0 {
		return 0
	}
	return uintptr(a)
}

// readBreak reads the runtime's break high-water mark through the
// runtime-symbol record and checks it (runtimeBreak) against inUse, the
// end of memory the runtime handed out. ok is false when the record is
// missing or does not check out.
//
//go:nosplit
func readBreak(inUse uint64) (uint64, bool) {
	var v [len(RuntimeSymbols)]uint64
	for i := range v {
		a := symbolAddr(i)
		if a == 0 {
			return 0, false
		}
		v[i] = *(*uint64)(phys.Pointer(a))
	}
	return runtimeBreak(v[0], v[1], v[2], heapBase, stackFloor(), inUse)
}

// stackFloor returns an address below the boot stack, which the entry
// code puts RamStackOffset below the end of RAM and the runtime gives
// 64 KiB below that (its g0 stack, where its sbrk stops), with a page to
// spare for the alignment the runtime's entry adds.
//
//go:nosplit
func stackFloor() uint64 {
	top := ramStart + ramSize
	below := ramStackOffset + 64<<10 + 0x1000
	if top < heapBase+below {
		return heapBase
	}
	return top - below
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

// releaseZero gives every zero candidate page, and every candidate frame
// above the runtime's break, back to Xen. It runs with interrupts off and
// the other vCPUs stopped.
//
//go:nosplit
func releaseZero() {
	release.stats = ReleaseStats{}
	release.tsc[0] = rdtsc()
	release.free = [2]uint64{}
	release.noHuge = false
	release.nsmall, release.nhuge = 0, 0
	if !release.enabled {
		return
	}
	var here byte
	sp := uint64(uintptr(unsafe.Pointer(&here)))
	keepFrames((sp-stackWindow)>>12, (sp+stackWindow)>>12+1)
	state := release.state
	if release.symbols {
		// read now that no other vCPU runs: a vCPU stopped while
		// raising the break holds the memory lock, and readBreak then
		// refuses
		s := uint64(uintptr(unsafe.Pointer(&state[0])))
		if brk, ok := readBreak(s + uint64(len(state))); ok {
			release.stats.Break = brk
			release.free[0], release.free[1] = freeFrames(brk, stackFloor())
		}
	}
	lo, hi := release.free[0], release.free[1]
	for i := range state {
		if state[i] != pageCandidate {
			continue
		}
		f := release.base + uint64(i)
		if f >= lo && f < hi {
			release.stats.Unread++
			continue
		}
		release.stats.Scanned++
		if !zeroPage(uintptr(f) << 12) {
			state[i] = pageKeep
			continue
		}
		release.stats.Zero++
	}
	release.tsc[1] = rdtsc()
	for i := 0; ; {
		start, order, next := nextRelease(state, release.base, i, !release.noHuge)
		if start == len(state) {
			break
		}
		if order == orderHuge {
			release.huge[release.nhuge] = release.base + uint64(start)
			release.nhuge++
			if release.nhuge == hugeBatch {
				giveBackHuge()
			}
		} else {
			queueGiveBack(release.base + uint64(start))
		}
		i = next
	}
	if release.nhuge > 0 {
		giveBackHuge()
	}
	if release.nsmall > 0 {
		giveBack()
	}
	release.tsc[2] = rdtsc()
}

// queueGiveBack adds frame f to the batch of frames to give back.
//
//go:nosplit
func queueGiveBack(f uint64) {
	release.small[release.nsmall] = f
	release.nsmall++
	if release.nsmall == releaseBatch {
		giveBack()
	}
}

// giveBackHuge gives the 2 MiB extents in release.huge back to Xen. If
// Xen stops short, the extent it stopped at may be given back in part:
// each of its frames is looked at, and those still populated go with the
// rest of the batch as 4 KiB frames.
//
//go:nosplit
func giveBackHuge() {
	n := release.nhuge
	release.nhuge = 0
	done := int(hypercall.DecreaseReservation(&release.huge[0], n, orderHuge))
	if done < 0 {
		done = 0
	}
	for k := 0; k < done; k++ {
		setStates(release.state, int(release.huge[k]-release.base), hugeFrames, pageReleasedHuge)
	}
	release.stats.Released += uint64(done) * hugeFrames
	release.stats.Huge += uint64(done)
	if done == n {
		return
	}
	release.stats.Short++
	release.noHuge = true
	for k := done; k < n; k++ {
		f0 := release.huge[k]
		for f := f0; f < f0+hugeFrames; f++ {
			if k == done && !populated(f) {
				release.state[f-release.base] = pageReleased
				release.stats.Released++
				continue
			}
			queueGiveBack(f)
		}
	}
}

// giveBack gives the frames in release.small back to Xen and marks those
// it took. A frame Xen will not take stays populated (and in use): the
// frames after it are offered again.
//
//go:nosplit
func giveBack() {
	n := release.nsmall
	release.nsmall = 0
	for k := 0; k < n; {
		done := hypercall.DecreaseReservation(&release.small[k], n-k, orderPage)
		if done < 0 {
			release.stats.Short += uint64(n - k)
			return
		}
		for j := k; j < k+int(done); j++ {
			release.state[release.small[j]-release.base] = pageReleased
		}
		release.stats.Released += uint64(done)
		k += int(done)
		if k < n {
			release.stats.Short++
			k++
		}
	}
}

// repopulate backs every released page again and clears those the
// runtime may read (not above its break): Xen's pages hold whatever their
// last owner left. After a non-live save and restore, or a checkpoint,
// the released frames are unpopulated. After a live migration they may
// not be: its first pass sent every page while the domain ran, so the new
// domain may already hold them, with what they held then. Populating a
// frame twice would leak a page and can exceed the domain's allowance, so
// a few released frames are sampled first (HVMOP_get_mem_type): all
// unpopulated, every one is populated; all populated, every one is
// cleared where needed (each was zero when released, or lies above the
// break); mixed, each frame is looked at. A page Xen will not give back
// would read as all ones and drop writes: the domain crashes rather than
// run on with memory missing.
//
//go:nosplit
func repopulate() {
	release.tsc[3] = rdtsc()
	if !release.enabled {
		release.tsc[4] = release.tsc[3]
		return
	}
	release.noHuge = false
	release.nsmall, release.nhuge = 0, 0
	mode := sampleReleased()
	state := release.state
	for i := 0; ; {
		start, order, next := nextPopulate(state, release.base, i)
		if start == len(state) {
			break
		}
		i = next
		f := release.base + uint64(start)
		if order == orderPage {
			fillFrame(f, mode)
			continue
		}
		switch mode {
		case fillPopulate:
			if release.noHuge {
				for k := f; k < f+hugeFrames; k++ {
					queueTakeBack(k)
				}
				continue
			}
			release.huge[release.nhuge] = f
			release.nhuge++
			if release.nhuge == hugeBatch {
				takeBackHuge()
			}
		default:
			for k := f; k < f+hugeFrames; k++ {
				fillFrame(k, mode)
			}
		}
	}
	if release.nhuge > 0 {
		takeBackHuge()
	}
	if release.nsmall > 0 {
		takeBack()
	}
	release.enabled = false
	release.tsc[4] = rdtsc()
}

// fillFrame backs the released frame f again: found in place (mode
// fillZero, or fillEach and populated), it is cleared where needed;
// otherwise it is queued to be populated.
//
//go:nosplit
func fillFrame(f uint64, mode int) {
	if mode == fillZero || mode == fillEach && populated(f) {
		release.stats.FoundBack++
		backInPlace(f)
		return
	}
	queueTakeBack(f)
}

// backInPlace marks frame f populated again and clears it unless it lies
// above the runtime's break.
//
//go:nosplit
func backInPlace(f uint64) {
	release.state[f-release.base] = pageCandidate
	if f >= release.free[0] && f < release.free[1] {
		return
	}
	clearPage(uintptr(f) << 12)
	release.stats.Cleared++
}

// queueTakeBack adds frame f to the batch of frames to populate.
//
//go:nosplit
func queueTakeBack(f uint64) {
	release.small[release.nsmall] = f
	release.nsmall++
	if release.nsmall == releaseBatch {
		takeBack()
	}
}

// timeRelease turns the TSC stamps of the last suspend into durations,
// given how long it took in all (wall) and in TSC ticks (ticks).
func timeRelease(wall time.Duration, ticks uint64) {
	t := &release.tsc
	if ticks == 0 || t[1] < t[0] || t[2] < t[1] || t[4] < t[3] {
		return
	}
	per := float64(wall) / float64(ticks)
	release.stats.Release = time.Duration(float64(t[2]-t[0]) * per)
	release.stats.Scan = time.Duration(float64(t[1]-t[0]) * per)
	release.stats.Repopulate = time.Duration(float64(t[4]-t[3]) * per)
}

// How repopulate fills the released frames.
const (
	fillPopulate = iota // all unpopulated
	fillZero            // all populated: clear where needed
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
	for i, s := range release.state {
		if s != pageReleased && s != pageReleasedHuge {
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
	for i := 0; i < 512; i += 8 {
		p[i], p[i+1], p[i+2], p[i+3] = 0, 0, 0, 0
		p[i+4], p[i+5], p[i+6], p[i+7] = 0, 0, 0, 0
	}
}

// takeBackHuge populates the 2 MiB extents in release.huge and clears
// their frames below the runtime's break. An extent Xen refuses (it has
// no free 2 MiB run) is populated as 4 KiB frames, and so is the rest of
// the repopulation; a refused extent is looked at frame by frame in case
// Xen mapped part of it.
//
//go:nosplit
func takeBackHuge() {
	n := release.nhuge
	release.nhuge = 0
	done := int(hypercall.PopulatePhysmap(&release.huge[0], n, orderHuge))
	if done < 0 {
		done = 0
	}
	for k := 0; k < done; k++ {
		f0 := release.huge[k]
		for f := f0; f < f0+hugeFrames; f++ {
			backInPlace(f)
		}
	}
	if done == n {
		return
	}
	release.stats.Short++
	release.noHuge = true
	for k := done; k < n; k++ {
		f0 := release.huge[k]
		for f := f0; f < f0+hugeFrames; f++ {
			if k == done && populated(f) {
				backInPlace(f)
				continue
			}
			queueTakeBack(f)
		}
	}
}

// takeBack populates the frames in release.small, retrying the rest of a
// short answer once, and clears those below the runtime's break.
//
//go:nosplit
func takeBack() {
	n := release.nsmall
	release.nsmall = 0
	done := hypercall.PopulatePhysmap(&release.small[0], n, orderPage)
	if done < 0 {
		done = 0
	}
	if int(done) < n {
		release.stats.Short += uint64(n) - uint64(done)
		more := hypercall.PopulatePhysmap(&release.small[done], n-int(done), orderPage)
		if more < 0 || int(done+more) < n {
			hypercall.Shutdown(hypercall.ShutdownCrash)
		}
	}
	for _, f := range release.small[:n] {
		backInPlace(f)
	}
}

// zeroPage reports whether the 4 KiB page at addr reads all zeros.
//
//go:nosplit
func zeroPage(addr uintptr) bool {
	p := (*[512]uint64)(phys.Pointer(addr))
	for i := 0; i < 512; i += 8 {
		if p[i]|p[i+1]|p[i+2]|p[i+3]|p[i+4]|p[i+5]|p[i+6]|p[i+7] != 0 {
			return false
		}
	}
	return true
}
