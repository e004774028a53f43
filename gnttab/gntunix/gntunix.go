//go:build !tamago

// Package gntunix implements [gnttab.SharedMemory] between Linux processes,
// without Xen: each process plays one domain, and its grantable pages live
// in a shared-memory file that peers map with mmap(2) MAP_SHARED.
//
// # Grant files
//
// The domains of one "machine" share a rendezvous directory (it may be the
// one package evtchn/evunix uses). Domain id owns the file
//
//	<dir>/gnttab.<id>.mem
//
// (id in decimal), created by [Open] and held with an exclusive flock(2)
// while the domain lives, so that a stale file of a dead process can be told
// from a live one. The file is sparse: hdrPages header pages, then npages
// data pages. A grant reference is the index of a data page: ref r is the
// PageSize bytes at file offset (hdrPages+r)*PageSize.
//
// The header, all fields little-endian:
//
//	offset size field
//	0      4    magic 0x746e4747 ("GGnt")
//	4      4    version, 1
//	8      4    owner domain id
//	12     4    npages: data pages, that is grant entries
//	16     4    hdrPages = ceil((64 + 8*npages) / PageSize)
//	20     44   reserved, 0
//	64     8*npages  grant entries, one 64-bit word per ref
//
// A grant entry is updated only with 64-bit atomic operations (both
// processes map the header), so that granting, mapping and revoking are
// race-free across processes:
//
//	bits 0-15   the domain the page is granted to
//	bit  16     granted
//	bit  17     writable
//	bit  18     revoking: the granter is in the middle of Unshare
//	bits 32-63  map count: live mappings (and copies in progress)
//
// The granter publishes an entry after zeroing its page. A mapper (Map,
// CopyTo, CopyFrom) increments the map count with a compare-and-swap that
// also checks granted, the grantee and writable, and decrements it when
// done. Unshare first sets revoking on each page with a compare-and-swap
// that requires a zero map count, undoing them all if one page is mapped
// (ErrInUse), then clears the entries; a mapper that meets revoking spins
// briefly until the granter has decided. A map count left by a grantee
// that died (killed while mapping) would block Unshare forever, so a
// non-zero count is ignored when the grantee's grant file is gone or no
// longer locked: the mappings died with the process, as Xen releases a
// dead domain's mappings.
//
// # Trust
//
// The peer's header is untrusted: its magic, version, owner, sizes and the
// file's length are checked before use, refs are bounds-checked, and a
// fault on a peer's header (a peer that truncated its file) is recovered
// into an error (runtime/debug.SetPanicOnFault). Without a hypervisor,
// protection is cooperative: a peer can open the files, so it can rewrite
// its entries or truncate the pages we mapped (a later access to a
// Mapping's or Share's Buf would then fault); identity and isolation are
// only as strong as the permissions of the rendezvous directory. A read-only
// grant is mapped without PROT_WRITE, so it really is read-only.
package gntunix

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	sys "golang.org/x/sys/unix"

	"github.com/gozen-dev/gozen/domid"
	"github.com/gozen-dev/gozen/gnttab"
)

// DefaultPages is the grant-table size used when Open is given 0 pages.
const DefaultPages = 1024

// MaxPages bounds a grant table (4 GiB of sparse file).
const MaxPages = 1 << 20

// Header layout.
const (
	hdrMagic   = 0x746e4747
	hdrVersion = 1
	hdrFixed   = 64 // bytes before the entries
)

// Entry bits.
const (
	entryRemote   = 0xffff
	entryGranted  = 1 << 16
	entryWritable = 1 << 17
	entryRevoking = 1 << 18
	entryMapShift = 32
	entryMapOne   = 1 << entryMapShift
)

// revokeSpins bounds how often a mapper retries an entry being revoked.
const revokeSpins = 10000

// GrantPath returns the grant file of domain id in the rendezvous directory.
func GrantPath(dir string, id domid.ID) string {
	return filepath.Join(dir, "gnttab."+strconv.Itoa(int(id))+".mem")
}

// hdrPagesFor returns the header size, in pages, of a table of n entries.
func hdrPagesFor(n int) int {
	return (hdrFixed + 8*n + gnttab.PageSize - 1) / gnttab.PageSize
}

// header is a decoded, validated grant-file header.
type header struct {
	owner    domid.ID
	npages   int
	hdrPages int
}

