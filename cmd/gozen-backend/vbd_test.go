//go:build linux

package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gozen-dev/gozen/drivers/blkfront"
	"github.com/gozen-dev/gozen/xenbus/device"
)

// image makes a disk image of size bytes, each sector filled with its
// number's low byte.
func image(t *testing.T, size int) (*os.File, []byte) {
	t.Helper()
	data := make([]byte, size)
	for i := range data {
		data[i] = byte(i / 512)
	}
	p := filepath.Join(t.TempDir(), "disk.img")
	must(t, os.WriteFile(p, data, 0o600))
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	must(t, err)
	t.Cleanup(func() { f.Close() })
	return f, data
}

// startVBD runs runVBD in the background; its result arrives on the
// returned channel.
func (r *rig) startVBD(ctx context.Context, c vbdConfig, f *os.File, size int64) <-chan error {
	done := make(chan error, 1)
	go func() { done <- runVBD(ctx, r.env, c, newFileDisk(f), size) }()
	r.waitNode("/local/domain/7/device/vbd/" + strconv.Itoa(int(c.ID)) + "/state")
	return done
}

// TestVBDFrontendCloses serves an image to a blkfront disk in the guest,
// which reads and writes it and then closes the device: the command
// tears down, prints its counters and leaves nothing behind.
func TestVBDFrontendCloses(t *testing.T) {
	for _, tc := range []struct {
		name string
		c    vbdConfig
		fc   blkfront.Config
		want string
	}{
		{"persistent indirect order 2 discard", vbdConfig{Persistent: true, Indirect: 32, RingOrder: 2, Discard: true},
			blkfront.Config{Persistent: true, MaxIndirectSegments: 32, MaxRingOrder: 4}, "connected: ring order 2, persistent, indirect 32, discard"},
		{"plain", vbdConfig{Indirect: 0, RingOrder: 0},
			blkfront.Config{Persistent: true, MaxIndirectSegments: 32, MaxRingOrder: 4}, "connected: ring order 0, no persistent grants, no indirect"},
		{"read-only", vbdConfig{ReadOnly: true, Indirect: 16, RingOrder: 1},
			blkfront.Config{MaxRingOrder: 1}, "connected: ring order 1, no persistent grants, indirect 16, read-only"},
		{"four queues", vbdConfig{Persistent: true, Indirect: 32, RingOrder: 1, Queues: 4},
			blkfront.Config{Persistent: true, MaxIndirectSegments: 32, MaxRingOrder: 1, MaxQueues: 3}, "connected: ring order 1, 3 queues, persistent, indirect 32"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t)
			const size = 1 << 20
			f, data := image(t, size)
			c := tc.c
			c.Dom, c.File, c.ID, c.Vdev, c.BackendClass = guestDom, f.Name(), 51728, "xvdb", "vbd"
			done := r.startVBD(r.ctx, c, f, size)

			gev, _ := r.ev.Domain(guestDom)
			ggn, _ := r.gn.Domain(guestDom)
			fe, err := device.Open(r.ctx, r.guest, "vbd", "51728")
			must(t, err)
			fc := tc.fc
			fc.Events, fc.Memory = gev, ggn
			disk, err := blkfront.Connect(r.ctx, fc, fe)
			must(t, err)
			if disk.Size() != size || disk.ReadOnly() != c.ReadOnly {
				t.Errorf("disk of %d bytes, read-only %v", disk.Size(), disk.ReadOnly())
			}
			got := make([]byte, 256<<10)
			if _, err := disk.ReadAt(got, 4096); err != nil || !bytes.Equal(got, data[4096:4096+len(got)]) {
				t.Errorf("read: %v, data equal %v", err, bytes.Equal(got, data[4096:4096+len(got)]))
			}
			msg := bytes.Repeat([]byte("gozen!"), 2048)[:8192]
			_, err = disk.WriteAt(msg, 65536)
			if c.ReadOnly != (err != nil) {
				t.Errorf("write to a read-only=%v disk: %v", c.ReadOnly, err)
			}
			if c.Discard {
				must(t, disk.Discard(r.ctx, 512<<10, 128<<10))
				z := make([]byte, 128<<10)
				if _, err := disk.ReadAt(z, 512<<10); err != nil || !bytes.Equal(z, make([]byte, len(z))) {
					t.Errorf("the discarded range does not read as zeros (%v)", err)
				}
			}
			r.waitOutput(tc.want)

			must(t, fe.Disconnect(r.ctx, 5*time.Second))
			must(t, disk.Close())
			if err := <-done; err != nil {
				t.Fatalf("runVBD: %v", err)
			}
			out := r.out.String()
			for _, want := range []string{
				"gozen-backend: vbd/51728 of domain 7 created: frontend /local/domain/7/device/vbd/51728, backend /local/domain/0/backend/vbd/7/51728",
				"stopping: the frontend closed", "closed: backend Closed, frontend Closed", "removed", "stats: 1 connections", "leftovers: none",
			} {
				if !strings.Contains(out, want) {
					t.Errorf("no %q in the output:\n%s", want, out)
				}
			}
			written := make([]byte, len(msg))
			f.ReadAt(written, 65536)
			if !c.ReadOnly && !bytes.Equal(written, msg) {
				t.Errorf("the write did not reach the image")
			}
			r.checkClean()
		})
	}
}

