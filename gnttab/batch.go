package gnttab

import (
	"fmt"

	"github.com/gozen-dev/gozen/domid"
)

// CopySegment is one copy of a batch: Local to or from the page Ref at
// Offset. Offset+len(Local) must not exceed PageSize.
type CopySegment struct {
	Ref    Ref
	Offset int
	Local  []byte
}

// BatchCopier is a SharedMemory that can do many grant copies in one
// call, as Xen's GNTTABOP_copy and Linux's IOCTL_GNTDEV_GRANT_COPY take
// many segments: one system call (or hypercall) rather than one per page.
// Use it through [CopyMany], which falls back to CopyTo and CopyFrom.
type BatchCopier interface {
	SharedMemory
	// CopyBatch copies every segment's Local into its page of remote if
	// to, else from its page into Local. It fails, as CopyTo or CopyFrom
	// would have for that segment, if any segment fails; the segments
	// before it may or may not have been copied.
	CopyBatch(remote domid.ID, segs []CopySegment, to bool) error
}

// CopyMany copies segs as [BatchCopier.CopyBatch] does, in one batch if m
// is a BatchCopier, else one CopyTo or CopyFrom per segment.
func CopyMany(m SharedMemory, remote domid.ID, segs []CopySegment, to bool) error {
	if b, ok := m.(BatchCopier); ok {
		return b.CopyBatch(remote, segs, to)
	}
	for i, s := range segs {
		var err error
		if to {
			err = m.CopyTo(remote, s.Ref, s.Offset, s.Local)
		} else {
			err = m.CopyFrom(remote, s.Ref, s.Offset, s.Local)
		}
		if err != nil {
			return fmt.Errorf("gnttab: segment %d of %d: %w", i, len(segs), err)
		}
	}
	return nil
}