// parseHeader validates the untrusted first hdrFixed bytes of a grant file
// of size bytes.
func parseHeader(b []byte, size int64) (header, error) {
	if len(b) < hdrFixed {
		return header{}, fmt.Errorf("short header (%d bytes)", len(b))
	}
	le := binary.LittleEndian
	if m := le.Uint32(b[0:]); m != hdrMagic {
		return header{}, fmt.Errorf("bad magic %#x", m)
	}
	if v := le.Uint32(b[4:]); v != hdrVersion {
		return header{}, fmt.Errorf("unsupported version %d", v)
	}
	owner := le.Uint32(b[8:])
	if owner > 0xffff || domid.ID(owner) == domid.Self {
		return header{}, fmt.Errorf("bad owner %d", owner)
	}
	n := le.Uint32(b[12:])
	if n == 0 || n > MaxPages {
		return header{}, fmt.Errorf("bad table size %d", n)
	}
	h := header{owner: domid.ID(owner), npages: int(n), hdrPages: int(le.Uint32(b[16:]))}
	if h.hdrPages != hdrPagesFor(h.npages) {
		return header{}, fmt.Errorf("header pages %d, want %d", h.hdrPages, hdrPagesFor(h.npages))
	}
	if need := int64(h.hdrPages+h.npages) * gnttab.PageSize; size < need {
		return header{}, fmt.Errorf("file is %d bytes, header says %d", size, need)
	}
	return h, nil
}

func (h header) encode(b []byte) {
	le := binary.LittleEndian
	le.PutUint32(b[4:], hdrVersion)
	le.PutUint32(b[8:], uint32(h.owner))
	le.PutUint32(b[12:], uint32(h.npages))
	le.PutUint32(b[16:], uint32(h.hdrPages))
	le.PutUint32(b[0:], hdrMagic)
}

// table is a mapped grant file: ours or a peer's.
type table struct {
	f   *os.File
	hdr []byte // the header pages, mapped shared read-write
	header
	dev, ino uint64
	refs     int  // users: mappings and copies in progress (peer tables)
	stale    bool // replaced in the cache by a newer file
}

// entry returns the atomic word of ref, which must be < npages.
func (t *table) entry(ref gnttab.Ref) *uint64 {
	return (*uint64)(unsafe.Pointer(&t.hdr[hdrFixed+8*int(ref)]))
}

// dataOff returns the file offset of ref's page.
func (t *table) dataOff(ref gnttab.Ref) int64 {
	return int64(t.hdrPages+int(ref)) * gnttab.PageSize
}

func (t *table) close() {
	if t.hdr != nil {
		sys.Munmap(t.hdr)
		t.hdr = nil
	}
	t.f.Close()
}

// Domain is one process's grant service. It implements
// [gnttab.SharedMemory]; its methods are safe for concurrent use.
type Domain struct {
	dir  string
	id   domid.ID
	path string
	own  *table

	mu     sync.Mutex
	used   []bool // by ref
	nused  int
	shares map[*gnttab.Share]*share
	maps   map[*mapping]bool
	peers  map[domid.ID]*table
	closed bool
}

var _ gnttab.SharedMemory = (*Domain)(nil)

type share struct {
	region
}

type mapping struct {
	region
	t    *table
	refs []gnttab.Ref
}

// region is an address range holding mapped pages.
type region struct {
	addr unsafe.Pointer
	size uintptr
}

func (r region) bytes() []byte { return unsafe.Slice((*byte)(r.addr), r.size) }

func (r region) unmap() error { return sys.MunmapPtr(r.addr, r.size) }

// mapPages maps the file pages at offs (page-aligned file offsets) into one
// contiguous region, in order.
func mapPages(fd int, offs []int64, prot int) (region, error) {
	size := uintptr(len(offs)) * gnttab.PageSize
	base, err := sys.MmapPtr(-1, 0, nil, size, sys.PROT_NONE, sys.MAP_PRIVATE|sys.MAP_ANONYMOUS|sys.MAP_NORESERVE)
	if err != nil {
		return region{}, fmt.Errorf("reserving %d bytes: %w", size, err)
	}
	r := region{addr: base, size: size}
	for i := 0; i < len(offs); {
		j := i + 1
		for j < len(offs) && offs[j] == offs[j-1]+gnttab.PageSize {
			j++
		}
		at := unsafe.Add(base, i*gnttab.PageSize)
		if _, err := sys.MmapPtr(fd, offs[i], at, uintptr(j-i)*gnttab.PageSize, prot, sys.MAP_SHARED|sys.MAP_FIXED); err != nil {
			r.unmap()
			return region{}, fmt.Errorf("mapping %d pages at file offset %d: %w", j-i, offs[i], err)
		}
		i = j
	}
	return r, nil
}

