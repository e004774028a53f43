//go:build linux

package gntlinux

import (
	"encoding/binary"
	"unsafe"

	"github.com/gozen-dev/gozen/internal/xenioctl"
)

// Layouts of include/uapi/xen/gntalloc.h and gntdev.h. The requests with
// a variable array (ALLOC_GREF, MAP_GRANT_REF) are built as byte buffers
// by allocArg and mapArg; the fixed ones are Go structs whose sizes and
// offsets the tests check.
type (
	// deallocArg is struct ioctl_gntalloc_dealloc_gref.
	deallocArg struct {
		Index uint64
		Count uint32
		_     uint32
	}
	// unmapNotifyArg is struct ioctl_gntalloc_unmap_notify and struct
	// ioctl_gntdev_unmap_notify.
	unmapNotifyArg struct {
		Index  uint64
		Action uint32
		Port   uint32
	}
	// unmapGrantArg is struct ioctl_gntdev_unmap_grant_ref.
	unmapGrantArg struct {
		Index uint64
		Count uint32
		_     uint32
	}
	// copySegment is struct gntdev_grant_copy_segment. Source and Dest
	// are unions: a local virtual address, or a foreign page as
	// {grant_ref_t ref; u16 offset; domid_t domid} (see foreign).
	copySegment struct {
		Source, Dest uint64
		Len, Flags   uint16
		Status       int16
		_            uint16
	}
	// grantCopyArg is struct ioctl_gntdev_grant_copy.
	grantCopyArg struct {
		Count    uint32
		_        uint32
		Segments uintptr
	}
)

// Sizes of the C structs with a one-element array, which the ioctl
// numbers encode: struct ioctl_gntalloc_alloc_gref and struct
// ioctl_gntdev_map_grant_ref are 24 bytes.
const (
	allocArgSize = 24
	mapArgSize   = 24
	// allocHeader and mapHeader are the offsets of their arrays.
	allocHeader = 16
	mapHeader   = 16
)

// Flags and actions.
const (
	gntallocFlagWritable = 1      // GNTALLOC_FLAG_WRITABLE
	unmapNotifyClearByte = 0x1    // UNMAP_NOTIFY_CLEAR_BYTE
	unmapNotifySendEvent = 0x2    // UNMAP_NOTIFY_SEND_EVENT
	gntcopySourceGref    = 1 << 0 // GNTCOPY_source_gref
	gntcopyDestGref      = 1 << 1 // GNTCOPY_dest_gref
)

// Request numbers of /dev/xen/gntalloc and /dev/xen/gntdev.
var (
	ioctlAllocGref         = xenioctl.IOC(xenioctl.None, 'G', 5, allocArgSize)
	ioctlDeallocGref       = xenioctl.IOC(xenioctl.None, 'G', 6, unsafe.Sizeof(deallocArg{}))
	ioctlAllocUnmapNotify  = xenioctl.IOC(xenioctl.None, 'G', 7, unsafe.Sizeof(unmapNotifyArg{}))
	ioctlMapGrantRef       = xenioctl.IOC(xenioctl.None, 'G', 0, mapArgSize)
	ioctlUnmapGrantRef     = xenioctl.IOC(xenioctl.None, 'G', 1, unsafe.Sizeof(unmapGrantArg{}))
	ioctlGntdevUnmapNotify = xenioctl.IOC(xenioctl.None, 'G', 7, unsafe.Sizeof(unmapNotifyArg{}))
	ioctlGrantCopy         = xenioctl.IOC(xenioctl.None, 'G', 8, unsafe.Sizeof(grantCopyArg{}))
)

// allocArg builds struct ioctl_gntalloc_alloc_gref for count pages granted
// to domid; the kernel writes index at offset 8 and the refs from offset
// 16. The buffer is 8-byte aligned (a uint64 slice).
func allocArg(domid uint16, writable bool, count int) []uint64 {
	b := make([]uint64, (max(allocArgSize, allocHeader+4*count)+7)/8)
	bs := bytesOf(b)
	var flags uint16
	if writable {
		flags = gntallocFlagWritable
	}
	binary.NativeEndian.PutUint16(bs[0:], domid)
	binary.NativeEndian.PutUint16(bs[2:], flags)
	binary.NativeEndian.PutUint32(bs[4:], uint32(count))
	return b
}

// allocResult reads the index and the count refs the kernel wrote.
func allocResult(b []uint64, count int) (index uint64, refs []uint32) {
	bs := bytesOf(b)
	index = binary.NativeEndian.Uint64(bs[8:])
	refs = make([]uint32, count)
	for i := range refs {
		refs[i] = binary.NativeEndian.Uint32(bs[allocHeader+4*i:])
	}
	return index, refs
}

// mapArg builds struct ioctl_gntdev_map_grant_ref for refs of domid; the
// kernel writes index at offset 8.
func mapArg(domid uint32, refs []uint32) []uint64 {
	b := make([]uint64, (max(mapArgSize, mapHeader+8*len(refs))+7)/8)
	bs := bytesOf(b)
	binary.NativeEndian.PutUint32(bs[0:], uint32(len(refs)))
	for i, r := range refs {
		binary.NativeEndian.PutUint32(bs[mapHeader+8*i:], domid)
		binary.NativeEndian.PutUint32(bs[mapHeader+8*i+4:], r)
	}
	return b
}

// mapIndex reads the index the kernel wrote into a mapArg buffer.
func mapIndex(b []uint64) uint64 { return binary.NativeEndian.Uint64(bytesOf(b)[8:]) }

func bytesOf(b []uint64) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(&b[0])), 8*len(b))
}

// foreign encodes the foreign half of a copy segment's union.
func foreign(ref uint32, offset uint16, domid uint16) uint64 {
	var b [8]byte
	binary.NativeEndian.PutUint32(b[0:], ref)
	binary.NativeEndian.PutUint16(b[4:], offset)
	binary.NativeEndian.PutUint16(b[6:], domid)
	return binary.NativeEndian.Uint64(b[:])
}

// Grant status codes (GNTST_* in xen/include/public/grant_table.h).
const (
	gntstOkay             = 0
	gntstGeneralError     = -1
	gntstBadDomain        = -2
	gntstBadGntref        = -3
	gntstBadHandle        = -4
	gntstBadVirtAddr      = -5
	gntstBadDevAddr       = -6
	gntstNoDeviceSpace    = -7
	gntstPermissionDenied = -8
	gntstBadPage          = -9
	gntstBadCopyArg       = -10
	gntstAddressTooBig    = -11
	gntstEagain           = -12
	gntstNoSpace          = -13
)

// gntstNames names the status codes, index -status.
var gntstNames = [...]string{"okay", "general_error", "bad_domain", "bad_gntref", "bad_handle",
	"bad_virt_addr", "bad_dev_addr", "no_device_space", "permission_denied", "bad_page",
	"bad_copy_arg", "address_too_big", "eagain", "no_space"}

// gntstName names a status code.
func gntstName(st int16) string {
	if i := -int(st); i >= 0 && i < len(gntstNames) {
		return "GNTST_" + gntstNames[i]
	}
	return "GNTST_unknown"
}
