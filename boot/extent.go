package boot

// Extent planning of the zero-page release around a suspend (see
// release_tamago.go). It is portable and pure, so that the host tests
// can check it; the guest calls it with interrupts off, so it is nosplit
// and allocates nothing.

// Page states in the release map: one byte per 4 KiB frame.
const (
	// pageCandidate: to be given back (it reads all zeros, or lies
	// where nothing reads memory before the runtime clears it).
	pageCandidate = 0
	// pageKeep: stays populated.
	pageKeep = 1
	// pageReleased: given back as a 4 KiB frame (an order-0 extent).
	pageReleased = 2
	// pageReleasedHuge: given back within a 2 MiB (order-9) extent.
	pageReleasedHuge = 3
)

// Extent orders: a 4 KiB frame, and a 2 MiB superpage of hugeFrames
// frames, aligned to its size.
const (
	orderPage  = 0
	orderHuge  = 9
	hugeFrames = 1 << orderHuge
)

// nextRelease finds the next extent to give back in state (the states of
// the frames from base) from index i on: with huge, a 2 MiB-aligned run of
// hugeFrames candidates as one order-9 extent, otherwise one candidate
// frame. It returns the extent's first index, its order and the index to
// go on from; start is len(state) when there is none.
//
//go:nosplit
func nextRelease(state []byte, base uint64, i int, huge bool) (start int, order uint32, next int) {
	for ; i < len(state); i++ {
		if state[i] != pageCandidate {
			continue
		}
		if huge && (base+uint64(i))%hugeFrames == 0 && wholeRun(state, i, pageCandidate) {
			return i, orderHuge, i + hugeFrames
		}
		return i, orderPage, i + 1
	}
	return len(state), orderPage, len(state)
}

// nextPopulate finds the next released extent to populate again from
// index i on: a 2 MiB-aligned run of hugeFrames frames released as one
// order-9 extent, or one released frame (a frame marked as part of a huge
// extent but not in a whole aligned run of them is taken as one frame).
// It returns what nextRelease does.
//
//go:nosplit
func nextPopulate(state []byte, base uint64, i int) (start int, order uint32, next int) {
	for ; i < len(state); i++ {
		switch state[i] {
		case pageReleasedHuge:
			if (base+uint64(i))%hugeFrames == 0 && wholeRun(state, i, pageReleasedHuge) {
				return i, orderHuge, i + hugeFrames
			}
			return i, orderPage, i + 1
		case pageReleased:
			return i, orderPage, i + 1
		}
	}
	return len(state), orderPage, len(state)
}

// wholeRun reports whether the hugeFrames states from index i are all s.
//
//go:nosplit
func wholeRun(state []byte, i int, s byte) bool {
	if i < 0 || i+hugeFrames > len(state) {
		return false
	}
	for _, v := range state[i : i+hugeFrames] {
		if v != s {
			return false
		}
	}
	return true
}

// setStates sets the n states from index i to s.
//
//go:nosplit
func setStates(state []byte, i, n int, s byte) {
	for k := i; k < i+n && k < len(state); k++ {
		state[k] = s
	}
}

// freeFrames returns the frames [lo, hi) that nothing reads before the
// runtime clears them: from the runtime's break high-water mark blocMax
// (the runtime's sbrk clears memory as it raises it, and it never reads
// memory above it) to the lowest stack address stackLo (the boot stack at
// the top of RAM, below which sbrk stops), whole pages only. The frames of
// this range need no scan before a suspend, no clearing after it, and may
// be given back to Xen whatever they hold. Empty (lo == hi) when blocMax
// is not below stackLo.
//
//go:nosplit
func freeFrames(blocMax, stackLo uint64) (lo, hi uint64) {
	lo = (blocMax + 0xfff) >> 12
	hi = stackLo >> 12
	if hi < lo {
		hi = lo
	}
	return lo, hi
}
