//go:build linux

// Package gntlinux implements [gnttab.SharedMemory] in a Linux domain
// (dom0 or a domU) through the kernel's grant devices, so that Gozen's
// drivers run as ordinary Linux programs:
//
//   - Share allocates and grants pages with /dev/xen/gntalloc
//     (IOCTL_GNTALLOC_ALLOC_GREF, GNTALLOC_FLAG_WRITABLE for writable
//     grants) and maps them at the index the kernel returns; Unshare
//     undoes that with IOCTL_GNTALLOC_DEALLOC_GREF and munmap.
//   - Map maps another domain's grants with /dev/xen/gntdev
//     (IOCTL_GNTDEV_MAP_GRANT_REF, then mmap at the returned index,
//     read-only unless writable); Unmap undoes that with munmap and
//     IOCTL_GNTDEV_UNMAP_GRANT_REF.
//   - CopyTo and CopyFrom use IOCTL_GNTDEV_GRANT_COPY (Linux 4.7 or
//     later).
//
// [Grants.NotifyOnUnmap] and [Grants.NotifyOnUnshare] arm the devices'
// unmap notifications (IOCTL_GNTDEV_SET_UNMAP_NOTIFY,
// IOCTL_GNTALLOC_SET_UNMAP_NOTIFY): when this process unmaps the pages,
// or dies, the kernel clears a byte of the page and/or notifies an event
// channel, so that the peer notices a crashed Linux process.
//
// # Unshare while the peer still maps
//
// The gnttab contract wants Unshare to fail with ErrInUse while the remote
// domain maps a page. Linux gives user space no way to ask that: the
// grant entries' in-use flags are visible only to the kernel, and
// IOCTL_GNTALLOC_DEALLOC_GREF reports nothing. What the kernel does
// instead is safe: a deallocated grant still mapped by the peer is not
// revoked but put on a deferred list (gnttab_end_foreign_access), and
// the page is freed only once the peer unmapped it; the peer's mapping
// stays valid meanwhile. So Unshare here never fails with ErrInUse: it
// succeeds, the share's buffer is unmapped locally, and the peer keeps a
// private, still coherent page until it unmaps. A peer may even map the
// refs again until the kernel's deferred revocation (retried about every
// second) caught up. The conformance cases that check ErrInUse
// (gnttab/UnshareWhileMapped, gnttab/ReadOnlyMultiPageUnshareRefused) and
// the race of gnttab/UnshareRace therefore fail with this package as the
// granter; drivers keep to the protocol rule that a front end revokes
// only after its back end disconnected, and do not rely on ErrInUse.
//
// Errors: a ref the kernel cannot map or copy is ErrBadRef, a writable map
// or copy of a grant that maps or copies read-only is ErrReadOnly (found
// by retrying read-only), allocation failures are ErrNoSpace, and counts
// and offsets out of range ErrBounds, checked before any device is used.
package gntlinux

import (
	"errors"
	"fmt"
	"os"
	"runtime"
	"sync"
	"syscall"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/gozen-dev/gozen/domid"
	"github.com/gozen-dev/gozen/evtchn"
	"github.com/gozen-dev/gozen/gnttab"
	"github.com/gozen-dev/gozen/internal/xenioctl"
)

// Device paths.
const (
	AllocPath = "/dev/xen/gntalloc"
	DevPath   = "/dev/xen/gntdev"
)

// MaxPages bounds the pages of one Share or Map.
const MaxPages = 1 << 16

// Grants is the grant service of this Linux domain. It implements
// [gnttab.SharedMemory]; its methods are safe for concurrent use.
type Grants struct {
	alloc, dev *os.File

	mu     sync.Mutex
	shares map[*gnttab.Share]*region
	maps   map[*region]bool
	grants int
	closed bool
}

// region is pages mapped from one of the devices at index.
type region struct {
	index uint64
	pages int
	mem   []byte
}

var _ gnttab.SharedMemory = (*Grants)(nil)

// Open opens AllocPath and DevPath.
func Open() (*Grants, error) { return OpenPaths(AllocPath, DevPath) }

// OpenPaths opens the grant-allocation device at allocPath and the
// grant-mapping device at devPath.
func OpenPaths(allocPath, devPath string) (*Grants, error) {
	a, err := os.OpenFile(allocPath, os.O_RDWR|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("gntlinux: %w", err)
	}
	d, err := os.OpenFile(devPath, os.O_RDWR|syscall.O_CLOEXEC, 0)
	if err != nil {
		a.Close()
		return nil, fmt.Errorf("gntlinux: %w", err)
	}
	return newGrants(a, d), nil
}