// Open creates domain id's grant file, with room for pages grants (0 means
// DefaultPages), in the rendezvous directory dir. A stale file of a dead
// domain is replaced; a live domain's is not. Shutdown releases it.
func Open(dir string, id domid.ID, pages int) (*Domain, error) {
	fail := func(err error) (*Domain, error) {
		return nil, fmt.Errorf("gntunix: open domain %d: %w", id, err)
	}
	if id == domid.Self {
		return fail(fmt.Errorf("domid.Self is not a domain id: %w", gnttab.ErrBadRef))
	}
	if pages == 0 {
		pages = DefaultPages
	}
	if pages < 0 || pages > MaxPages {
		return fail(fmt.Errorf("%d pages: %w", pages, gnttab.ErrBounds))
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return fail(err)
	}
	path := GrantPath(abs, id)
	f, err := create(path)
	if err != nil {
		return fail(err)
	}
	h := header{owner: id, npages: pages, hdrPages: hdrPagesFor(pages)}
	if err := f.Truncate(int64(h.hdrPages+h.npages) * gnttab.PageSize); err != nil {
		f.Close()
		os.Remove(path)
		return fail(err)
	}
	hdr, err := sys.Mmap(int(f.Fd()), 0, h.hdrPages*gnttab.PageSize, sys.PROT_READ|sys.PROT_WRITE, sys.MAP_SHARED)
	if err != nil {
		f.Close()
		os.Remove(path)
		return fail(fmt.Errorf("mapping header: %w", err))
	}
	h.encode(hdr)
	return &Domain{
		dir:    abs,
		id:     id,
		path:   path,
		own:    &table{f: f, hdr: hdr, header: h},
		used:   make([]bool, pages),
		shares: make(map[*gnttab.Share]*share),
		maps:   make(map[*mapping]bool),
		peers:  make(map[domid.ID]*table),
	}, nil
}

// create creates path exclusively and locks it, replacing a stale file.
func create(path string) (*os.File, error) {
	for attempt := 0; ; attempt++ {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		if err == nil {
			if err := sys.Flock(int(f.Fd()), sys.LOCK_EX|sys.LOCK_NB); err != nil {
				f.Close()
				return nil, fmt.Errorf("locking %s: %w", path, err)
			}
			return f, nil
		}
		if !errors.Is(err, os.ErrExist) || attempt > 0 {
			return nil, err
		}
		old, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		err = sys.Flock(int(old.Fd()), sys.LOCK_EX|sys.LOCK_NB)
		old.Close()
		if err != nil {
			return nil, fmt.Errorf("%s is held by a live domain: %w", path, err)
		}
		// Stale. Unlink, never truncate: peers may still map the old inode.
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("removing stale %s: %w", path, err)
		}
	}
}

// ID returns the domain's id.
func (d *Domain) ID() domid.ID { return d.id }

// Stats returns the resources held by the domain.
func (d *Domain) Stats() gnttab.Stats {
	d.mu.Lock()
	defer d.mu.Unlock()
	return gnttab.Stats{Grants: d.nused, Shares: len(d.shares), Mappings: len(d.maps)}
}

// Shutdown unmaps every mapping, unmaps every share without waiting for
// peers (they keep the pages they mapped), removes the grant file and
// releases the domain.
func (d *Domain) Shutdown() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return fmt.Errorf("gntunix: shut down domain %d: already shut down: %w", d.id, gnttab.ErrBadRef)
	}
	d.closed = true
	for m := range d.maps {
		m.unmap()
		for _, r := range m.refs {
			unpin(m.t, r)
		}
		d.release(m.t)
	}
	d.maps = nil
	for s, sh := range d.shares {
		sh.unmap()
		s.Buf = nil
	}
	d.shares = nil
	for _, t := range d.peers {
		t.stale = true
		if t.refs == 0 {
			t.close()
		}
	}
	d.peers = nil
	os.Remove(d.path)
	d.own.close()
	return nil
}

func (d *Domain) resolve(id domid.ID) domid.ID {
	if id == domid.Self {
		return d.id
	}
	return id
}

// guard turns a fault on mapped peer memory into a panic that catch
// recovers. Use as: defer guard()() in a function with a named error result
// that also defers catch.
func guard() func() {
	old := debug.SetPanicOnFault(true)
	return func() { debug.SetPanicOnFault(old) }
}