// TestVBDInterrupted serves a disk to a guest running a device.Bus and
// stops the command (SIGINT's context): the backend goes Closing, the
// guest's bus closes the disk, the command removes the device.
func TestVBDInterrupted(t *testing.T) {
	r := newRig(t)
	f, _ := image(t, 1<<20)
	ctx, cancel := context.WithCancelCause(r.ctx)
	c := vbdConfig{Dom: guestDom, File: f.Name(), ID: 51712, Vdev: "xvda", Persistent: true, Indirect: 32, RingOrder: 2, BackendClass: "vbd"}
	done := r.startVBD(ctx, c, f, 1<<20)

	gev, _ := r.ev.Domain(guestDom)
	ggn, _ := r.gn.Domain(guestDom)
	bus := device.NewBus(r.guest)
	must(t, bus.Register(&blkfront.Driver{Config: blkfront.Config{Events: gev, Memory: ggn, Persistent: true, MaxIndirectSegments: 32, MaxRingOrder: 2}}))
	must(t, bus.Start(r.ctx))
	defer bus.Close()
	r.waitOutput("connected: ring order 2, persistent, indirect 32")
	disk := bus.Devices()[0].(*device.Bound).Conn().(*blkfront.Disk)
	buf := make([]byte, 4096)
	if _, err := disk.ReadAt(buf, 0); err != nil {
		t.Fatal(err)
	}

	cancel(errors.New("got interrupt"))
	if err := <-done; err != nil {
		t.Fatalf("runVBD: %v", err)
	}
	out := r.out.String()
	for _, want := range []string{"stopping: got interrupt", "closed: backend Closed, frontend Closed", "removed", "leftovers: none"} {
		if !strings.Contains(out, want) {
			t.Errorf("no %q in the output:\n%s", want, out)
		}
	}
	if strings.Contains(out, "did not close") {
		t.Errorf("the close handshake timed out:\n%s", out)
	}
	must(t, bus.Close())
	r.checkClean()
}

// TestVBDNoGuest stops a device no frontend ever connected to: no close
// handshake to wait for, the nodes are removed.
func TestVBDNoGuest(t *testing.T) {
	r := newRig(t)
	f, _ := image(t, 1<<20)
	ctx, cancel := context.WithCancel(r.ctx)
	c := vbdConfig{Dom: guestDom, File: f.Name(), ID: 51712, Vdev: "xvda", BackendClass: "vbd"}
	done := r.startVBD(ctx, c, f, 1<<20)
	r.waitOutput("backend InitWait")
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("runVBD: %v", err)
	}
	if out := r.out.String(); !strings.Contains(out, "leftovers: none") || strings.Contains(out, "did not close") {
		t.Errorf("output:\n%s", out)
	}
	r.checkClean()
}

// TestVBDExisting refuses to take over a device that exists, and leaves
// it alone.
func TestVBDExisting(t *testing.T) {
	r := newRig(t)
	f, _ := image(t, 1<<20)
	must(t, r.store.Write("/local/domain/7/device/vbd/51712/state", "4"))
	r.before = r.dump()
	c := vbdConfig{Dom: guestDom, File: f.Name(), ID: 51712, Vdev: "xvda", BackendClass: "vbd"}
	if err := runVBD(r.ctx, r.env, c, f, 1<<20); !errors.Is(err, ErrExists) {
		t.Fatalf("runVBD: %v, want ErrExists", err)
	}
	r.checkClean()
}

// TestFileDiskVectored writes and reads back more buffers than one
// pwritev or preadv takes, through fileDisk's VectorStorage methods, and
// reads past the end of the file as an error.
func TestFileDiskVectored(t *testing.T) {
	f, _ := image(t, 8<<20)
	for _, inMemory := range []bool{false, true} {
		d := newFileDisk(f)
		d.inMemory = inMemory // the file system decides otherwise; test both paths
		testVectored(t, d)
	}
}

func testVectored(t *testing.T, d fileDisk) {
	const n = maxVecs + 300
	bufs := make([][]byte, n)
	for i := range bufs {
		bufs[i] = bytes.Repeat([]byte{byte(i), byte(i >> 8)}, 256)
	}
	orig := slices.Clone(bufs)
	if got, err := d.WritevAt(bufs, 4096); err != nil || got != n*512 {
		t.Fatalf("WritevAt: %d, %v", got, err)
	}
	back := make([][]byte, n)
	for i := range back {
		back[i] = make([]byte, 512)
	}
	if got, err := d.ReadvAt(back, 4096); err != nil || got != n*512 {
		t.Fatalf("ReadvAt: %d, %v", got, err)
	}
	for i := range back {
		if !bytes.Equal(back[i], orig[i]) || len(bufs[i]) != 512 {
			t.Fatalf("buffer %d: read back differs or the caller's slice was trimmed", i)
		}
	}
	if got, err := d.ReadvAt(back[:4], 8<<20-1024); err == nil || got != 1024 {
		t.Errorf("ReadvAt past the end: %d, %v; want 1024 and an error", got, err)
	}
}

// TestFileDiskInMemory: a file in tmpfs is served with raw system calls,
// one on another file system is not.
func TestFileDiskInMemory(t *testing.T) {
	for _, tc := range []struct {
		dir  string
		want bool
	}{{"/dev/shm", true}, {t.TempDir(), false}} {
		var st unix.Statfs_t
		if err := unix.Statfs(tc.dir, &st); err != nil || (st.Type == tmpfsMagic) != tc.want {
			t.Logf("%s: not the file system this case wants (%v)", tc.dir, err)
			continue
		}
		f, err := os.CreateTemp(tc.dir, "gozen-disk")
		if err != nil {
			t.Fatal(err)
		}
		defer os.Remove(f.Name())
		defer f.Close()
		if got := newFileDisk(f).inMemory; got != tc.want {
			t.Errorf("%s: inMemory %v, want %v", tc.dir, got, tc.want)
		}
	}
}