func newGrants(alloc, dev *os.File) *Grants {
	return &Grants{alloc: alloc, dev: dev, shares: map[*gnttab.Share]*region{}, maps: map[*region]bool{}}
}

// Stats counts the live shares, their pages and the live mappings.
func (g *Grants) Stats() gnttab.Stats {
	g.mu.Lock()
	defer g.mu.Unlock()
	return gnttab.Stats{Grants: g.grants, Shares: len(g.shares), Mappings: len(g.maps)}
}

// checkCount checks a page count before any device is used.
func checkCount(n int) error {
	if n <= 0 || n > MaxPages {
		return fmt.Errorf("%d pages, want 1 to %d: %w", n, MaxPages, gnttab.ErrBounds)
	}
	return nil
}

// mmapFile maps length bytes of f at offset.
func mmapFile(f *os.File, offset uint64, length int, prot int) ([]byte, error) {
	rc, err := f.SyscallConn()
	if err != nil {
		return nil, err
	}
	var mem []byte
	var merr error
	if err := rc.Control(func(fd uintptr) {
		mem, merr = unix.Mmap(int(fd), int64(offset), length, prot, unix.MAP_SHARED)
	}); err != nil {
		return nil, err
	}
	return mem, merr
}

// noSpace reports whether errno says a table or window is full.
func noSpace(err error) bool {
	return errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.ENOMEM) || errors.Is(err, unix.EMFILE)
}

// Share allocates pages zeroed pages and grants them to remote.
func (g *Grants) Share(remote domid.ID, pages int, writable bool) (*gnttab.Share, error) {
	fail := func(err error) (*gnttab.Share, error) {
		return nil, fmt.Errorf("gntlinux: share %d pages with domain %d: %w", pages, remote, err)
	}
	if err := checkCount(pages); err != nil {
		return fail(err)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return fail(errors.New("service shut down"))
	}
	arg := allocArg(uint16(remote), writable, pages)
	if _, err := xenioctl.Ioctl(g.alloc, ioctlAllocGref, unsafe.Pointer(&arg[0])); err != nil {
		if noSpace(err) {
			return fail(fmt.Errorf("%w (%w)", gnttab.ErrNoSpace, err))
		}
		return fail(err)
	}
	index, refs := allocResult(arg, pages)
	mem, err := mmapFile(g.alloc, index, pages*gnttab.PageSize, unix.PROT_READ|unix.PROT_WRITE)
	if err != nil {
		g.dealloc(index, pages)
		return fail(fmt.Errorf("mapping the granted pages: %w", err))
	}
	s := &gnttab.Share{Remote: remote, Refs: make([]gnttab.Ref, pages), Buf: mem}
	for i, r := range refs {
		s.Refs[i] = gnttab.Ref(r)
	}
	g.shares[s] = &region{index: index, pages: pages, mem: mem}
	g.grants += pages
	return s, nil
}

func (g *Grants) dealloc(index uint64, pages int) error {
	a := &deallocArg{Index: index, Count: uint32(pages)}
	_, err := xenioctl.Ioctl(g.alloc, ioctlDeallocGref, unsafe.Pointer(a))
	return err
}

// Unshare ends the grants of s and unmaps its pages. It never fails with
// ErrInUse (see the package doc): pages the peer still maps are revoked by
// the kernel once the peer unmapped them.
func (g *Grants) Unshare(s *gnttab.Share) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	r := g.shares[s]
	if r == nil {
		return fmt.Errorf("gntlinux: unshare: not a live share of this service: %w", gnttab.ErrBadRef)
	}
	if err := g.dealloc(r.index, r.pages); err != nil {
		return fmt.Errorf("gntlinux: unshare refs %v: %w", s.Refs, err)
	}
	if err := unix.Munmap(r.mem); err != nil {
		// The grants are gone; the mapping leaks until exit.
		err = fmt.Errorf("gntlinux: unshare refs %v: unmapping: %w", s.Refs, err)
		delete(g.shares, s)
		g.grants -= r.pages
		return err
	}
	delete(g.shares, s)
	g.grants -= r.pages
	return nil
}

