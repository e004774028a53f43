// Package gnttab defines the portable shared-memory interface (grant tables)
// that every Gozen driver is written against.
//
// A domain shares whole pages with one remote domain by granting them; the
// remote domain maps the grant references into its own address space, or
// copies to or from them. Implementations live in sub-packages: gntxen (grant
// tables, in the guest), gntheap (one process) and gntunix (two Linux
// processes, pages in shared-memory files).
//
// What a driver may assume of any [SharedMemory]:
//   - Pages are PageSize bytes; a Share's buffer is len(Refs)*PageSize bytes
//     and stays valid until Unshare succeeds.
//   - A Mapping's buffer is coherent with the granter's buffer: stores on one
//     side are visible on the other (use sync/atomic for indices, as for
//     any memory shared between CPUs).
//   - Unshare fails with an error wrapping ErrInUse while the remote side
//     still has the pages mapped; after Unmap it succeeds.
//   - Refs received from a peer are untrusted: mapping or copying a ref that
//     was not granted to us is an error, never a crash.
//   - Methods are safe for concurrent use.
package gnttab

import (
	"errors"
	"fmt"
	"strings"

	"github.com/gozen-dev/gozen/domid"
)

// PageSize is the size of one shared page.
const PageSize = 4096

// Ref is a grant reference: a page's name as the remote domain sees it.
type Ref uint32

// Errors shared by all implementations; test with errors.Is.
var (
	// ErrInUse means the remote domain still has the page mapped.
	ErrInUse = errors.New("gnttab: grant still mapped by the remote domain")
	// ErrBadRef means the ref is out of range, not granted, or not granted
	// to us.
	ErrBadRef = errors.New("gnttab: bad grant reference")
	// ErrReadOnly means a writable mapping or copy was asked of a read-only
	// grant.
	ErrReadOnly = errors.New("gnttab: grant is read-only")
	// ErrNoSpace means the grant table or the mapping window is full.
	ErrNoSpace = errors.New("gnttab: out of grant entries or map space")
	// ErrBounds means an offset, length or page count is out of range, for
	// example a copy that would cross the end of the page.
	ErrBounds = errors.New("gnttab: offset, length or count out of range")
	// ErrResumed means the share or mapping was lost because the domain
	// was resumed as a new domain (restore, migration): its grant table
	// starts empty and its mappings of other domains' pages are gone.
	// Unshare and Unmap of such a share or mapping release what is left
	// locally and return an error wrapping ErrResumed, which a driver
	// tearing down after a resume may ignore.
	ErrResumed = errors.New("gnttab: share or mapping lost by a resume into a new domain")
)

// Share is a set of local pages granted to a remote domain.
type Share struct {
	// Remote is the domain the pages are granted to.
	Remote domid.ID
	// Refs names each page, in order.
	Refs []Ref
	// Buf is the local view of the pages, len(Refs)*PageSize bytes.
	Buf []byte
}

// Mapping is a set of remote pages mapped into the local address space.
type Mapping struct {
	// Remote is the granting domain.
	Remote domid.ID
	// Refs are the grant references that were mapped, in order.
	Refs []Ref
	// Buf is the local view of the pages, len(Refs)*PageSize bytes.
	Buf []byte
	// Handle is implementation data needed to unmap.
	Handle any
}

// SharedMemory is the grant service of one domain.
type SharedMemory interface {
	// Share allocates the given number of zeroed local pages and grants them to remote,
	// read-only unless writable.
	Share(remote domid.ID, pages int, writable bool) (*Share, error)
	// Unshare revokes the grants and frees the pages. It fails with
	// ErrInUse, leaving the share intact, while remote still maps a page.
	Unshare(s *Share) error
	// Map maps the pages refs granted by remote, writable or not.
	Map(remote domid.ID, refs []Ref, writable bool) (*Mapping, error)
	// Unmap undoes Map.
	Unmap(m *Mapping) error
	// CopyTo copies src into the page ref granted by remote, at offset.
	// offset+len(src) must not exceed PageSize, else it fails with
	// ErrBounds; a read-only grant fails with ErrReadOnly.
	CopyTo(remote domid.ID, ref Ref, offset int, src []byte) error
	// CopyFrom copies from the page ref granted by remote, at offset, into
	// dst. offset+len(dst) must not exceed PageSize, else it fails with
	// ErrBounds.
	CopyFrom(remote domid.ID, ref Ref, offset int, dst []byte) error
}

// Stats counts an implementation's live grant objects, so that tests can
// check that nothing leaked.
type Stats struct {
	// Grants counts granted pages (table entries in use).
	Grants int
	// Shares counts live Share results.
	Shares int
	// Mappings counts live Map results (the domain as mapper).
	Mappings int
}

// String describes the non-zero counts, or returns "" if all are zero.
func (s Stats) String() string {
	var parts []string
	if s.Grants != 0 {
		parts = append(parts, fmt.Sprintf("%d grants", s.Grants))
	}
	if s.Shares != 0 {
		parts = append(parts, fmt.Sprintf("%d shares", s.Shares))
	}
	if s.Mappings != 0 {
		parts = append(parts, fmt.Sprintf("%d mappings", s.Mappings))
	}
	return strings.Join(parts, ", ")
}
