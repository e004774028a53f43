//go:build linux

package gntlinux

import (
	"bytes"
	"errors"
	"os"
	"testing"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/gozen-dev/gozen/gnttab"
)

// TestIoctlNumbers checks the request numbers against the values of
// Linux's include/uapi/xen/gntalloc.h and gntdev.h.
func TestIoctlNumbers(t *testing.T) {
	for _, c := range []struct {
		name      string
		got, want uintptr
	}{
		{"IOCTL_GNTALLOC_ALLOC_GREF", ioctlAllocGref, 0x00184705},
		{"IOCTL_GNTALLOC_DEALLOC_GREF", ioctlDeallocGref, 0x00104706},
		{"IOCTL_GNTALLOC_SET_UNMAP_NOTIFY", ioctlAllocUnmapNotify, 0x00104707},
		{"IOCTL_GNTDEV_MAP_GRANT_REF", ioctlMapGrantRef, 0x00184700},
		{"IOCTL_GNTDEV_UNMAP_GRANT_REF", ioctlUnmapGrantRef, 0x00104701},
		{"IOCTL_GNTDEV_SET_UNMAP_NOTIFY", ioctlGntdevUnmapNotify, 0x00104707},
		{"IOCTL_GNTDEV_GRANT_COPY", ioctlGrantCopy, 0x00104708},
	} {
		if c.got != c.want {
			t.Errorf("%s = %#x, want %#x", c.name, c.got, c.want)
		}
	}
}

// TestLayouts checks the Go structs against the C layouts.
func TestLayouts(t *testing.T) {
	var seg copySegment
	var cp grantCopyArg
	var n unmapNotifyArg
	for _, c := range []struct {
		name      string
		got, want uintptr
	}{
		{"sizeof(struct ioctl_gntalloc_dealloc_gref)", unsafe.Sizeof(deallocArg{}), 16},
		{"sizeof(struct ioctl_gntdev_unmap_grant_ref)", unsafe.Sizeof(unmapGrantArg{}), 16},
		{"sizeof(struct ioctl_gntdev_unmap_notify)", unsafe.Sizeof(n), 16},
		{"offsetof(unmap_notify, action)", unsafe.Offsetof(n.Action), 8},
		{"offsetof(unmap_notify, event_channel_port)", unsafe.Offsetof(n.Port), 12},
		{"sizeof(struct gntdev_grant_copy_segment)", unsafe.Sizeof(seg), 24},
		{"offsetof(segment, dest)", unsafe.Offsetof(seg.Dest), 8},
		{"offsetof(segment, len)", unsafe.Offsetof(seg.Len), 16},
		{"offsetof(segment, flags)", unsafe.Offsetof(seg.Flags), 18},
		{"offsetof(segment, status)", unsafe.Offsetof(seg.Status), 20},
		{"sizeof(struct ioctl_gntdev_grant_copy)", unsafe.Sizeof(cp), 16},
		{"offsetof(grant_copy, segments)", unsafe.Offsetof(cp.Segments), 8},
	} {
		if c.got != c.want {
			t.Errorf("%s = %d, want %d", c.name, c.got, c.want)
		}
	}
}

func TestAllocArg(t *testing.T) {
	for _, c := range []struct {
		name     string
		writable bool
		count    int
		want     []byte // the first 8 bytes
		size     int
	}{
		{"one read-only", false, 1, []byte{7, 0, 0, 0, 1, 0, 0, 0}, 24},
		{"three writable", true, 3, []byte{7, 0, 1, 0, 3, 0, 0, 0}, 32},
		{"two writable", true, 2, []byte{7, 0, 1, 0, 2, 0, 0, 0}, 24},
	} {
		b := allocArg(7, c.writable, c.count)
		bs := bytesOf(b)
		if !bytes.Equal(bs[:8], c.want) || len(bs) != c.size {
			t.Errorf("%s: % x (%d bytes), want % x (%d bytes)", c.name, bs[:8], len(bs), c.want, c.size)
		}
		// the kernel's answer: index, then the refs
		bs[8] = 0x10
		for i := range c.count {
			bs[allocHeader+4*i] = byte(40 + i)
		}
		idx, refs := allocResult(b, c.count)
		if idx != 0x10 || len(refs) != c.count || refs[c.count-1] != uint32(40+c.count-1) {
			t.Errorf("%s: result %#x %v", c.name, idx, refs)
		}
	}
}

