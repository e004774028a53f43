//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/gozen-dev/gozen/domid"
	"github.com/gozen-dev/gozen/drivers/blkback"
	"github.com/gozen-dev/gozen/xenbus/device"
)

// vbdHotplug is the vbd's nodes as xl's block-attach writes them (the
// backend's feature keys are blkback's).
func vbdHotplug(c vbdConfig, back domid.ID) *hotplug {
	mode := "w"
	if c.ReadOnly {
		mode = "r"
	}
	id := strconv.FormatUint(uint64(c.ID), 10)
	h := &hotplug{
		Class:        "vbd",
		BackendClass: c.BackendClass,
		Front:        c.Dom,
		Back:         back,
		ID:           id,
		FrontKeys: []device.KV{
			{Key: "virtual-device", Value: id},
			{Key: "device-type", Value: "disk"},
		},
		BackKeys: []device.KV{
			{Key: "type", Value: "gozen"},
			{Key: "params", Value: c.File},
			{Key: "mode", Value: mode},
			{Key: "device-type", Value: "disk"},
			{Key: "removable", Value: "0"},
			{Key: "bootable", Value: "1"},
		},
	}
	if c.Vdev != "" {
		h.BackKeys = append(h.BackKeys, device.KV{Key: "dev", Value: c.Vdev})
	}
	return h
}

// discardGranularity is the discard granularity offered: a page, the
// block size of the usual file systems holding images.
const discardGranularity = 4096

// fileDisk is an image file served by blkback: flushes call Sync, and
// discards punch a hole (fallocate FALLOC_FL_PUNCH_HOLE, which reads back
// as zeros), or write zeros where the file system cannot. Its vectored
// reads and writes go straight to the frontend's mapped pages.
type fileDisk struct {
	*os.File
	// inMemory: the file is in tmpfs or ramfs, whose reads and writes
	// never wait for a device, so they are made as raw system calls
	// (see package internal/xenioctl for why that counts in dom0).
	inMemory bool
}

var _ blkback.VectorStorage = fileDisk{}

// Magic numbers of statfs's f_type (include/uapi/linux/magic.h).
const (
	tmpfsMagic = 0x01021994
	ramfsMagic = 0x858458f6
)

// newFileDisk serves f, noting whether it lives in memory.
func newFileDisk(f *os.File) fileDisk {
	d := fileDisk{File: f}
	if rc, err := f.SyscallConn(); err == nil {
		rc.Control(func(fd uintptr) {
			var st unix.Statfs_t
			if unix.Fstatfs(int(fd), &st) == nil {
				// rawVec passes the offset in one word: 64-bit only.
				d.inMemory = strconv.IntSize == 64 && (st.Type == tmpfsMagic || uint32(st.Type) == ramfsMagic)
			}
		})
	}
	return d
}

// maxVecs bounds the buffers of one preadv or pwritev (IOV_MAX).
const maxVecs = 1024

// ReadvAt fills bufs from off on with preadv, so that blkback reads into
// the frontend's mapped pages in place.
func (d fileDisk) ReadvAt(bufs [][]byte, off int64) (int, error) {
	if d.inMemory {
		return d.vectored(bufs, off, rawVec(unix.SYS_PREADV), "preadv")
	}
	return d.vectored(bufs, off, unix.Preadv, "preadv")
}

// WritevAt writes bufs at off with pwritev.
func (d fileDisk) WritevAt(bufs [][]byte, off int64) (int, error) {
	if d.inMemory {
		return d.vectored(bufs, off, rawVec(unix.SYS_PWRITEV), "pwritev")
	}
	return d.vectored(bufs, off, unix.Pwritev, "pwritev")
}

// rawVec returns preadv or pwritev (system call nr) made with RawSyscall6.
func rawVec(nr uintptr) func(int, [][]byte, int64) (int, error) {
	return func(fd int, bufs [][]byte, off int64) (int, error) {
		iov := make([]unix.Iovec, 0, len(bufs))
		for _, b := range bufs {
			if len(b) > 0 {
				iov = append(iov, unix.Iovec{Base: &b[0], Len: uint64(len(b))})
			}
		}
		if len(iov) == 0 {
			return 0, nil
		}
		// On 64-bit Linux the offset is the low word alone.
		n, _, errno := unix.RawSyscall6(nr, uintptr(fd), uintptr(unsafe.Pointer(&iov[0])), uintptr(len(iov)), uintptr(off), 0, 0)
		if errno != 0 {
			return 0, errno
		}
		return int(n), nil
	}
}

// vectored moves bufs at off with op (unix.Preadv or unix.Pwritev),
// continuing after short transfers, until done, an error or end of file.
func (d fileDisk) vectored(bufs [][]byte, off int64, op func(int, [][]byte, int64) (int, error), name string) (int, error) {
	rc, err := d.SyscallConn()
	if err != nil {
		return 0, err
	}
	want := 0
	for _, b := range bufs {
		want += len(b)
	}
	done, owned := 0, false
	for done < want {
		if len(bufs[0]) == 0 {
			bufs = bufs[1:]
			continue
		}
		var n int
		var opErr error
		if err := rc.Control(func(fd uintptr) {
			for {
				n, opErr = op(int(fd), bufs[:min(len(bufs), maxVecs)], off)
				if opErr != unix.EINTR {
					return
				}
			}
		}); err != nil {
			return done, err
		}
		if opErr != nil {
			return done, fmt.Errorf("gozen-backend: %s: %w", name, opErr)
		}
		if n == 0 {
			return done, fmt.Errorf("gozen-backend: %s at %d: %w", name, off, io.ErrUnexpectedEOF)
		}
		done += n
		off += int64(n)
		if done >= want {
			break
		}
		if !owned { // trimmed below: leave the caller's slice alone
			bufs, owned = slices.Clone(bufs), true
		}
		for n > 0 {
			k := min(n, len(bufs[0]))
			n -= k
			if bufs[0] = bufs[0][k:]; len(bufs[0]) == 0 {
				bufs = bufs[1:]
			}
		}
	}
	return done, nil
}

