package gntxen

import (
	"errors"
	"testing"

	"github.com/gozen-dev/gozen/gnttab"
	"github.com/gozen-dev/gozen/hypercall"
)

func TestEntry(t *testing.T) {
	var e uint64
	GrantAccess(&e, 5, 0x1234, true)
	if e != EncodeEntry(GTFPermitAccess|GTFReadonly, 5, 0x1234) || e&0xffff != 5 || e>>16&0xffff != 5 || e>>32 != 0x1234 {
		t.Fatalf("entry = %#x", e)
	}
	e |= GTFReading // Xen maps it
	if err := EndAccess(&e); !errors.Is(err, ErrEntryBusy) {
		t.Fatalf("EndAccess while reading = %v", err)
	}
	e &^= GTFReading
	e |= GTFWriting
	if err := EndAccess(&e); !errors.Is(err, ErrEntryBusy) {
		t.Fatalf("EndAccess while writing = %v", err)
	}
	e &^= GTFWriting
	if err := EndAccess(&e); err != nil || e != 0 {
		t.Fatalf("EndAccess = %v, entry %#x", err, e)
	}
}

func TestChooseHole(t *testing.T) {
	const mib = 1 << 20
	tests := []struct {
		name    string
		regions []Region
		want    uint64
		wantErr bool
	}{
		{"domU 48 MiB", []Region{{0, 48 * mib}, {0xfc000000, 0x8000}, {0xfeff8000, 0x8000}}, 50 * mib, false},
		{"dom0", []Region{{0, 0x9f000}, {0x100000, 0x7f00000}, {0x8061000, 0x37f7f000}, {0x3ffe0000, 0x20000}, {0xfffc0000, 0x40000}}, 0x40200000, false},
		{"no room", []Region{{0, 0xbff00000}}, 0, true},
	}
	for _, tt := range tests {
		got, err := ChooseHole(tt.regions, 16*mib, 0xc0000000)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("%s: ChooseHole = %#x, %v; want %#x", tt.name, got, err, tt.want)
		}
	}
}

func TestEndAccessAll(t *testing.T) {
	ro := func(dom uint16, frame uint32) uint64 { return EncodeEntry(GTFPermitAccess|GTFReadonly, dom, frame) }
	rw := func(dom uint16, frame uint32) uint64 { return EncodeEntry(GTFPermitAccess, dom, frame) }
	tests := []struct {
		name     string
		entries  []uint64
		wantN    int
		wantBusy bool
	}{
		{"read-only, page 2 of 3 mapped", []uint64{ro(3, 0x100), ro(3, 0x101), ro(3, 0x102) | GTFReading}, 2, true},
		{"read-only, page 1 of 4 being copied", []uint64{ro(3, 0x100), ro(3, 0x101) | GTFReading, ro(3, 0x102), ro(3, 0x103)}, 1, true},
		{"writable, page 1 of 2 mapped", []uint64{rw(7, 0x200), rw(7, 0x201) | GTFReading | GTFWriting}, 1, true},
		{"mixed, last page mapped", []uint64{ro(1, 0x300), rw(1, 0x301), ro(1, 0x302), rw(1, 0x303) | GTFWriting}, 3, true},
		{"first page mapped", []uint64{ro(2, 0x400) | GTFReading, ro(2, 0x401)}, 0, true},
		{"none mapped", []uint64{ro(2, 0x500), rw(2, 0x501), ro(2, 0x502)}, 3, false},
		{"no entries", nil, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			table := append([]uint64(nil), tt.entries...)
			ptrs := make([]*uint64, len(table))
			for i := range table {
				ptrs[i] = &table[i]
			}
			n, err := EndAccessAll(ptrs)
			if n != tt.wantN || errors.Is(err, ErrEntryBusy) != tt.wantBusy || (err != nil) != tt.wantBusy {
				t.Fatalf("EndAccessAll = %d, %v; want %d, busy %v", n, err, tt.wantN, tt.wantBusy)
			}
			for i, w := range table {
				want := tt.entries[i]
				if !tt.wantBusy {
					want = 0
				}
				if w != want {
					t.Errorf("entry %d = %#x (flags %#x), want %#x (flags %#x)", i, w, uint16(w), want, uint16(want))
				}
			}
		})
	}
}

// TestCheckCopy holds the bounds check to the cases of gnttabtest's Copy
// case, empty copies included (gntxen once let an empty copy at any offset
// through, found by the suite running in the guest).
func TestCheckCopy(t *testing.T) {
	tests := []struct {
		name      string
		offset, n int
		ok        bool
	}{
		{"whole page", 0, gnttab.PageSize, true},
		{"one byte", 1, 1, true},
		{"to the end", 4000, 96, true},
		{"empty at the start", 0, 0, true},
		{"empty at the end", gnttab.PageSize, 0, true},
		{"empty past the end", gnttab.PageSize + 1, 0, false},
		{"empty at a negative offset", -1, 0, false},
		{"negative offset", -1, 1, false},
		{"crosses the end", gnttab.PageSize - 2, 3, false},
		{"longer than a page", 0, gnttab.PageSize + 1, false},
		{"huge offset", 1 << 62, 1, false},
		{"offset that overflows with n", int(^uint(0) >> 1), 8, false},
		{"most negative offset", -1 << 63, 8, false},
		{"negative length", 0, -1, false},
	}
	for _, tt := range tests {
		err := CheckCopy(tt.offset, tt.n)
		if tt.ok && err != nil || !tt.ok && !errors.Is(err, gnttab.ErrBounds) {
			t.Errorf("%s: CheckCopy(%d, %d) = %v, want ok=%v", tt.name, tt.offset, tt.n, err, tt.ok)
		}
	}
}

// TestReadOnlyRefusal: Xen refuses a write access to a read-only grant and
// to a ref not granted at all with the same GNTST_general_error; only a
// readable ref makes it ErrReadOnly, and the probe runs only for that
// status (gntxen once reported ErrBadRef for read-only grants, found by the
// suite running in the guest).
func TestReadOnlyRefusal(t *testing.T) {
	tests := []struct {
		name     string
		st       hypercall.GrantStatus
		readable bool
		want     bool
		probed   bool
	}{
		{"read-only grant", hypercall.GNTSTGeneralError, true, true, true},
		{"not granted to us", hypercall.GNTSTGeneralError, false, false, true},
		{"bad ref", hypercall.GNTSTBadGntref, true, false, false},
		{"bad domain", hypercall.GNTSTBadDomain, true, false, false},
		{"permission denied", hypercall.GNTSTPermissionDenied, true, false, false},
	}
	for _, tt := range tests {
		probed := false
		got := ReadOnlyRefusal(tt.st, func() bool { probed = true; return tt.readable })
		if got != tt.want || probed != tt.probed {
			t.Errorf("%s: ReadOnlyRefusal = %v (probed %v), want %v (probed %v)", tt.name, got, probed, tt.want, tt.probed)
		}
	}
}
