package blockfs

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/diskfs/go-diskfs/backend/file"
	"github.com/diskfs/go-diskfs/filesystem/fat32"
	"github.com/diskfs/go-diskfs/partition/gpt"
	"github.com/diskfs/go-diskfs/partition/mbr"

	"github.com/gozen-dev/gozen/domid"
	"github.com/gozen-dev/gozen/drivers/blkback"
	"github.com/gozen-dev/gozen/drivers/blkfront"
	"github.com/gozen-dev/gozen/evtchn/evheap"
	"github.com/gozen-dev/gozen/gnttab/gntheap"
	"github.com/gozen-dev/gozen/xenbus/device"
	"github.com/gozen-dev/gozen/xenbus/memstore"
)

const (
	backDom  domid.ID = 0
	guestDom domid.ID = 5
	devID             = "51712"
)

// image is a disk image in a temporary file and where its volume is.
type image struct {
	path   string
	size   int64
	start  int64 // the FAT32 volume
	volume int64
}

// layouts of test images.
const (
	layoutWhole = "whole"
	layoutMBR   = "mbr"
	layoutGPT   = "gpt"
)

// newImage creates a disk of size bytes with a FAT32 volume laid out as
// given (the partition starts at 1 MiB and ends 1 MiB before the end),
// with the files given written by go-diskfs itself.
func newImage(t testing.TB, layout string, size int64, files map[string]string) *image {
	t.Helper()
	img := &image{path: filepath.Join(t.TempDir(), "disk.img"), size: size, volume: size}
	f, err := os.Create(img.path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	b := file.New(f, false)
	w, err := b.Writable()
	if err != nil {
		t.Fatal(err)
	}
	const mib = 1 << 20
	switch layout {
	case layoutMBR:
		img.start, img.volume = mib, size-2*mib
		tab := &mbr.Table{LogicalSectorSize: 512, PhysicalSectorSize: 512, Partitions: []*mbr.Partition{
			{Type: mbr.Fat32LBA, Start: uint32(img.start / 512), Size: uint32(img.volume / 512)},
		}}
		if err := tab.Write(w, size); err != nil {
			t.Fatal(err)
		}
	case layoutGPT:
		img.start, img.volume = mib, size-2*mib
		tab := &gpt.Table{LogicalSectorSize: 512, PhysicalSectorSize: 512, ProtectiveMBR: true, Partitions: []*gpt.Partition{
			{Index: 1, Type: gpt.MicrosoftBasicData, Start: uint64(img.start / 512), End: uint64((img.start+img.volume)/512 - 1), Name: "data"},
		}}
		if err := tab.Write(w, size); err != nil {
			t.Fatal(err)
		}
	}
	lib, err := fat32.Create(b, img.volume, img.start, 512, "GOZEN", false)
	if err != nil {
		t.Fatal(err)
	}
	for name, content := range files {
		if dir := filepath.Dir(name); dir != "." {
			if err := lib.Mkdir(dir); err != nil {
				t.Fatal(err)
			}
		}
		fl, err := lib.OpenFile(name, os.O_RDWR|os.O_CREATE)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := fl.Write([]byte(content)); err != nil {
			t.Fatal(err)
		}
	}
	return img
}

// library opens the image file directly with go-diskfs.
func (img *image) library(t testing.TB) *fat32.FileSystem {
	t.Helper()
	f, err := os.Open(img.path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	lib, err := fat32.Read(file.New(f, true), img.volume, img.start, 512)
	if err != nil {
		t.Fatal(err)
	}
	return lib
}

// rig serves a file with blkback to a blkfront disk in one process.
type rig struct {
	t      testing.TB
	ctx    context.Context
	ev     *evheap.Hub
	gn     *gntheap.Hub
	disk   *blkfront.Disk
	front  *device.Frontend
	stop   context.CancelFunc
	served chan error
}

// serve connects a blkfront disk to a blkback serving storage of size
// bytes with the features in bc.
func serve(t testing.TB, storage blkback.Storage, size int64, bc blkback.Config) *rig {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	r := &rig{t: t, ctx: ctx, ev: evheap.NewHub(), gn: gntheap.NewHub()}
	s := memstore.New()
	t.Cleanup(func() { s.Close() })
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	gEv, err := r.ev.Domain(guestDom)
	must(err)
	bEv, err := r.ev.Domain(backDom)
	must(err)
	gMem, err := r.gn.Domain(guestDom)
	must(err)
	bMem, err := r.gn.Domain(backDom)
	must(err)
	_, _, err = s.AddDevice(memstore.Device{Frontend: guestDom, Backend: backDom, Class: "vbd", ID: devID})
	must(err)
	dom0, err := s.Connect(backDom)
	must(err)
	guest, err := s.Connect(guestDom)
	must(err)
	t.Cleanup(func() { guest.Close(); dom0.Close() })

	bc.Events, bc.Memory, bc.Disk, bc.Size = bEv, bMem, storage, size
	srv, err := blkback.NewServer(bc)
	must(err)
	b, err := device.OpenBackend(ctx, dom0, "vbd", guestDom, devID)
	must(err)
	sctx, stop := context.WithCancel(ctx)
	r.stop, r.served = stop, make(chan error, 1)
	go func() { r.served <- srv.Serve(sctx, b) }()

	r.front, err = device.Open(ctx, guest, "vbd", devID)
	must(err)
	r.disk, err = blkfront.Connect(ctx, blkfront.Config{Events: gEv, Memory: gMem, Persistent: true, MaxIndirectSegments: 64, MaxRingOrder: 1}, r.front)
	must(err)
	return r
}

// serveImage serves img's file read-write (or read-only) with flushes.
func serveImage(t testing.TB, img *image, readOnly bool) *rig {
	t.Helper()
	f, err := os.OpenFile(img.path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return serve(t, f, img.size, blkback.Config{ReadOnly: readOnly, FlushCache: true, Persistent: true, MaxIndirectSegments: 64, MaxRingOrder: 1})
}

// close disconnects the disk, stops the backend and checks for leftover
// ports and grants.
func (r *rig) close() {
	r.t.Helper()
	if err := r.front.Disconnect(r.ctx, 5*time.Second); err != nil {
		r.t.Errorf("disconnect: %v", err)
	}
	if err := r.disk.Close(); err != nil {
		r.t.Errorf("close: %v", err)
	}
	r.stop()
	if err := <-r.served; !errors.Is(err, context.Canceled) {
		r.t.Errorf("backend: %v", err)
	}
	if s := r.ev.Stats(); s.Ports != 0 {
		r.t.Errorf("leftover: %d event-channel ports", s.Ports)
	}
	if s := r.gn.Stats().String(); s != "" {
		r.t.Errorf("leftover: %s", s)
	}
}
