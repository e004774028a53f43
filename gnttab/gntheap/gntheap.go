// Package gntheap implements [gnttab.SharedMemory] between goroutines of one
// process, for tests and for running drivers without Xen.
//
// A [Hub] plays the hypervisor: it owns the grant table of every domain and
// hands out per-domain views with [Hub.Domain]. Sharing really shares
// memory: Map returns a slice of the very buffer the granter got from Share,
// so stores on one side are seen on the other.
//
// Grant references are indices into the granting domain's table, from 0 to
// [MaxGrants]-1; the lowest free index is used first. Every operation checks
// that the ref is in range, granted, granted to the caller, and writable if
// asked for; violations are wrapped errors, never panics.
//
// Limits of the in-heap model:
//   - a read-only grant cannot be enforced for mappings (Go has no
//     read-only slices): Map refuses a writable mapping of it, and CopyTo
//     refuses to write it, but the slice returned by a read-only Map is
//     writable in fact;
//   - Map of several refs needs them to be consecutive pages of one Share,
//     in order (as a driver maps a multi-page ring), since a []byte cannot
//     be assembled from scattered pages; otherwise it fails with
//     [ErrNotContiguous]. One ref can always be mapped.
package gntheap

import (
	"errors"
	"fmt"
	"sync"

	"github.com/gozen-dev/gozen/domid"
	"github.com/gozen-dev/gozen/gnttab"
)

// MaxGrants is the size of each domain's grant table.
const MaxGrants = 16384

// ErrNotContiguous means Map was given several refs that are not consecutive
// pages of one Share, which the in-heap model cannot map as one buffer.
var ErrNotContiguous = errors.New("gntheap: refs are not consecutive pages of one share")

// Hub is the in-heap "hypervisor": the grant tables of all its domains.
// The zero value is not usable; call NewHub.
type Hub struct {
	mu   sync.Mutex
	doms map[domid.ID]*Domain
}

// NewHub returns a hub with no domains.
func NewHub() *Hub {
	return &Hub{doms: make(map[domid.ID]*Domain)}
}