func TestMapArg(t *testing.T) {
	b := mapArg(5, []uint32{8, 9})
	bs := bytesOf(b)
	want := []byte{2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 8, 0, 0, 0, 5, 0, 0, 0, 9, 0, 0, 0}
	if !bytes.Equal(bs, want) {
		t.Errorf("mapArg = % x, want % x", bs, want)
	}
	if b := bytesOf(mapArg(5, []uint32{8})); len(b) != mapArgSize {
		t.Errorf("one ref: %d bytes, want %d", len(b), mapArgSize)
	}
	bs[8], bs[9] = 0x00, 0x30
	if got := mapIndex(b); got != 0x3000 {
		t.Errorf("mapIndex = %#x", got)
	}
}

func TestForeign(t *testing.T) {
	v := foreign(0x11223344, 0x0ff8, 0x0007)
	var b [8]byte
	*(*uint64)(unsafe.Pointer(&b)) = v
	if want := []byte{0x44, 0x33, 0x22, 0x11, 0xf8, 0x0f, 0x07, 0x00}; !bytes.Equal(b[:], want) {
		t.Errorf("foreign = % x, want % x", b, want)
	}
}

func TestChecks(t *testing.T) {
	for _, c := range []struct {
		off, n int
		ok     bool
	}{
		{0, 0, true}, {0, gnttab.PageSize, true}, {gnttab.PageSize, 0, true},
		{gnttab.PageSize - 1, 1, true}, {gnttab.PageSize - 1, 2, false},
		{-1, 1, false}, {0, -1, false}, {gnttab.PageSize + 1, 0, false},
		{1, gnttab.PageSize, false}, {1 << 62, 1 << 62, false},
	} {
		err := checkCopy(c.off, c.n)
		if (err == nil) != c.ok || (err != nil && !errors.Is(err, gnttab.ErrBounds)) {
			t.Errorf("checkCopy(%d, %d) = %v, want ok=%v", c.off, c.n, err, c.ok)
		}
	}
	for _, n := range []int{0, -1, MaxPages + 1, 1 << 40} {
		if err := checkCount(n); !errors.Is(err, gnttab.ErrBounds) {
			t.Errorf("checkCount(%d) = %v, want ErrBounds", n, err)
		}
	}
	if err := checkCount(MaxPages); err != nil {
		t.Errorf("checkCount(MaxPages) = %v", err)
	}
}

func TestStatusNames(t *testing.T) {
	for st, want := range map[int16]string{
		gntstOkay: "GNTST_okay", gntstBadGntref: "GNTST_bad_gntref",
		gntstPermissionDenied: "GNTST_permission_denied", gntstNoSpace: "GNTST_no_space",
		-14: "GNTST_unknown", 3: "GNTST_unknown", -32768: "GNTST_unknown",
	} {
		if got := gntstName(st); got != want {
			t.Errorf("gntstName(%d) = %q, want %q", st, got, want)
		}
	}
	if err := copyErr(gntstBadDomain, nil); !errors.Is(err, gnttab.ErrBadRef) {
		t.Errorf("copyErr = %v", err)
	}
	if err := copyErr(0, unix.EFAULT); !errors.Is(err, gnttab.ErrBadRef) || !errors.Is(err, unix.EFAULT) {
		t.Errorf("copyErr(EFAULT) = %v", err)
	}
}