// catch recovers a memory fault into *err.
func catch(err *error) {
	if r := recover(); r != nil {
		re, ok := r.(runtime.Error)
		if !ok || !strings.Contains(re.Error(), "fault") {
			panic(r)
		}
		*err = fmt.Errorf("gntunix: fault on shared memory (peer truncated its file?): %v: %w", re, gnttab.ErrBadRef)
	}
}

// Share grants pages fresh zeroed pages of our grant file to remote.
func (d *Domain) Share(remote domid.ID, pages int, writable bool) (_ *gnttab.Share, err error) {
	remote = d.resolve(remote)
	fail := func(err error) (*gnttab.Share, error) {
		return nil, fmt.Errorf("gntunix: domain %d: share %d pages with domain %d: %w", d.id, pages, remote, err)
	}
	if pages <= 0 || pages > MaxPages {
		return fail(gnttab.ErrBounds)
	}
	defer catch(&err)
	defer guard()()
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return fail(fmt.Errorf("domain shut down: %w", gnttab.ErrNoSpace))
	}
	if len(d.used)-d.nused < pages {
		return fail(fmt.Errorf("%d of %d grants in use: %w", d.nused, len(d.used), gnttab.ErrNoSpace))
	}
	refs := make([]gnttab.Ref, 0, pages)
	offs := make([]int64, 0, pages)
	for r := 0; len(refs) < pages; r++ {
		if !d.used[r] {
			refs = append(refs, gnttab.Ref(r))
			offs = append(offs, d.own.dataOff(gnttab.Ref(r)))
		}
	}
	reg, err := mapPages(int(d.own.f.Fd()), offs, sys.PROT_READ|sys.PROT_WRITE)
	if err != nil {
		return fail(err)
	}
	buf := reg.bytes()
	clear(buf)
	w := uint64(remote) | entryGranted
	if writable {
		w |= entryWritable
	}
	for _, r := range refs {
		d.used[r] = true
		atomic.StoreUint64(d.own.entry(r), w)
	}
	d.nused += pages
	s := &gnttab.Share{Remote: remote, Refs: refs, Buf: buf}
	d.shares[s] = &share{reg}
	return s, nil
}

// Unshare revokes the grants of s; it fails with ErrInUse, changing
// nothing, if a page is still mapped by a live domain. Map counts left by
// a grantee whose process died (its grant file gone or unlocked) are
// dropped, as Xen releases a dead domain's mappings.
func (d *Domain) Unshare(s *gnttab.Share) (err error) {
	defer catch(&err)
	defer guard()()
	d.mu.Lock()
	defer d.mu.Unlock()
	sh := d.shares[s]
	if s == nil || sh == nil {
		return fmt.Errorf("gntunix: domain %d: unshare: not a live share of this domain: %w", d.id, gnttab.ErrBadRef)
	}
	dead := -1 // unknown yet; 1 if the grantee's process is gone
	for i, r := range s.Refs {
		e := d.own.entry(r)
		for {
			w := atomic.LoadUint64(e)
			if n := w >> entryMapShift; n != 0 && dead < 0 {
				dead = 0
				if d.peerDead(s.Remote) {
					dead = 1
				}
			}
			if n := w >> entryMapShift; n != 0 && dead == 0 {
				for _, r := range s.Refs[:i] {
					e := d.own.entry(r)
					for {
						w := atomic.LoadUint64(e)
						if atomic.CompareAndSwapUint64(e, w, w&^entryRevoking) {
							break
						}
					}
				}
				return fmt.Errorf("gntunix: domain %d: unshare ref %d: mapped %d times by domain %d: %w",
					d.id, r, n, s.Remote, gnttab.ErrInUse)
			}
			if atomic.CompareAndSwapUint64(e, w, w|entryRevoking) {
				break
			}
		}
	}
	for _, r := range s.Refs {
		atomic.StoreUint64(d.own.entry(r), 0)
		d.used[r] = false
	}
	d.nused -= len(s.Refs)
	sh.unmap()
	delete(d.shares, s)
	s.Buf = nil
	return nil
}

