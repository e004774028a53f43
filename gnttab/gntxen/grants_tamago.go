//go:build tamago

package gntxen

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/gozen-dev/gozen/domid"
	"github.com/gozen-dev/gozen/gnttab"
	"github.com/gozen-dev/gozen/hypercall"
	"github.com/gozen-dev/gozen/internal/phys"
)

// Sizes of the reserved guest-physical hole: up to MaxTableFrames grant
// frames, then a MapWindowPages-page window for grant mappings.
const (
	MaxTableFrames = 64
	MapWindowPages = 4096 // 16 MiB
	HoleSize       = (MaxTableFrames + MapWindowPages) * gnttab.PageSize
)

// Grants is the Xen implementation of gnttab.SharedMemory. Its methods
// are safe for concurrent use, and none takes a lock shared by every
// vCPU on its common path: refs come from the free list of the caller's
// shard (RefPool), map addresses from its window region (Window), live
// shares are recorded in one of Shards registries chosen by address,
// mappings carry their own state, and copies go through a bounce page
// from a per-P pool. Growing the table takes growMu.
type Grants struct {
	tableBase uint64 // guest-physical address of table frame 0
	maxFrames uint32

	growMu sync.Mutex    // serialises growing the table and Resume
	frames atomic.Uint32 // frames mapped

	refs   RefPool
	window atomic.Pointer[Window]
	shares [Shards]shareShard

	nShares, nMaps atomic.Int64  // live shares and mappings, lost ones included
	epoch          atomic.Uint64 // counts resumes into a new domain
	self           atomic.Int32  // our domid, or -1 while unknown
}

// shareShard records the live shares whose buffers hash to it.
type shareShard struct {
	mu     sync.Mutex
	pinned map[*byte][]byte // buffers of live shares
	lost   map[*byte]bool   // shares lost by a resume
	_      [40]byte
}

// shareShardOf returns the registry of the share whose buffer starts
// at p.
func (g *Grants) shareShardOf(p *byte) *shareShard {
	return &g.shares[(uintptr(unsafe.Pointer(p))>>12)%Shards]
}

// shard returns the caller's shard: the id of the scheduler's P it runs
// on (a goroutine may move right after; any shard is correct, this one
// is usually uncontended).
func shard() int {
	id := procPin()
	procUnpin()
	return id
}

//go:linkname procPin runtime.procPin
func procPin() int

//go:linkname procUnpin runtime.procUnpin
func procUnpin()

// bounces holds single pinned pages for Copy.
var bounces = sync.Pool{New: func() any { return &bouncePage{b: alignedPages(1)} }}

// bouncePage is one page-aligned page of the Go heap (which never moves
// objects, so its frame stays valid).
type bouncePage struct{ b []byte }

// ErrSelfMap is returned for a Map of this domain's own grants: in an HVM
// or PVH domain Xen moves the frame to the new address, leaving a hole
// where the granted page was (measured: the original page then reads as
// all ones), so Gozen refuses instead of corrupting its own memory.
var ErrSelfMap = errors.New("gntxen: mapping this domain's own grants is not supported by Xen for PVH guests")

// SetSelf records the domain's own id, so that Map can refuse self-maps.
func (g *Grants) SetSelf(id domid.ID) { g.self.Store(int32(id)) }

var _ gnttab.SharedMemory = (*Grants)(nil)

// New sets up the grant table in the hole at base (see ChooseHole, size
// HoleSize): it maps the table's current frames and reserves the window.
func New(base uint64) (*Grants, error) {
	nr, max, err := hypercall.GrantTableSize()
	if err != nil {
		return nil, fmt.Errorf("gntxen: %w", err)
	}
	if max > MaxTableFrames {
		max = MaxTableFrames
	}
	g := &Grants{tableBase: base, maxFrames: max}
	g.window.Store(NewWindow(base+MaxTableFrames*gnttab.PageSize, MapWindowPages))
	g.self.Store(-1)
	for i := range g.shares {
		g.shares[i].pinned = map[*byte][]byte{}
		g.shares[i].lost = map[*byte]bool{}
	}
	if nr == 0 {
		nr = 1
	}
	for g.frames.Load() < nr {
		if err := g.growLocked(); err != nil {
			return nil, err
		}
	}
	return g, nil
}