// mapOnce maps refs of remote through gntdev; on failure nothing stays
// mapped.
func (g *Grants) mapOnce(remote domid.ID, refs []gnttab.Ref, writable bool) (*region, error) {
	rs := make([]uint32, len(refs))
	for i, r := range refs {
		rs[i] = uint32(r)
	}
	arg := mapArg(uint32(remote), rs)
	if _, err := xenioctl.Ioctl(g.dev, ioctlMapGrantRef, unsafe.Pointer(&arg[0])); err != nil {
		if noSpace(err) {
			return nil, fmt.Errorf("%w (%w)", gnttab.ErrNoSpace, err)
		}
		return nil, err
	}
	index := mapIndex(arg)
	prot := unix.PROT_READ
	if writable {
		prot |= unix.PROT_WRITE
	}
	mem, err := mmapFile(g.dev, index, len(refs)*gnttab.PageSize, prot)
	if err != nil {
		g.unmapGrant(index, len(refs))
		if noSpace(err) {
			return nil, fmt.Errorf("%w (%w)", gnttab.ErrNoSpace, err)
		}
		return nil, fmt.Errorf("%w (%w)", gnttab.ErrBadRef, err)
	}
	return &region{index: index, pages: len(refs), mem: mem}, nil
}

func (g *Grants) unmapGrant(index uint64, pages int) error {
	a := &unmapGrantArg{Index: index, Count: uint32(pages)}
	_, err := xenioctl.Ioctl(g.dev, ioctlUnmapGrantRef, unsafe.Pointer(a))
	return err
}

// Map maps the pages refs granted by remote.
func (g *Grants) Map(remote domid.ID, refs []gnttab.Ref, writable bool) (*gnttab.Mapping, error) {
	fail := func(err error) (*gnttab.Mapping, error) {
		return nil, fmt.Errorf("gntlinux: map refs %v of domain %d: %w", refs, remote, err)
	}
	if err := checkCount(len(refs)); err != nil {
		return fail(err)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return fail(errors.New("service shut down"))
	}
	r, err := g.mapOnce(remote, refs, writable)
	if err != nil && writable && errors.Is(err, gnttab.ErrBadRef) {
		// Tell a read-only grant from a bad ref: does it map read-only?
		if ro, rerr := g.mapOnce(remote, refs, false); rerr == nil {
			g.release(ro)
			return fail(fmt.Errorf("%w (a writable mapping failed: %w)", gnttab.ErrReadOnly, err))
		}
	}
	if err != nil {
		return fail(err)
	}
	g.maps[r] = true
	return &gnttab.Mapping{Remote: remote, Refs: append([]gnttab.Ref(nil), refs...), Buf: r.mem, Handle: r}, nil
}

// release unmaps a gntdev region.
func (g *Grants) release(r *region) error {
	if err := unix.Munmap(r.mem); err != nil {
		return fmt.Errorf("munmap: %w", err)
	}
	if err := g.unmapGrant(r.index, r.pages); err != nil {
		return fmt.Errorf("IOCTL_GNTDEV_UNMAP_GRANT_REF: %w", err)
	}
	return nil
}