// peerDead reports whether no live process plays domain id: its grant
// file is gone or no longer locked (the lock dies with its process, and
// so do the process's mappings and copies, whose map counts it left
// behind).
func (d *Domain) peerDead(id domid.ID) bool {
	if id == d.id {
		return false
	}
	f, err := os.Open(GrantPath(d.dir, id))
	if errors.Is(err, os.ErrNotExist) {
		return true
	}
	if err != nil {
		return false
	}
	defer f.Close()
	if sys.Flock(int(f.Fd()), sys.LOCK_EX|sys.LOCK_NB) != nil {
		return false // held by a live domain
	}
	sys.Flock(int(f.Fd()), sys.LOCK_UN)
	return true
}

// peer returns the table of domain id, opening and validating its grant
// file if needed, and takes a reference on it.
func (d *Domain) peer(id domid.ID) (*table, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil, fmt.Errorf("domain %d shut down: %w", d.id, gnttab.ErrBadRef)
	}
	path := GrantPath(d.dir, id)
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return nil, fmt.Errorf("no grant file for domain %d: %w: %w", id, gnttab.ErrBadRef, err)
	}
	if t := d.peers[id]; t != nil {
		if t.dev == st.Dev && t.ino == st.Ino {
			t.refs++
			return t, nil
		}
		delete(d.peers, id) // the domain restarted
		t.stale = true
		if t.refs == 0 {
			t.close()
		}
	}
	t, err := openPeer(path, id)
	if err != nil {
		return nil, fmt.Errorf("grant file of domain %d: %w: %w", id, gnttab.ErrBadRef, err)
	}
	d.peers[id] = t
	t.refs++
	return t, nil
}

func openPeer(path string, id domid.ID) (*table, error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(int(f.Fd()), &st); err != nil {
		f.Close()
		return nil, err
	}
	b := make([]byte, hdrFixed)
	if _, err := f.ReadAt(b, 0); err != nil {
		f.Close()
		return nil, fmt.Errorf("reading header: %w", err)
	}
	h, err := parseHeader(b, st.Size)
	if err != nil {
		f.Close()
		return nil, err
	}
	if h.owner != id {
		f.Close()
		return nil, fmt.Errorf("file owned by domain %d", h.owner)
	}
	hdr, err := sys.Mmap(int(f.Fd()), 0, h.hdrPages*gnttab.PageSize, sys.PROT_READ|sys.PROT_WRITE, sys.MAP_SHARED)
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("mapping header: %w", err)
	}
	return &table{f: f, hdr: hdr, header: h, dev: st.Dev, ino: st.Ino}, nil
}

// release drops a reference taken by peer; d.mu is held.
func (d *Domain) release(t *table) {
	t.refs--
	if t.refs == 0 && t.stale {
		t.close()
	}
}

func (d *Domain) releaseLocking(t *table) {
	d.mu.Lock()
	d.release(t)
	d.mu.Unlock()
}

// pin checks that ref of t is granted to self (and writable if asked) and
// increments its map count.
func pin(t *table, self domid.ID, ref gnttab.Ref, writable bool) error {
	if uint64(ref) >= uint64(t.npages) {
		return fmt.Errorf("ref %d out of range (%d entries): %w", ref, t.npages, gnttab.ErrBadRef)
	}
	e := t.entry(ref)
	for spins := 0; ; spins++ {
		w := atomic.LoadUint64(e)
		switch {
		case w&entryGranted == 0:
			return fmt.Errorf("ref %d not granted: %w", ref, gnttab.ErrBadRef)
		case domid.ID(w&entryRemote) != self:
			return fmt.Errorf("ref %d granted to another domain: %w", ref, gnttab.ErrBadRef)
		case writable && w&entryWritable == 0:
			return fmt.Errorf("ref %d: %w", ref, gnttab.ErrReadOnly)
		case w>>entryMapShift == 0xffffffff:
			return fmt.Errorf("ref %d mapped too often: %w", ref, gnttab.ErrNoSpace)
		case w&entryRevoking != 0:
			if spins >= revokeSpins {
				return fmt.Errorf("ref %d being revoked: %w", ref, gnttab.ErrBadRef)
			}
			runtime.Gosched()
			continue
		}
		if atomic.CompareAndSwapUint64(e, w, w+entryMapOne) {
			return nil
		}
	}
}

// unpin decrements ref's map count, never below zero.
func unpin(t *table, ref gnttab.Ref) {
	e := t.entry(ref)
	for {
		w := atomic.LoadUint64(e)
		if w>>entryMapShift == 0 || atomic.CompareAndSwapUint64(e, w, w-entryMapOne) {
			return
		}
	}
}