// Resume puts the table back after a suspend. Each table frame is added
// again at its guest-physical address (a restored domain has none mapped;
// in a domain that did not move this changes nothing). With lost, the
// domain is new: its table is empty and its mappings of other domains'
// pages are gone, so every share and mapping made before is forgotten
// (Unshare and Unmap of them return errors wrapping gnttab.ErrResumed),
// the map window is freed and every ref is free again. Nothing else may
// use g meanwhile (the domain's other vCPUs are stopped).
func (g *Grants) Resume(lost bool) error {
	g.growMu.Lock()
	defer g.growMu.Unlock()
	frames := g.frames.Load()
	for i := uint32(0); i < frames; i++ {
		if err := hypercall.AddToPhysmap(hypercall.MapSpaceGrantTable, uint64(i), (g.tableBase>>12)+uint64(i)); err != nil {
			return fmt.Errorf("gntxen: resume: mapping table frame %d: %w", i, err)
		}
	}
	if !lost {
		return nil
	}
	for i := range g.shares {
		sh := &g.shares[i]
		sh.mu.Lock()
		for k := range sh.pinned {
			sh.lost[k] = true
		}
		clear(sh.pinned)
		sh.mu.Unlock()
	}
	g.epoch.Add(1) // mappings made before are lost
	g.window.Store(NewWindow(g.tableBase+MaxTableFrames*gnttab.PageSize, MapWindowPages))
	g.refs.Reset(frames)
	return nil
}

// growLocked maps one more table frame (Xen grows the table when asked
// for the frame past its end); growMu is held, or g is not shared yet.
func (g *Grants) growLocked() error {
	frames := g.frames.Load()
	if frames >= g.maxFrames {
		return fmt.Errorf("gntxen: table at its maximum of %d frames: %w", g.maxFrames, gnttab.ErrNoSpace)
	}
	gpfn := (g.tableBase >> 12) + uint64(frames)
	if err := hypercall.AddToPhysmap(hypercall.MapSpaceGrantTable, uint64(frames), gpfn); err != nil {
		return fmt.Errorf("gntxen: mapping table frame %d: %w", frames, err)
	}
	g.frames.Store(frames + 1)
	g.refs.Grow(frames + 1)
	return nil
}

// allocRefs takes n refs from shard, growing the table when the pool
// has too few.
func (g *Grants) allocRefs(shard, n int) ([]gnttab.Ref, error) {
	refs := make([]gnttab.Ref, 0, n)
	for {
		if got, ok := g.refs.Alloc(shard, refs, n); ok {
			return got, nil
		}
		g.growMu.Lock()
		limit := g.refs.Limit()
		err := error(nil)
		if g.refs.Used()+n > int(limit)-ReservedEntries {
			err = g.growLocked()
		}
		g.growMu.Unlock()
		if err != nil {
			return nil, err
		}
	}
}

func (g *Grants) entry(r gnttab.Ref) *uint64 {
	return (*uint64)(phys.Pointer(uintptr(g.tableBase) + uintptr(r)*8))
}

// alignedPages allocates n zeroed, page-aligned pages on the Go heap (which
// never moves objects; the identity map makes the address the frame).
func alignedPages(n int) []byte {
	b := make([]byte, (n+1)*gnttab.PageSize)
	off := (gnttab.PageSize - int(uintptr(unsafe.Pointer(&b[0]))%gnttab.PageSize)) % gnttab.PageSize
	return b[off : off+n*gnttab.PageSize : off+n*gnttab.PageSize]
}

func frameOf(b []byte) uint32 { return uint32(uintptr(unsafe.Pointer(&b[0])) >> 12) }

// Share grants pages fresh zeroed pages to remote.
func (g *Grants) Share(remote domid.ID, pages int, writable bool) (*gnttab.Share, error) {
	if pages <= 0 || pages > MapWindowPages {
		return nil, fmt.Errorf("gntxen: share of %d pages: %w", pages, gnttab.ErrBounds)
	}
	buf := alignedPages(pages)
	refs, err := g.allocRefs(shard(), pages)
	if err != nil {
		return nil, err
	}
	for i, r := range refs {
		GrantAccess(g.entry(r), uint16(remote), frameOf(buf[i*gnttab.PageSize:]), !writable)
	}
	sh := g.shareShardOf(&buf[0])
	sh.mu.Lock()
	sh.pinned[&buf[0]] = buf
	sh.mu.Unlock()
	g.nShares.Add(1)
	return &gnttab.Share{Remote: remote, Refs: refs, Buf: buf}, nil
}

