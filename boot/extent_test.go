package boot

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
)

// states builds a page-state map from runs such as "c512 k1 r3 h512":
// c candidate, k keep, r released, h released in a huge extent.
func states(t testing.TB, spec string) []byte {
	t.Helper()
	var out []byte
	for _, run := range strings.Fields(spec) {
		n, err := strconv.Atoi(run[1:])
		if err != nil {
			t.Fatalf("bad run %q", run)
		}
		s := map[byte]byte{'c': pageCandidate, 'k': pageKeep, 'r': pageReleased, 'h': pageReleasedHuge}[run[0]]
		for i := 0; i < n; i++ {
			out = append(out, s)
		}
	}
	return out
}

// extents lists what next returns from index 0 to the end, as
// "index/order" runs: "0/9 512/9", with "i..j/0" for frames i to j taken
// one by one.
func extents(state []byte, next func(i int) (int, uint32, int)) string {
	var parts []string
	runStart, runEnd := -1, -1
	flush := func() {
		if runStart >= 0 {
			if runStart == runEnd {
				parts = append(parts, fmt.Sprintf("%d/0", runStart))
			} else {
				parts = append(parts, fmt.Sprintf("%d..%d/0", runStart, runEnd))
			}
			runStart = -1
		}
	}
	for i := 0; ; {
		start, order, n := next(i)
		if start == len(state) {
			break
		}
		if n <= start || start < i {
			parts = append(parts, fmt.Sprintf("STUCK(%d->%d)", i, n))
			break
		}
		switch {
		case order == orderPage && runStart >= 0 && start == runEnd+1:
			runEnd = start
		case order == orderPage:
			flush()
			runStart, runEnd = start, start
		default:
			flush()
			parts = append(parts, fmt.Sprintf("%d/%d", start, order))
		}
		i = n
	}
	flush()
	return strings.Join(parts, " ")
}