// Unmap undoes Map.
func (g *Grants) Unmap(m *gnttab.Mapping) error {
	if m == nil {
		return fmt.Errorf("gntlinux: unmap of no mapping: %w", gnttab.ErrBadRef)
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	r, _ := m.Handle.(*region)
	if r == nil || !g.maps[r] {
		return fmt.Errorf("gntlinux: unmap refs %v: not a live mapping of this service: %w", m.Refs, gnttab.ErrBadRef)
	}
	delete(g.maps, r)
	if err := g.release(r); err != nil {
		return fmt.Errorf("gntlinux: unmap refs %v: %w", m.Refs, err)
	}
	return nil
}

// checkCopy checks a copy's offset and length.
func checkCopy(offset, n int) error {
	if offset < 0 || n < 0 || offset > gnttab.PageSize || n > gnttab.PageSize-offset {
		return fmt.Errorf("offset %d, %d bytes: %w", offset, n, gnttab.ErrBounds)
	}
	return nil
}

// grantCopy copies n bytes between local and page ref of remote at
// offset, towards the page if to. It returns the segment's status.
func (g *Grants) grantCopy(remote domid.ID, ref gnttab.Ref, offset int, local []byte, to bool) (int16, error) {
	var pin runtime.Pinner
	defer pin.Unpin()
	seg := &copySegment{Len: uint16(len(local))}
	pin.Pin(seg)
	pin.Pin(&local[0])
	virt := uint64(uintptr(unsafe.Pointer(&local[0])))
	page := foreign(uint32(ref), uint16(offset), uint16(remote))
	if to {
		seg.Source, seg.Dest, seg.Flags = virt, page, gntcopyDestGref
	} else {
		seg.Source, seg.Dest, seg.Flags = page, virt, gntcopySourceGref
	}
	arg := &grantCopyArg{Count: 1, Segments: uintptr(unsafe.Pointer(seg))}
	_, err := xenioctl.IoctlRaw(g.dev, ioctlGrantCopy, unsafe.Pointer(arg)) // never blocks: see internal/xenioctl
	runtime.KeepAlive(local)
	return seg.Status, err
}

// copyErr maps a failed copy to the portable errors.
func copyErr(st int16, err error) error {
	if err != nil {
		return fmt.Errorf("%w (IOCTL_GNTDEV_GRANT_COPY: %w)", gnttab.ErrBadRef, err)
	}
	return fmt.Errorf("%w (%s)", gnttab.ErrBadRef, gntstName(st))
}

// CopyTo copies src into page ref granted by remote, at offset.
func (g *Grants) CopyTo(remote domid.ID, ref gnttab.Ref, offset int, src []byte) error {
	fail := func(err error) error {
		return fmt.Errorf("gntlinux: copy to ref %d of domain %d: %w", ref, remote, err)
	}
	if err := checkCopy(offset, len(src)); err != nil {
		return fail(err)
	}
	if len(src) == 0 {
		// Nothing to write; still reject a ref we may not read.
		if err := g.CopyFrom(remote, ref, 0, make([]byte, 1)); err != nil {
			return fail(err)
		}
		return nil
	}
	st, err := g.grantCopy(remote, ref, offset, src, true)
	if err == nil && st == gntstOkay {
		return nil
	}
	// Tell a read-only grant from a bad ref: can it be read?
	var probe [1]byte
	if pst, perr := g.grantCopy(remote, ref, 0, probe[:], false); perr == nil && pst == gntstOkay {
		return fail(fmt.Errorf("%w (%w)", gnttab.ErrReadOnly, copyErr(st, err)))
	}
	return fail(copyErr(st, err))
}

// CopyFrom copies from page ref granted by remote, at offset, into dst.
func (g *Grants) CopyFrom(remote domid.ID, ref gnttab.Ref, offset int, dst []byte) error {
	fail := func(err error) error {
		return fmt.Errorf("gntlinux: copy from ref %d of domain %d: %w", ref, remote, err)
	}
	if err := checkCopy(offset, len(dst)); err != nil {
		return fail(err)
	}
	buf := dst
	if len(buf) == 0 {
		buf = make([]byte, 1) // check the ref all the same
		offset = 0
	}
	st, err := g.grantCopy(remote, ref, offset, buf, false)
	if err != nil || st != gntstOkay {
		return fail(copyErr(st, err))
	}
	return nil
}

var _ gnttab.BatchCopier = (*Grants)(nil)

// maxBatch bounds the segments of one IOCTL_GNTDEV_GRANT_COPY (the kernel
// walks them 16 at a time; this bounds what is pinned at once).
const maxBatch = 1024

// CopyBatch copies segs with one IOCTL_GNTDEV_GRANT_COPY per maxBatch
// segments. If the kernel fails any segment, the batch is redone one
// segment at a time with CopyTo or CopyFrom, which tell the failure's
// cause (a bad ref, a read-only grant) as they do.
func (g *Grants) CopyBatch(remote domid.ID, segs []gnttab.CopySegment, to bool) error {
	for i, s := range segs {
		if err := checkCopy(s.Offset, len(s.Local)); err != nil {
			return fmt.Errorf("gntlinux: batch copy, segment %d of %d: %w", i, len(segs), err)
		}
	}
	for len(segs) > 0 {
		n := min(len(segs), maxBatch)
		if !g.grantCopyBatch(remote, segs[:n], to) {
			return gnttab.CopyMany(onlySingle{g}, remote, segs[:n], to)
		}
		segs = segs[n:]
	}
	return nil
}

// onlySingle hides CopyBatch, so that CopyMany copies one segment at a
// time.
type onlySingle struct{ gnttab.SharedMemory }

// grantCopyBatch copies segs (checked, at most maxBatch) in one ioctl and
// reports whether every segment succeeded. Empty segments make it report
// false, for the one-at-a-time path to check their refs.
func (g *Grants) grantCopyBatch(remote domid.ID, segs []gnttab.CopySegment, to bool) bool {
	var pin runtime.Pinner
	defer pin.Unpin()
	cs := make([]copySegment, len(segs))
	pin.Pin(&cs[0])
	for i, s := range segs {
		if len(s.Local) == 0 {
			return false
		}
		pin.Pin(&s.Local[0])
		virt := uint64(uintptr(unsafe.Pointer(&s.Local[0])))
		page := foreign(uint32(s.Ref), uint16(s.Offset), uint16(remote))
		cs[i].Len = uint16(len(s.Local))
		if to {
			cs[i].Source, cs[i].Dest, cs[i].Flags = virt, page, gntcopyDestGref
		} else {
			cs[i].Source, cs[i].Dest, cs[i].Flags = page, virt, gntcopySourceGref
		}
	}
	arg := &grantCopyArg{Count: uint32(len(cs)), Segments: uintptr(unsafe.Pointer(&cs[0]))}
	_, err := xenioctl.IoctlRaw(g.dev, ioctlGrantCopy, unsafe.Pointer(arg)) // never blocks: see internal/xenioctl
	runtime.KeepAlive(segs)
	if err != nil {
		return false
	}
	for _, c := range cs {
		if c.Status != gntstOkay {
			return false
		}
	}
	return true
}

// notifyArg builds an unmap notification for the page holding byte
// offset of a region: clear that byte if clear, and notify port if not 0.
func notifyArg(r *region, offset int, clear bool, port evtchn.Port) (*unmapNotifyArg, error) {
	if offset < 0 || offset >= r.pages*gnttab.PageSize {
		return nil, fmt.Errorf("offset %d outside %d pages: %w", offset, r.pages, gnttab.ErrBounds)
	}
	a := &unmapNotifyArg{Index: r.index + uint64(offset), Port: uint32(port)}
	if clear {
		a.Action |= unmapNotifyClearByte
	}
	if port != 0 {
		a.Action |= unmapNotifySendEvent
	}
	return a, nil
}

// NotifyOnUnmap arms the unmap notification of the page holding byte
// offset of m: when m is unmapped, by Unmap or because this process died,
// the kernel zeroes that byte if clear and notifies port (an event
// channel bound through /dev/xen/evtchn, e.g. with package evlinux) if it
// is not 0. A page has one notification; arming it again replaces it, and
// clear false with port 0 disarms it.
func (g *Grants) NotifyOnUnmap(m *gnttab.Mapping, offset int, clear bool, port evtchn.Port) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	r, _ := m.Handle.(*region)
	if r == nil || !g.maps[r] {
		return fmt.Errorf("gntlinux: unmap notification: not a live mapping: %w", gnttab.ErrBadRef)
	}
	a, err := notifyArg(r, offset, clear, port)
	if err != nil {
		return fmt.Errorf("gntlinux: unmap notification: %w", err)
	}
	if _, err := xenioctl.Ioctl(g.dev, ioctlGntdevUnmapNotify, unsafe.Pointer(a)); err != nil {
		return fmt.Errorf("gntlinux: IOCTL_GNTDEV_SET_UNMAP_NOTIFY: %w", err)
	}
	return nil
}