// Map maps the pages refs granted by remote, in order, into one buffer.
func (d *Domain) Map(remote domid.ID, refs []gnttab.Ref, writable bool) (_ *gnttab.Mapping, err error) {
	remote = d.resolve(remote)
	fail := func(err error) (*gnttab.Mapping, error) {
		return nil, fmt.Errorf("gntunix: domain %d: map %d refs of domain %d: %w", d.id, len(refs), remote, err)
	}
	if len(refs) == 0 || len(refs) > MaxPages {
		return fail(gnttab.ErrBounds)
	}
	defer catch(&err)
	defer guard()()
	t, err := d.peer(remote)
	if err != nil {
		return fail(err)
	}
	offs := make([]int64, len(refs))
	for i, r := range refs {
		if err := pin(t, d.id, r, writable); err != nil {
			for _, r := range refs[:i] {
				unpin(t, r)
			}
			d.releaseLocking(t)
			return fail(err)
		}
		offs[i] = t.dataOff(r)
	}
	prot := sys.PROT_READ
	if writable {
		prot |= sys.PROT_WRITE
	}
	reg, err := mapPages(int(t.f.Fd()), offs, prot)
	if err != nil {
		for _, r := range refs {
			unpin(t, r)
		}
		d.releaseLocking(t)
		return fail(err)
	}
	m := &mapping{region: reg, t: t, refs: append([]gnttab.Ref(nil), refs...)}
	d.mu.Lock()
	d.maps[m] = true
	d.mu.Unlock()
	return &gnttab.Mapping{Remote: remote, Refs: append([]gnttab.Ref(nil), refs...), Buf: reg.bytes(), Handle: m}, nil
}

// Unmap undoes Map.
func (d *Domain) Unmap(gm *gnttab.Mapping) (err error) {
	if gm == nil {
		return fmt.Errorf("gntunix: domain %d: unmap nil mapping: %w", d.id, gnttab.ErrBadRef)
	}
	m, _ := gm.Handle.(*mapping)
	defer catch(&err)
	defer guard()()
	d.mu.Lock()
	defer d.mu.Unlock()
	if m == nil || !d.maps[m] {
		return fmt.Errorf("gntunix: domain %d: unmap refs %v: not a live mapping of this domain: %w", d.id, gm.Refs, gnttab.ErrBadRef)
	}
	delete(d.maps, m)
	gm.Buf = nil
	uerr := m.unmap()
	for _, r := range m.refs {
		unpin(m.t, r)
	}
	d.release(m.t)
	if uerr != nil {
		return fmt.Errorf("gntunix: domain %d: unmap refs %v: %w", d.id, gm.Refs, uerr)
	}
	return nil
}

func checkBounds(offset, n int) error {
	if offset < 0 || offset > gnttab.PageSize || n > gnttab.PageSize-offset {
		return fmt.Errorf("offset %d length %d: %w", offset, n, gnttab.ErrBounds)
	}
	return nil
}

// copyPage pins ref of remote for the duration of a pread or pwrite.
func (d *Domain) copyPage(op string, remote domid.ID, ref gnttab.Ref, offset int, buf []byte, write bool) (err error) {
	remote = d.resolve(remote)
	wrap := func(err error) error {
		return fmt.Errorf("gntunix: domain %d: %s ref %d of domain %d: %w", d.id, op, ref, remote, err)
	}
	if err := checkBounds(offset, len(buf)); err != nil {
		return wrap(err)
	}
	defer catch(&err)
	defer guard()()
	t, err := d.peer(remote)
	if err != nil {
		return wrap(err)
	}
	defer d.releaseLocking(t)
	if err := pin(t, d.id, ref, write); err != nil {
		return wrap(err)
	}
	defer unpin(t, ref)
	off := t.dataOff(ref) + int64(offset)
	if write {
		_, err = t.f.WriteAt(buf, off)
	} else {
		_, err = t.f.ReadAt(buf, off)
	}
	if err != nil {
		return wrap(err)
	}
	return nil
}

// CopyTo copies src into page ref granted by remote, at offset.
func (d *Domain) CopyTo(remote domid.ID, ref gnttab.Ref, offset int, src []byte) error {
	return d.copyPage("copy to", remote, ref, offset, src, true)
}

// CopyFrom copies from page ref granted by remote, at offset, into dst.
func (d *Domain) CopyFrom(remote domid.ID, ref gnttab.Ref, offset int, dst []byte) error {
	return d.copyPage("copy from", remote, ref, offset, dst, false)
}