// Domain returns the view of domain id, creating the domain on first use.
// It fails for domid.Self, which is not a domain id.
func (h *Hub) Domain(id domid.ID) (*Domain, error) {
	if id == domid.Self {
		return nil, fmt.Errorf("gntheap: domain %#x: domid.Self is not a domain id: %w", id, gnttab.ErrBadRef)
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	d := h.doms[id]
	if d == nil {
		d = &Domain{
			hub:    h,
			id:     id,
			shares: make(map[*gnttab.Share]*share),
			maps:   make(map[*mapping]bool),
		}
		h.doms[id] = d
	}
	return d, nil
}

// Stats returns the resources held by all the hub's domains.
func (h *Hub) Stats() gnttab.Stats {
	h.mu.Lock()
	defer h.mu.Unlock()
	var s gnttab.Stats
	for _, d := range h.doms {
		ds := d.statsLocked()
		s.Grants += ds.Grants
		s.Shares += ds.Shares
		s.Mappings += ds.Mappings
	}
	return s
}

// Domain is one domain's grant service. It implements
// [gnttab.SharedMemory]; its methods are safe for concurrent use.
type Domain struct {
	hub     *Hub
	id      domid.ID
	entries []*entry // indexed by ref; nil means free
	ngrants int
	shares  map[*gnttab.Share]*share
	maps    map[*mapping]bool
}

var _ gnttab.SharedMemory = (*Domain)(nil)

type entry struct {
	remote   domid.ID
	writable bool
	page     []byte // PageSize bytes of the share's buffer
	maps     int    // live mappings of this page
	sh       *share
	index    int // page index within sh
}

type share struct {
	entries []*entry
	buf     []byte
}

type mapping struct {
	entries []*entry
}

// ID returns the domain's id.
func (d *Domain) ID() domid.ID { return d.id }

// Stats returns the resources held by this domain.
func (d *Domain) Stats() gnttab.Stats {
	d.hub.mu.Lock()
	defer d.hub.mu.Unlock()
	return d.statsLocked()
}

func (d *Domain) statsLocked() gnttab.Stats {
	return gnttab.Stats{Grants: d.ngrants, Shares: len(d.shares), Mappings: len(d.maps)}
}

func (d *Domain) resolve(id domid.ID) domid.ID {
	if id == domid.Self {
		return d.id
	}
	return id
}

// Share grants pages fresh zeroed pages to remote.
func (d *Domain) Share(remote domid.ID, pages int, writable bool) (*gnttab.Share, error) {
	remote = d.resolve(remote)
	if pages <= 0 || pages > MaxGrants {
		return nil, fmt.Errorf("gntheap: domain %d: share %d pages: %w", d.id, pages, gnttab.ErrBounds)
	}
	d.hub.mu.Lock()
	defer d.hub.mu.Unlock()
	if MaxGrants-d.ngrants < pages {
		return nil, fmt.Errorf("gntheap: domain %d: share %d pages, %d grants in use: %w", d.id, pages, d.ngrants, gnttab.ErrNoSpace)
	}
	buf := make([]byte, pages*gnttab.PageSize)
	sh := &share{buf: buf}
	s := &gnttab.Share{Remote: remote, Refs: make([]gnttab.Ref, 0, pages), Buf: buf}
	next := 0
	for i := range pages {
		for next < len(d.entries) && d.entries[next] != nil {
			next++
		}
		if next == len(d.entries) {
			d.entries = append(d.entries, nil)
		}
		off := i * gnttab.PageSize
		e := &entry{
			remote:   remote,
			writable: writable,
			page:     buf[off : off+gnttab.PageSize : off+gnttab.PageSize],
			sh:       sh,
			index:    i,
		}
		d.entries[next] = e
		sh.entries = append(sh.entries, e)
		s.Refs = append(s.Refs, gnttab.Ref(next))
	}
	d.ngrants += pages
	d.shares[s] = sh
	return s, nil
}

// Unshare revokes the grants of s; it fails with ErrInUse if any page is
// still mapped.
func (d *Domain) Unshare(s *gnttab.Share) error {
	d.hub.mu.Lock()
	defer d.hub.mu.Unlock()
	sh := d.shares[s]
	if s == nil || sh == nil {
		return fmt.Errorf("gntheap: domain %d: unshare: not a live share of this domain: %w", d.id, gnttab.ErrBadRef)
	}
	for i, e := range sh.entries {
		if e.maps > 0 {
			return fmt.Errorf("gntheap: domain %d: unshare ref %d: mapped %d times by domain %d: %w",
				d.id, s.Refs[i], e.maps, e.remote, gnttab.ErrInUse)
		}
	}
	for _, r := range s.Refs {
		d.entries[r] = nil
	}
	d.ngrants -= len(sh.entries)
	delete(d.shares, s)
	s.Buf = nil
	return nil
}

// lookup returns the entry ref of domain remote granted to d, checking
// writability; the hub lock is held.
func (d *Domain) lookup(op string, remote domid.ID, ref gnttab.Ref, writable bool) (*entry, error) {
	rd := d.hub.doms[remote]
	if rd == nil {
		return nil, fmt.Errorf("gntheap: domain %d: %s ref %d of domain %d: no such domain: %w", d.id, op, ref, remote, gnttab.ErrBadRef)
	}
	if uint64(ref) >= uint64(len(rd.entries)) || rd.entries[ref] == nil {
		return nil, fmt.Errorf("gntheap: domain %d: %s ref %d of domain %d: not granted: %w", d.id, op, ref, remote, gnttab.ErrBadRef)
	}
	e := rd.entries[ref]
	if e.remote != d.id {
		return nil, fmt.Errorf("gntheap: domain %d: %s ref %d of domain %d: granted to another domain: %w", d.id, op, ref, remote, gnttab.ErrBadRef)
	}
	if writable && !e.writable {
		return nil, fmt.Errorf("gntheap: domain %d: %s ref %d of domain %d: %w", d.id, op, ref, remote, gnttab.ErrReadOnly)
	}
	return e, nil
}

// Map maps refs granted by remote. Several refs must be consecutive pages
// of one Share (see the package documentation).
func (d *Domain) Map(remote domid.ID, refs []gnttab.Ref, writable bool) (*gnttab.Mapping, error) {
	remote = d.resolve(remote)
	if len(refs) == 0 || len(refs) > MaxGrants {
		return nil, fmt.Errorf("gntheap: domain %d: map %d refs: %w", d.id, len(refs), gnttab.ErrBounds)
	}
	d.hub.mu.Lock()
	defer d.hub.mu.Unlock()
	es := make([]*entry, len(refs))
	for i, r := range refs {
		e, err := d.lookup("map", remote, r, writable)
		if err != nil {
			return nil, err
		}
		if i > 0 && (e.sh != es[0].sh || e.index != es[0].index+i) {
			return nil, fmt.Errorf("gntheap: domain %d: map refs %v of domain %d: %w", d.id, refs, remote, ErrNotContiguous)
		}
		es[i] = e
	}
	for _, e := range es {
		e.maps++
	}
	h := &mapping{entries: es}
	d.maps[h] = true
	lo := es[0].index * gnttab.PageSize
	hi := lo + len(es)*gnttab.PageSize
	return &gnttab.Mapping{
		Remote: remote,
		Refs:   append([]gnttab.Ref(nil), refs...),
		Buf:    es[0].sh.buf[lo:hi:hi],
		Handle: h,
	}, nil
}

// Unmap undoes Map.
func (d *Domain) Unmap(m *gnttab.Mapping) error {
	if m == nil {
		return fmt.Errorf("gntheap: domain %d: unmap nil mapping: %w", d.id, gnttab.ErrBadRef)
	}
	h, _ := m.Handle.(*mapping)
	d.hub.mu.Lock()
	defer d.hub.mu.Unlock()
	if h == nil || !d.maps[h] {
		return fmt.Errorf("gntheap: domain %d: unmap refs %v: not a live mapping of this domain: %w", d.id, m.Refs, gnttab.ErrBadRef)
	}
	for _, e := range h.entries {
		e.maps--
	}
	delete(d.maps, h)
	m.Buf = nil
	return nil
}

func checkBounds(offset, n int) error {
	if offset < 0 || offset > gnttab.PageSize || n > gnttab.PageSize-offset {
		return fmt.Errorf("offset %d length %d: %w", offset, n, gnttab.ErrBounds)
	}
	return nil
}

// CopyTo copies src into page ref granted by remote, at offset.
func (d *Domain) CopyTo(remote domid.ID, ref gnttab.Ref, offset int, src []byte) error {
	remote = d.resolve(remote)
	if err := checkBounds(offset, len(src)); err != nil {
		return fmt.Errorf("gntheap: domain %d: copy to ref %d of domain %d: %w", d.id, ref, remote, err)
	}
	d.hub.mu.Lock()
	defer d.hub.mu.Unlock()
	e, err := d.lookup("copy to", remote, ref, true)
	if err != nil {
		return err
	}
	copy(e.page[offset:], src)
	return nil
}

// CopyFrom copies from page ref granted by remote, at offset, into dst.
func (d *Domain) CopyFrom(remote domid.ID, ref gnttab.Ref, offset int, dst []byte) error {
	remote = d.resolve(remote)
	if err := checkBounds(offset, len(dst)); err != nil {
		return fmt.Errorf("gntheap: domain %d: copy from ref %d of domain %d: %w", d.id, ref, remote, err)
	}
	d.hub.mu.Lock()
	defer d.hub.mu.Unlock()
	e, err := d.lookup("copy from", remote, ref, false)
	if err != nil {
		return err
	}
	copy(dst, e.page[offset:])
	return nil
}