func TestNextRelease(t *testing.T) {
	tests := []struct {
		name string
		spec string
		base uint64
		huge bool
		want string
	}{
		{"two aligned superpages", "c1024", 0x200, true, "0/9 512/9"},
		{"no superpages asked", "c1024", 0x200, false, "0..1023/0"},
		{"unaligned start", "c1024", 0x201, true, "0..510/0 511/9 1023/0"},
		{"a kept frame breaks its superpage", "c100 k1 c411 c512", 0, true, "0..99/0 101..511/0 512/9"},
		{"short tail", "c512 c511", 0, true, "0/9 512..1022/0"},
		{"nothing to release", "k600 r3 h512", 0, true, ""},
		{"empty map", "", 0, true, ""},
		{"released frames are not candidates", "r1 c511 c512", 0, true, "1..511/0 512/9"},
		{"keep at the very end", "c512 c511 k1", 0x400, true, "0/9 512..1022/0"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st := states(t, tc.spec)
			got := extents(st, func(i int) (int, uint32, int) { return nextRelease(st, tc.base, i, tc.huge) })
			if got != tc.want {
				t.Errorf("extents = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestNextPopulate(t *testing.T) {
	tests := []struct {
		name string
		spec string
		base uint64
		want string
	}{
		{"one superpage", "h512", 0, "0/9"},
		{"superpage then frames", "h512 r3 k2 r1", 0, "0/9 512..514/0 517/0"},
		{"a partial run goes frame by frame", "h511 k1", 0, "0..510/0"},
		{"an unaligned run goes frame by frame", "h512", 1, "0..511/0"},
		{"keeps and candidates are skipped", "k10 c10 r2", 0, "20..21/0"},
		{"nothing released", "c512 k3", 0, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st := states(t, tc.spec)
			got := extents(st, func(i int) (int, uint32, int) { return nextPopulate(st, tc.base, i) })
			if got != tc.want {
				t.Errorf("extents = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestFreeFrames(t *testing.T) {
	tests := []struct {
		name           string
		blocMax, stack uint64
		wantLo, wantHi uint64
	}{
		{"aligned", 0x800000, 0x7e00000, 0x800, 0x7e00},
		{"break rounds up", 0x800001, 0x7e00000, 0x801, 0x7e00},
		{"stack rounds down", 0x800000, 0x7e00fff, 0x800, 0x7e00},
		{"break at the stack", 0x7e00000, 0x7e00000, 0x7e00, 0x7e00},
		{"break above the stack: empty", 0x7f00000, 0x7e00000, 0x7f00, 0x7f00},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			lo, hi := freeFrames(tc.blocMax, tc.stack)
			if lo != tc.wantLo || hi != tc.wantHi {
				t.Errorf("freeFrames(%#x, %#x) = [%#x, %#x), want [%#x, %#x)", tc.blocMax, tc.stack, lo, hi, tc.wantLo, tc.wantHi)
			}
			// every frame of the range lies whole in [blocMax, stack)
			if lo < hi && (lo<<12 < tc.blocMax || hi<<12 > tc.stack) {
				t.Errorf("[%#x, %#x) reaches outside [%#x, %#x)", lo<<12, hi<<12, tc.blocMax, tc.stack)
			}
		})
	}
}

func TestRuntimeBreak(t *testing.T) {
	const heap, stack = 0xa90000, 0x7ee0000
	tests := []struct {
		name                     string
		bloc, blocMax, lock, use uint64
		ok                       bool
	}{
		{"consistent", 0x1400000, 0x1800000, 0, 0x1000000, true},
		{"break lowered since", 0x1000000, 0x1800000, 0, 0x1000000, true},
		{"at the heap's start", heap, heap, 0, heap, true},
		{"memory lock held", 0x1400000, 0x1800000, 1, 0x1000000, false},
		{"lock word with waiters only", 0x1400000, 0x1800000, 0x40, 0x1000000, false},
		{"break not page-aligned", 0x1400010, 0x1800000, 0, 0x1000000, false},
		{"high-water mark not page-aligned", 0x1400000, 0x1800008, 0, 0x1000000, false},
		{"break above its high-water mark", 0x1900000, 0x1800000, 0, 0x1000000, false},
		{"break below the heap", 0x100000, 0x1800000, 0, 0x100000, false},
		{"high-water mark in the stack", 0x1400000, stack + 0x1000, 0, 0x1000000, false},
		{"memory in use above the break", 0x1400000, 0x1800000, 0, 0x1400001, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, ok := runtimeBreak(tc.bloc, tc.blocMax, tc.lock, heap, stack, tc.use)
			if ok != tc.ok || ok && got != tc.blocMax {
				t.Errorf("runtimeBreak = %#x, %v; want %v", got, ok, tc.ok)
			}
		})
	}
}

// roundTrip releases what nextRelease plans in st (as release_tamago.go
// marks it) and checks that nextPopulate then plans the same extents and
// nothing else.
func roundTrip(t *testing.T, st []byte, base uint64, huge bool) {
	t.Helper()
	var released []string
	for i := 0; ; {
		start, order, next := nextRelease(st, base, i, huge)
		if start == len(st) {
			break
		}
		if order == orderHuge {
			if (base+uint64(start))%hugeFrames != 0 || next != start+hugeFrames {
				t.Fatalf("superpage at index %d (frame %#x) is not aligned or whole", start, base+uint64(start))
			}
			for k := start; k < next; k++ {
				if st[k] != pageCandidate {
					t.Fatalf("superpage at index %d takes a frame in state %d", start, st[k])
				}
			}
			setStates(st, start, hugeFrames, pageReleasedHuge)
		} else {
			if st[start] != pageCandidate || next != start+1 {
				t.Fatalf("frame at index %d in state %d (next %d)", start, st[start], next)
			}
			st[start] = pageReleased
		}
		released = append(released, fmt.Sprintf("%d/%d", start, order))
		i = next
	}
	var populated []string
	for i := 0; ; {
		start, order, next := nextPopulate(st, base, i)
		if start == len(st) {
			break
		}
		populated = append(populated, fmt.Sprintf("%d/%d", start, order))
		i = next
	}
	if a, b := strings.Join(released, " "), strings.Join(populated, " "); a != b {
		t.Fatalf("released %s\npopulated %s", a, b)
	}
	for i, s := range st {
		if s == pageCandidate {
			t.Fatalf("candidate at index %d was not released", i)
		}
	}
}

func TestRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		spec string
		base uint64
	}{
		{"c2048", 0},
		{"c2048", 0x1ff},
		{"k3 c1500 k1 c600", 0x10},
		{"c511 k1 c1024 k7", 0x200},
	} {
		for _, huge := range []bool{true, false} {
			t.Run(fmt.Sprintf("%s@%#x/huge=%v", tc.spec, tc.base, huge), func(t *testing.T) {
				roundTrip(t, states(t, tc.spec), tc.base, huge)
			})
		}
	}
}

// FuzzExtents: any map of candidates and kept frames, at any base,
// releases and populates again the same extents, superpages aligned.
func FuzzExtents(f *testing.F) {
	f.Add([]byte{0x00, 0x08, 0x01}, uint64(0), true)
	f.Add([]byte{0xff, 0x02, 0x10, 0x00}, uint64(0x1ff), true)
	f.Add([]byte{0x40, 0x40, 0x40}, uint64(0x200), false)
	f.Fuzz(func(t *testing.T, runs []byte, base uint64, huge bool) {
		// each byte is a run: the low 7 bits its length in 16-frame
		// units, the top bit keep or candidate
		var st []byte
		for _, r := range runs {
			s := byte(pageCandidate)
			if r&0x80 != 0 {
				s = pageKeep
			}
			for i := 0; i < int(r&0x7f)*16+1 && len(st) < 1<<16; i++ {
				st = append(st, s)
			}
		}
		roundTrip(t, st, base>>12, huge)
	})
}