// SharedFrames appends the frame range [start, end) of every live
// share's pages: a suspend must keep them populated (the peer may map
// them, and after a checkpoint the share goes on).
func (g *Grants) SharedFrames(dst [][2]uint64) [][2]uint64 {
	for i := range g.shares {
		sh := &g.shares[i]
		sh.mu.Lock()
		for p, buf := range sh.pinned {
			start := uint64(uintptr(unsafe.Pointer(p))) >> 12
			dst = append(dst, [2]uint64{start, start + uint64(len(buf)+gnttab.PageSize-1)/gnttab.PageSize})
		}
		sh.mu.Unlock()
	}
	return dst
}

// Unshare revokes the grants of s; it fails with ErrInUse, leaving the
// share intact, while the remote domain maps any of its pages.
func (g *Grants) Unshare(s *gnttab.Share) error {
	if s == nil || len(s.Buf) == 0 {
		return fmt.Errorf("gntxen: unshare of an empty share: %w", gnttab.ErrBadRef)
	}
	sh := g.shareShardOf(&s.Buf[0])
	sh.mu.Lock()
	defer sh.mu.Unlock()
	if sh.lost[&s.Buf[0]] {
		delete(sh.lost, &s.Buf[0])
		s.Buf = nil
		g.nShares.Add(-1)
		return fmt.Errorf("gntxen: unshare: %w", gnttab.ErrResumed)
	}
	if _, ok := sh.pinned[&s.Buf[0]]; !ok {
		return fmt.Errorf("gntxen: unshare of a share not made here: %w", gnttab.ErrBadRef)
	}
	entries := make([]*uint64, len(s.Refs))
	for i, r := range s.Refs {
		entries[i] = g.entry(r)
	}
	// all or none: a refused Unshare leaves every grant as it was,
	// read-only ones included
	if i, err := EndAccessAll(entries); err != nil {
		return fmt.Errorf("gntxen: unshare ref %d: %w: %w", s.Refs[i], gnttab.ErrInUse, err)
	}
	g.refs.Free(shard(), s.Refs)
	delete(sh.pinned, &s.Buf[0])
	s.Buf = nil
	g.nShares.Add(-1)
	return nil
}

// statusErr turns a GNTST status into an error wrapping the portable one.
func statusErr(op string, st int16) error {
	gerr := &hypercall.GrantError{Op: op, Status: hypercall.GrantStatus(st)}
	switch hypercall.GrantStatus(st) {
	case hypercall.GNTSTBadGntref, hypercall.GNTSTGeneralError, hypercall.GNTSTBadDomain, hypercall.GNTSTBadPage:
		return fmt.Errorf("gntxen: %w: %w", gnttab.ErrBadRef, gerr)
	case hypercall.GNTSTPermissionDenied:
		return fmt.Errorf("gntxen: %w: %w", gnttab.ErrReadOnly, gerr)
	case hypercall.GNTSTNoSpace, hypercall.GNTSTNoDeviceSpace:
		return fmt.Errorf("gntxen: %w: %w", gnttab.ErrNoSpace, gerr)
	}
	return fmt.Errorf("gntxen: %w", gerr)
}

// mapHandle is the gnttab.Mapping.Handle of a Map: where the pages are,
// Xen's handles to unmap them, the resume epoch they belong to, and
// whether Unmap already ran.
type mapHandle struct {
	owner   *Grants
	epoch   uint64
	window  *Window
	addr    uint64
	handles []uint32
	done    atomic.Bool
}

