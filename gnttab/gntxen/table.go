// Package gntxen implements gnttab.SharedMemory in a Gozen guest with Xen's
// grant tables (v1): the table frames mapped into a guest-physical hole
// with XENMEM_add_to_physmap and grown on demand, a free-list reference
// allocator, end-of-access that refuses while the remote side has the page
// mapped, GNTTABOP_map_grant_ref into a reserved window, and batched
// GNTTABOP_copy.
//
// The entry encoding, allocators and hole selection in this file are
// portable and host-tested; the hypercall layer builds only for tamago.
package gntxen

import (
	"errors"
	"fmt"
	"sort"
	"sync/atomic"

	"github.com/gozen-dev/gozen/gnttab"
	"github.com/gozen-dev/gozen/hypercall"
)

// Grant entry v1 flags (GTF_* in grant_table.h).
const (
	GTFPermitAccess = 1 << 0
	GTFReadonly     = 1 << 2
	GTFReading      = 1 << 3
	GTFWriting      = 1 << 4
)

// EntriesPerFrame is the number of v1 entries (8 bytes) in a table frame.
const EntriesPerFrame = gnttab.PageSize / 8

// ReservedEntries are refs the toolstack uses (console, xenstore).
const ReservedEntries = 8

// EncodeEntry returns a v1 grant entry as the 64-bit word Xen reads:
// flags in bits 0-15, domid in 16-31, frame in 32-63.
func EncodeEntry(flags uint16, domid uint16, frame uint32) uint64 {
	return uint64(frame)<<32 | uint64(domid)<<16 | uint64(flags)
}

// GrantAccess publishes a grant in entry. The whole entry is written with
// one atomic 64-bit store, so Xen can never see the permit flag with a
// stale domid or frame (the same guarantee as writing domid and frame,
// then a write barrier, then flags).
func GrantAccess(entry *uint64, domid uint16, frame uint32, readonly bool) {
	flags := uint16(GTFPermitAccess)
	if readonly {
		flags |= GTFReadonly
	}
	atomic.StoreUint64(entry, EncodeEntry(flags, domid, frame))
}

// ErrEntryBusy means the remote domain has the page mapped or is copying.
var ErrEntryBusy = errors.New("gntxen: grant entry in use (GTF_reading/GTF_writing)")

// EndAccess revokes the grant in entry unless Xen marks it in use; Xen sets
// GTF_reading/GTF_writing with a compare-and-swap, so a compare-and-swap
// here cannot lose against a concurrent map.
func EndAccess(entry *uint64) error {
	_, err := endAccess(entry)
	return err
}

// endAccess is EndAccess, also returning the entry as it was before the
// revocation.
func endAccess(entry *uint64) (uint64, error) {
	for {
		old := atomic.LoadUint64(entry)
		if old&(GTFReading|GTFWriting) != 0 {
			return old, ErrEntryBusy
		}
		if atomic.CompareAndSwapUint64(entry, old, 0) {
			return old, nil
		}
	}
}

// EndAccessAll revokes the grants in entries, all or none, as Unshare
// needs. It ends access to each entry in order; when entry i is in use it
// puts back entries 0..i-1 exactly as they were (same domid, frame and
// GTF_readonly: a read-only grant stays read-only), leaves entry i and the
// rest untouched, and returns i with an error wrapping ErrEntryBusy. On
// success it returns len(entries) and nil.
//
// The words put back held no GTF_reading/GTF_writing (EndAccess would have
// refused them), and between the revocation and the restore Xen cannot
// have set those flags on an entry without GTF_permit_access, so one
// atomic store per entry restores the grant.
func EndAccessAll(entries []*uint64) (int, error) {
	olds := make([]uint64, 0, len(entries))
	for i, e := range entries {
		old, err := endAccess(e)
		if err != nil {
			for j, w := range olds {
				atomic.StoreUint64(entries[j], w)
			}
			return i, fmt.Errorf("gntxen: ending access to entry %d of %d (flags %#x): %w", i, len(entries), uint16(old), err)
		}
		olds = append(olds, old)
	}
	return len(entries), nil
}

// Region is one entry of the domain's memory map.
type Region struct{ Addr, Size uint64 }

// ChooseHole returns a 2 MiB-aligned guest-physical address at which size
// bytes overlap no memory-map region and stay below limit: the first hole
// above every region that ends below limit, with a 2 MiB guard after it.
// Xen maps grant frames and grant mappings there, never over RAM.
func ChooseHole(regions []Region, size, limit uint64) (uint64, error) {
	const align = 2 << 20
	rs := append([]Region(nil), regions...)
	sort.Slice(rs, func(i, j int) bool { return rs[i].Addr < rs[j].Addr })
	var top uint64
	for _, r := range rs {
		if r.Addr < limit && r.Addr+r.Size > top && r.Addr+r.Size <= limit {
			top = r.Addr + r.Size
		}
	}
	base := (top + align + align - 1) &^ (align - 1)
	for _, r := range rs {
		if r.Addr < base+size && base < r.Addr+r.Size {
			return 0, fmt.Errorf("no hole of %d bytes below %#x: %#x overlaps region [%#x,%#x)", size, limit, base, r.Addr, r.Addr+r.Size)
		}
	}
	if base+size > limit {
		return 0, fmt.Errorf("no hole of %d bytes below %#x (memory map tops out at %#x)", size, limit, top)
	}
	return base, nil
}

// CheckCopy returns an error wrapping gnttab.ErrBounds unless n bytes at
// offset fit in one page (n == 0 at offset PageSize fits: it is the empty
// range at the page's end). Empty copies are checked too, so that a copy
// of nothing at a bad offset fails as the contract says.
func CheckCopy(offset, n int) error {
	if offset < 0 || n < 0 || offset > gnttab.PageSize || n > gnttab.PageSize-offset {
		return fmt.Errorf("gntxen: copy of %d bytes at offset %d: %w", n, offset, gnttab.ErrBounds)
	}
	return nil
}

// ReadOnlyRefusal reports whether a write access to a grant (a writable
// map, a copy into it) that Xen refused with status st was refused because
// the grant is read-only. Xen answers GNTST_general_error ("Attempt to
// write-pin a r/o grant entry") for that and for a ref not granted to us
// (revoked, never granted, granted to another domain) alike; readable,
// called only for that status, tells them apart by trying a read access to
// the same ref.
func ReadOnlyRefusal(st hypercall.GrantStatus, readable func() bool) bool {
	return st == hypercall.GNTSTGeneralError && readable()
}