// NotifyOnUnshare is NotifyOnUnmap for a share: when s's pages are
// unmapped here (Unshare, or this process died), the kernel zeroes the
// byte at offset if clear and notifies port if not 0.
func (g *Grants) NotifyOnUnshare(s *gnttab.Share, offset int, clear bool, port evtchn.Port) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	r := g.shares[s]
	if r == nil {
		return fmt.Errorf("gntlinux: unshare notification: not a live share: %w", gnttab.ErrBadRef)
	}
	a, err := notifyArg(r, offset, clear, port)
	if err != nil {
		return fmt.Errorf("gntlinux: unshare notification: %w", err)
	}
	if _, err := xenioctl.Ioctl(g.alloc, ioctlAllocUnmapNotify, unsafe.Pointer(a)); err != nil {
		return fmt.Errorf("gntlinux: IOCTL_GNTALLOC_SET_UNMAP_NOTIFY: %w", err)
	}
	return nil
}

// Shutdown unmaps every mapping, ends every share and closes the devices.
func (g *Grants) Shutdown() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return errors.New("gntlinux: shutdown: already shut down")
	}
	g.closed = true
	var errs []error
	for r := range g.maps {
		if err := g.release(r); err != nil {
			errs = append(errs, err)
		}
		delete(g.maps, r)
	}
	for s, r := range g.shares {
		if err := g.dealloc(r.index, r.pages); err != nil {
			errs = append(errs, err)
		}
		unix.Munmap(r.mem)
		delete(g.shares, s)
		g.grants -= r.pages
	}
	errs = append(errs, g.alloc.Close(), g.dev.Close())
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("gntlinux: shutdown: %w", err)
	}
	return nil
}
