//go:build tamago

package hypercall

import (
	"runtime"
	"unsafe"
)

// grant_table_op sub-operations (GNTTABOP_*).
const (
	gnttabopMapGrantRef   = 0
	gnttabopUnmapGrantRef = 1
	gnttabopCopy          = 5
	gnttabopQuerySize     = 6
)

// GNTMAP flags for MapGrantRef.
const (
	GNTMAPDeviceMap = 1 << 0
	GNTMAPHostMap   = 1 << 1
	GNTMAPReadonly  = 1 << 2
)

// GNTCOPY flags: which side of a GrantCopy names a grant ref.
const (
	GNTCOPYSourceGref = 1 << 0
	GNTCOPYDestGref   = 1 << 1
)

// GrantTableSize queries the calling domain's grant-table size in frames.
func GrantTableSize() (frames, maxFrames uint32, err error) {
	var arg struct {
		dom       uint16
		_         uint16
		nrFrames  uint32
		maxFrames uint32
		status    int16
		_         int16
	}
	arg.dom = selfID
	r := call(opGrantTable, gnttabopQuerySize, ptr(&arg), 1, 0, 0)
	runtime.KeepAlive(&arg)
	if err := Check("grant_table_op(query_size)", r); err != nil {
		return 0, 0, err
	}
	if arg.status != 0 {
		return 0, 0, &GrantError{Op: "grant_table_op(query_size)", Status: GrantStatus(arg.status)}
	}
	return arg.nrFrames, arg.maxFrames, nil
}

// GrantError is a grant-table operation that Xen accepted but whose entry
// failed with a GNTST status.
type GrantError struct {
	Op     string
	Status GrantStatus
}

func (e *GrantError) Error() string { return e.Op + ": " + e.Status.Error() }

// Unwrap returns the status, so errors.Is(err, GNTSTBadGntref) works.
func (e *GrantError) Unwrap() error { return e.Status }

// MapGrantRef is struct gnttab_map_grant_ref.
type MapGrantRef struct {
	HostAddr   uint64
	Flags      uint32
	Ref        uint32
	Dom        uint16
	Status     int16
	Handle     uint32
	DevBusAddr uint64
}

// UnmapGrantRef is struct gnttab_unmap_grant_ref.
type UnmapGrantRef struct {
	HostAddr   uint64
	DevBusAddr uint64
	Handle     uint32
	Status     int16
	_          int16
}

// GrantCopySide is one side of a GrantCopy: a grant ref of Dom, or (with
// Dom = DOMID_SELF) a local frame number.
type GrantCopySide struct {
	RefOrFrame uint64
	Dom        uint16
	Offset     uint16
	_          uint32
}

// GrantCopy is struct gnttab_copy.
type GrantCopy struct {
	Source, Dest GrantCopySide
	Len          uint16
	Flags        uint16
	Status       int16
	_            int16
}

// Compile-time checks of the ABI sizes.
var (
	_ [32 - unsafe.Sizeof(MapGrantRef{})]byte
	_ [24 - unsafe.Sizeof(UnmapGrantRef{})]byte
	_ [40 - unsafe.Sizeof(GrantCopy{})]byte
)

// MapGrantRefs issues a batch of map operations; per-entry results are in
// each entry's Status and Handle.
func MapGrantRefs(ops []MapGrantRef) error {
	if len(ops) == 0 {
		return nil
	}
	r := call(opGrantTable, gnttabopMapGrantRef, ptr(&ops[0]), uintptr(len(ops)), 0, 0)
	runtime.KeepAlive(ops)
	return Check("grant_table_op(map_grant_ref)", r)
}

// UnmapGrantRefs issues a batch of unmap operations.
func UnmapGrantRefs(ops []UnmapGrantRef) error {
	if len(ops) == 0 {
		return nil
	}
	r := call(opGrantTable, gnttabopUnmapGrantRef, ptr(&ops[0]), uintptr(len(ops)), 0, 0)
	runtime.KeepAlive(ops)
	return Check("grant_table_op(unmap_grant_ref)", r)
}

// GrantCopies issues a batch of copy operations.
func GrantCopies(ops []GrantCopy) error {
	if len(ops) == 0 {
		return nil
	}
	r := call(opGrantTable, gnttabopCopy, ptr(&ops[0]), uintptr(len(ops)), 0, 0)
	runtime.KeepAlive(ops)
	return Check("grant_table_op(copy)", r)
}