// TestChecksBeforeDevices: bad arguments fail before any device is used
// (the service here has none).
func TestChecksBeforeDevices(t *testing.T) {
	g := newGrants(nil, nil)
	if _, err := g.Share(1, 0, true); !errors.Is(err, gnttab.ErrBounds) {
		t.Errorf("Share(0 pages) = %v", err)
	}
	if _, err := g.Map(1, nil, true); !errors.Is(err, gnttab.ErrBounds) {
		t.Errorf("Map(no refs) = %v", err)
	}
	if err := g.CopyTo(1, 1, 4000, make([]byte, 100)); !errors.Is(err, gnttab.ErrBounds) {
		t.Errorf("CopyTo across the page end = %v", err)
	}
	if err := g.CopyFrom(1, 1, -1, make([]byte, 1)); !errors.Is(err, gnttab.ErrBounds) {
		t.Errorf("CopyFrom(offset -1) = %v", err)
	}
	if err := g.Unshare(&gnttab.Share{}); !errors.Is(err, gnttab.ErrBadRef) {
		t.Errorf("Unshare of a foreign share = %v", err)
	}
	if err := g.Unmap(&gnttab.Mapping{Handle: &region{}}); !errors.Is(err, gnttab.ErrBadRef) {
		t.Errorf("Unmap of a foreign mapping = %v", err)
	}
	if err := g.NotifyOnUnmap(&gnttab.Mapping{}, 0, true, 0); !errors.Is(err, gnttab.ErrBadRef) {
		t.Errorf("NotifyOnUnmap of a foreign mapping = %v", err)
	}
	if err := g.CopyBatch(1, []gnttab.CopySegment{{Ref: 1, Local: make([]byte, 8)}, {Ref: 2, Offset: 4095, Local: make([]byte, 2)}}, true); !errors.Is(err, gnttab.ErrBounds) {
		t.Errorf("CopyBatch with a segment across the page end = %v", err)
	}
	if err := g.CopyBatch(1, nil, false); err != nil {
		t.Errorf("CopyBatch of nothing = %v", err)
	}
	if s := g.Stats(); s != (gnttab.Stats{}) {
		t.Errorf("Stats = %+v", s)
	}
}

// TestCopyBatchRefused: a device that refuses the batch ioctl (here
// /dev/null: ENOTTY) makes CopyBatch redo the copies one at a time, and
// fail as they do, with ErrBadRef.
func TestCopyBatchRefused(t *testing.T) {
	null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		t.Skip(err)
	}
	defer null.Close()
	g := newGrants(nil, null)
	segs := []gnttab.CopySegment{{Ref: 1, Local: make([]byte, 512)}, {Ref: 2, Offset: 512, Local: make([]byte, 512)}}
	for _, to := range []bool{false, true} {
		if err := g.CopyBatch(1, segs, to); !errors.Is(err, gnttab.ErrBadRef) {
			t.Errorf("CopyBatch(to %v) on /dev/null = %v, want ErrBadRef", to, err)
		}
	}
}

func TestNotifyArg(t *testing.T) {
	r := &region{index: 0x5000, pages: 2}
	for _, c := range []struct {
		off         int
		clear       bool
		port        uint32
		index       uint64
		action      uint32
		outOfBounds bool
	}{
		{0, true, 0, 0x5000, unmapNotifyClearByte, false},
		{4097, false, 9, 0x6001, unmapNotifySendEvent, false},
		{8191, true, 3, 0x6fff, unmapNotifyClearByte | unmapNotifySendEvent, false},
		{8192, true, 0, 0, 0, true},
		{-1, true, 0, 0, 0, true},
	} {
		a, err := notifyArg(r, c.off, c.clear, 0)
		if c.port != 0 {
			a, err = notifyArg(r, c.off, c.clear, 9)
			c.port = 9
		}
		if c.outOfBounds {
			if !errors.Is(err, gnttab.ErrBounds) {
				t.Errorf("offset %d: %v, want ErrBounds", c.off, err)
			}
			continue
		}
		if err != nil || a.Index != c.index || a.Action != c.action || a.Port != c.port {
			t.Errorf("offset %d: %+v, %v; want index %#x action %d port %d", c.off, a, err, c.index, c.action, c.port)
		}
	}
}

// TestDevice shares a page with this domain itself and maps it back.
func TestDevice(t *testing.T) {
	for _, p := range []string{AllocPath, DevPath} {
		if _, err := os.Stat(p); err != nil {
			t.Skipf("%s absent (not a Xen domain): %v", p, err)
		}
	}
	t.Skip("needs this domain's id to grant to itself: run cmd/xenconform in dom0 instead")
}

// TestNilArguments: Unmap and Unshare of nil fail with ErrBadRef, without
// a device (tier B's gnttab/BadRefs found Unmap(nil) panicking).
func TestNilArguments(t *testing.T) {
	g := &Grants{}
	if err := g.Unmap(nil); !errors.Is(err, gnttab.ErrBadRef) {
		t.Errorf("Unmap(nil) = %v, want ErrBadRef", err)
	}
}