// Map maps the pages refs of domain remote into the map window.
func (g *Grants) Map(remote domid.ID, refs []gnttab.Ref, writable bool) (*gnttab.Mapping, error) {
	if len(refs) == 0 || len(refs) > MapWindowPages {
		return nil, fmt.Errorf("gntxen: map of %d refs: %w", len(refs), gnttab.ErrBounds)
	}
	if self := g.self.Load(); remote == domid.Self || self >= 0 && int32(remote) == self {
		return nil, fmt.Errorf("map of refs %v of domain %d: %w", refs, remote, ErrSelfMap)
	}
	epoch := g.epoch.Load()
	window := g.window.Load()
	addr, err := window.Alloc(shard(), len(refs))
	if err != nil {
		return nil, fmt.Errorf("gntxen: %w", err)
	}
	ops := make([]hypercall.MapGrantRef, len(refs))
	flags := uint32(hypercall.GNTMAPHostMap)
	if !writable {
		flags |= hypercall.GNTMAPReadonly
	}
	for i, r := range refs {
		ops[i] = hypercall.MapGrantRef{HostAddr: addr + uint64(i)*gnttab.PageSize, Flags: flags, Ref: uint32(r), Dom: uint16(remote)}
	}
	callErr := hypercall.MapGrantRefs(ops)
	var firstErr error
	if callErr != nil {
		firstErr = fmt.Errorf("gntxen: map: %w", callErr)
	}
	h := &mapHandle{owner: g, epoch: epoch, window: window, addr: addr, handles: make([]uint32, len(refs))}
	for i := range ops {
		h.handles[i] = ops[i].Handle
		if firstErr == nil && ops[i].Status != 0 {
			what := fmt.Sprintf("map_grant_ref(dom %d, ref %d)", remote, refs[i])
			firstErr = statusErr(what, ops[i].Status)
			if writable && ReadOnlyRefusal(hypercall.GrantStatus(ops[i].Status), func() bool {
				return readable(remote, refs[i])
			}) {
				firstErr = readOnlyErr(what, ops[i].Status)
			}
		}
	}
	if firstErr != nil {
		// undo the entries that did map
		var undo []hypercall.UnmapGrantRef
		for i := range ops {
			if callErr == nil && ops[i].Status == 0 {
				undo = append(undo, hypercall.UnmapGrantRef{HostAddr: ops[i].HostAddr, Handle: ops[i].Handle})
			}
		}
		hypercall.UnmapGrantRefs(undo)
		window.Free(addr, len(refs))
		return nil, firstErr
	}
	buf := phys.Bytes(uintptr(addr), len(refs)*gnttab.PageSize)
	m := &gnttab.Mapping{Remote: remote, Refs: append([]gnttab.Ref(nil), refs...), Buf: buf, Handle: h}
	g.nMaps.Add(1)
	return m, nil
}

// Unmap undoes Map.
func (g *Grants) Unmap(m *gnttab.Mapping) error {
	var h *mapHandle
	if m != nil {
		h, _ = m.Handle.(*mapHandle)
	}
	if h == nil || h.owner != g || !h.done.CompareAndSwap(false, true) {
		return fmt.Errorf("gntxen: unmap of a mapping not made here, or unmapped already: %w", gnttab.ErrBadRef)
	}
	if h.epoch != g.epoch.Load() {
		g.nMaps.Add(-1)
		m.Buf = nil
		return fmt.Errorf("gntxen: unmap: %w", gnttab.ErrResumed)
	}
	ops := make([]hypercall.UnmapGrantRef, len(h.handles))
	for i, hd := range h.handles {
		ops[i] = hypercall.UnmapGrantRef{HostAddr: h.addr + uint64(i)*gnttab.PageSize, Handle: hd}
	}
	if err := hypercall.UnmapGrantRefs(ops); err != nil {
		h.done.Store(false) // nothing was unmapped: it may be tried again
		return fmt.Errorf("gntxen: unmap: %w", err)
	}
	var firstErr error
	for i := range ops {
		if ops[i].Status != 0 && firstErr == nil {
			firstErr = statusErr("unmap_grant_ref", ops[i].Status)
		}
	}
	h.window.Free(h.addr, len(h.handles))
	g.nMaps.Add(-1)
	m.Buf = nil
	return firstErr
}

// CopyOp is one piece of a batched copy between a local buffer and a
// remote grant.
type CopyOp struct {
	Remote domid.ID
	Ref    gnttab.Ref
	Offset int    // in the remote page
	Local  []byte // at most one page; data to send, or room to receive
	// ToRemote copies Local into the remote page; otherwise the remote
	// page is copied into Local.
	ToRemote bool
}

// readOnlyErr is the error of a write access refused because the grant is
// read-only (see ReadOnlyRefusal).
func readOnlyErr(op string, st int16) error {
	return fmt.Errorf("gntxen: %w: %w", gnttab.ErrReadOnly, &hypercall.GrantError{Op: op + " for writing", Status: hypercall.GrantStatus(st)})
}

// readable reports whether remote grants us read access to ref: it
// copies one byte of the page into a bounce page.
func readable(remote domid.ID, ref gnttab.Ref) bool {
	bp := bounces.Get().(*bouncePage)
	defer bounces.Put(bp)
	c := []hypercall.GrantCopy{{
		Source: hypercall.GrantCopySide{RefOrFrame: uint64(ref), Dom: uint16(remote)},
		Dest:   hypercall.GrantCopySide{RefOrFrame: uint64(frameOf(bp.b)), Dom: uint16(domid.Self)},
		Len:    1,
		Flags:  hypercall.GNTCOPYSourceGref,
	}}
	return hypercall.GrantCopies(c) == nil && c[0].Status == 0
}