// Discard deallocates n bytes at off.
func (d fileDisk) Discard(off, n int64) error {
	err := unix.Fallocate(int(d.Fd()), unix.FALLOC_FL_PUNCH_HOLE|unix.FALLOC_FL_KEEP_SIZE, off, n)
	if err == nil {
		return nil
	}
	zeros := make([]byte, min(n, 1<<20))
	for n > 0 {
		k := min(n, int64(len(zeros)))
		if _, err := d.WriteAt(zeros[:k], off); err != nil {
			return fmt.Errorf("gozen-backend: discard: %w", err)
		}
		off, n = off+k, n-k
	}
	return nil
}

// runVBD creates the vbd c.Dom sees as c.Vdev and serves disk (size
// bytes) with blkback until ctx ends or the frontend closes, then tears
// it down and prints the server's counters and the leftovers.
func runVBD(ctx context.Context, e *env, c vbdConfig, disk blkback.Storage, size int64) error {
	back, err := homeDomain(e.Store.Home())
	if err != nil {
		return err
	}
	srv, err := blkback.NewServer(blkback.Config{
		Events:              e.Events,
		Memory:              e.Grants,
		Disk:                disk,
		Size:                size,
		ReadOnly:            c.ReadOnly,
		Persistent:          c.Persistent,
		MaxIndirectSegments: c.Indirect,
		MaxRingOrder:        c.RingOrder,
		MaxQueues:           c.Queues,
		FlushCache:          !c.ReadOnly,
		Discard:             c.Discard,
		DiscardGranularity:  discardGranularity,
		PollMax:             pollMax(c.Poll),
	})
	if err != nil {
		return fmt.Errorf("gozen-backend: %w", err)
	}
	s := &session{env: e, h: vbdHotplug(c, back)}
	if err := s.start(ctx); err != nil {
		return err
	}
	wctx, quiet := context.WithCancel(context.WithoutCancel(ctx))
	defer quiet()
	frontClosed, followed := s.follow(wctx, func(st device.State) string {
		if st != device.Connected {
			return ""
		}
		return "connected: " + vbdSummary(c, srv.Stats())
	})
	sctx, stopServe := context.WithCancel(context.WithoutCancel(ctx))
	defer stopServe()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(sctx, s.b) }()

	var serveErr error
	select {
	case <-ctx.Done():
		s.logf("stopping: %v", context.Cause(ctx))
	case <-frontClosed:
		s.logf("stopping: the frontend closed")
	case serveErr = <-served:
		s.logf("stopping: blkback: %v", serveErr)
		served <- serveErr
	}
	err = s.teardown(func() error {
		stopServe()
		if err := <-served; err != nil && !errors.Is(err, context.Canceled) {
			return err
		}
		return nil
	}, func() { quiet(); followed() })
	st := srv.Stats()
	s.logf("stats: %d connections, %d requests (%d indirect, %d errors), %d persistent maps, %d grant copies, %d wake-ups, busy %v (%v a request)",
		st.Connections, st.Requests, st.Indirect, st.Errors, st.PersistentMaps, st.Copies, st.Wakeups, st.Busy.Round(time.Millisecond), (st.Busy / time.Duration(max(st.Requests, 1))).Round(time.Microsecond))
	s.logf("times: mapping %v, disk reads %v, disk writes %v",
		st.MapTime.Round(time.Millisecond), st.ReadTime.Round(time.Millisecond), st.WriteTime.Round(time.Millisecond))
	s.logf("polling (up to %v): %d found a request, %d ran out, %v polling; process CPU time %s",
		c.Poll, st.PollHits, st.PollMisses, st.PollTime.Round(time.Millisecond), cpuTime())
	if len(st.QueueRequests) > 1 {
		s.logf("stats: requests per queue %v", st.QueueRequests)
	}
	return errors.Join(serveErr, err, s.leftovers())
}

// pollMax is blkback's Config.PollMax for -poll d (0: off).
func pollMax(d time.Duration) time.Duration {
	if d == 0 {
		return -1
	}
	return d
}

// cpuTime returns the process's user and system time so far.
func cpuTime() string {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return "unknown: " + err.Error()
	}
	tv := func(t unix.Timeval) time.Duration { return time.Duration(t.Nano()).Round(time.Millisecond) }
	return fmt.Sprintf("user %v, system %v", tv(ru.Utime), tv(ru.Stime))
}

// vbdSummary describes a connection: the ring's order, persistent
// grants, indirect requests.
func vbdSummary(c vbdConfig, st blkback.Stats) string {
	parts := []string{fmt.Sprintf("ring order %d", st.RingOrder)}
	if st.Queues > 1 {
		parts = append(parts, fmt.Sprintf("%d queues", st.Queues))
	}
	if st.Persistent {
		parts = append(parts, "persistent")
	} else {
		parts = append(parts, "no persistent grants")
	}
	if c.Indirect > 0 {
		parts = append(parts, fmt.Sprintf("indirect %d", c.Indirect))
	} else {
		parts = append(parts, "no indirect")
	}
	if c.ReadOnly {
		parts = append(parts, "read-only")
	}
	if c.Discard {
		parts = append(parts, "discard")
	}
	return strings.Join(parts, ", ")
}