// Copy runs ops as one GNTTABOP_copy batch (through a pinned bounce
// buffer, so Local may live anywhere, even on a goroutine stack).
func (g *Grants) Copy(ops []CopyOp) error {
	total := 0
	for _, op := range ops {
		if len(op.Local) == 0 {
			return fmt.Errorf("gntxen: empty copy at offset %d: %w", op.Offset, gnttab.ErrBounds)
		}
		if err := CheckCopy(op.Offset, len(op.Local)); err != nil {
			return err
		}
		total += len(op.Local)
	}
	bp := bounces.Get().(*bouncePage)
	defer bounces.Put(bp)
	bounce := bp.b
	if total > len(bounce) {
		bounce = alignedPages((total + gnttab.PageSize - 1) / gnttab.PageSize)
	}
	hops := make([]hypercall.GrantCopy, 0, len(ops)+1)
	owner := make([]int, 0, len(ops)+1) // the op of each hop
	pos := 0
	for oi, op := range ops {
		n := len(op.Local)
		// the local side may straddle a bounce page boundary: split
		for done := 0; done < n; {
			local := bounce[pos+done:]
			lo := int(uintptr(unsafe.Pointer(&local[0])) % gnttab.PageSize)
			chunk := n - done
			if lo+chunk > gnttab.PageSize {
				chunk = gnttab.PageSize - lo
			}
			remote := hypercall.GrantCopySide{RefOrFrame: uint64(op.Ref), Dom: uint16(op.Remote), Offset: uint16(op.Offset + done)}
			self := hypercall.GrantCopySide{RefOrFrame: uint64(frameOf(local)), Dom: uint16(domid.Self), Offset: uint16(lo)}
			c := hypercall.GrantCopy{Len: uint16(chunk)}
			if op.ToRemote {
				copy(local[:chunk], op.Local[done:])
				c.Source, c.Dest, c.Flags = self, remote, hypercall.GNTCOPYDestGref
			} else {
				c.Source, c.Dest, c.Flags = remote, self, hypercall.GNTCOPYSourceGref
			}
			hops = append(hops, c)
			owner = append(owner, oi)
			done += chunk
		}
		pos += n
	}
	if err := hypercall.GrantCopies(hops); err != nil {
		return fmt.Errorf("gntxen: copy: %w", err)
	}
	for i := range hops {
		if st := hops[i].Status; st != 0 {
			op := ops[owner[i]]
			what := fmt.Sprintf("copy from ref %d of dom %d", op.Ref, op.Remote)
			if op.ToRemote {
				what = fmt.Sprintf("copy to ref %d of dom %d", op.Ref, op.Remote)
				if ReadOnlyRefusal(hypercall.GrantStatus(st), func() bool { return readable(op.Remote, op.Ref) }) {
					return readOnlyErr(what, st)
				}
			}
			return statusErr(what, st)
		}
	}
	pos = 0
	for _, op := range ops {
		if !op.ToRemote {
			copy(op.Local, bounce[pos:pos+len(op.Local)])
		}
		pos += len(op.Local)
	}
	return nil
}

// CopyTo copies src into the page ref granted by remote, at offset.
func (g *Grants) CopyTo(remote domid.ID, ref gnttab.Ref, offset int, src []byte) error {
	if err := CheckCopy(offset, len(src)); err != nil || len(src) == 0 {
		return err
	}
	return g.Copy([]CopyOp{{Remote: remote, Ref: ref, Offset: offset, Local: src, ToRemote: true}})
}

// CopyFrom copies from the page ref granted by remote, at offset, into dst.
func (g *Grants) CopyFrom(remote domid.ID, ref gnttab.Ref, offset int, dst []byte) error {
	if err := CheckCopy(offset, len(dst)); err != nil || len(dst) == 0 {
		return err
	}
	return g.Copy([]CopyOp{{Remote: remote, Ref: ref, Offset: offset, Local: dst}})
}

// Stats returns the live grant objects, for leak checks (shares and
// mappings lost by a resume count until Unshare and Unmap release them).
func (g *Grants) Stats() gnttab.Stats {
	return gnttab.Stats{Grants: g.refs.Used(), Shares: int(g.nShares.Load()), Mappings: int(g.nMaps.Load())}
}

// Frames returns how many grant-table frames are mapped.
func (g *Grants) Frames() uint32 { return g.frames.Load() }

// ErrNotReady means the domain's grant service was not set up.
var ErrNotReady = errors.New("gntxen: grant table not set up")
