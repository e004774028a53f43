package blkfront

import (
	"context"
	"errors"
	"fmt"
	"math/bits"
	"strconv"
	"strings"

	"github.com/gozen-dev/gozen/drivers/blkif"
	"github.com/gozen-dev/gozen/drivers/ring"
	"github.com/gozen-dev/gozen/gnttab"
	"github.com/gozen-dev/gozen/xenbus/device"
	"github.com/gozen-dev/gozen/xenbus/wire"
)

// Driver is the vbd driver for a device.Bus: each device it connects is
// a *Disk, reachable through the bound device's Conn.
type Driver struct {
	// Config is used for every disk.
	Config Config
}

var _ device.Driver = (*Driver)(nil)

// Class returns "vbd".
func (d *Driver) Class() string { return "vbd" }

// Connect connects the disk of f (see the package Connect).
func (d *Driver) Connect(ctx context.Context, f *device.Frontend) (device.Conn, error) {
	disk, err := Connect(ctx, d.Config, f)
	if disk == nil {
		return nil, err
	}
	return disk, err
}

// Connect runs the frontend's handshake on f, opened by the caller, and
// returns the connected disk. If it fails after publishing the ring it
// returns the disk with the error: close it (Close) after the close
// handshake (f.Disconnect), as device.Driver's contract says.
func Connect(ctx context.Context, cfg Config, f *device.Frontend) (*Disk, error) {
	if cfg.Events == nil || cfg.Memory == nil {
		return nil, errors.New("blkfront: Config needs Events and Memory")
	}
	d := &Disk{cfg: cfg, name: f.Name(), avail: make(chan struct{}), shares: map[*gnttab.Share]struct{}{}}
	d.maxPages = cfg.MaxPages
	if d.maxPages <= 0 {
		d.maxPages = DefaultMaxPages
	}
	published, err := d.negotiate(ctx, f)
	if err != nil {
		if !published {
			d.Close()
			return nil, err
		}
		return d, err
	}
	return d, nil
}

// backendUint reads an unsigned decimal key of the backend; a missing key
// gives def.
func backendUint(ctx context.Context, f *device.Frontend, key string, bitSize int, def uint64) (uint64, error) {
	v, err := f.ReadBackend(ctx, key)
	if errors.Is(err, wire.ErrNotExist) {
		return def, nil
	}
	if err != nil {
		return 0, err
	}
	n, err := strconv.ParseUint(strings.TrimSpace(v), 10, bitSize)
	if err != nil {
		return 0, fmt.Errorf("%w: backend key %s = %q", ErrProtocol, key, clip(v))
	}
	return n, nil
}

func clip(s string) string {
	if len(s) > 32 {
		return s[:32] + "..."
	}
	return s
}

// negotiate sets up a queue on f and runs the handshake up to our
// Connected; published reports whether the ring was published (the
// backend may have mapped it).
func (d *Disk) negotiate(ctx context.Context, f *device.Frontend) (published bool, err error) {
	fail := func(err error) (bool, error) {
		return published, fmt.Errorf("blkfront %s: %w", d.name, err)
	}
	// Only InitWait: after a resume the backend may still show the old
	// connection's Connected until it saw our Initialising.
	if _, err := f.WaitBackend(ctx, device.InitWait); err != nil {
		return fail(err)
	}
	maxOrder, err := backendUint(ctx, f, "max-ring-page-order", 32, 0)
	if err != nil {
		return fail(err)
	}
	order := int(min(maxOrder, uint64(max(0, min(d.cfg.MaxRingOrder, MaxRingOrder)))))
	offer, err := backendUint(ctx, f, "multi-queue-max-queues", 32, 0)
	if err != nil {
		return fail(err)
	}
	nq := int(max(1, min(offer, uint64(max(1, d.cfg.MaxQueues)))))
	handle := uint16(0)
	if n, err := strconv.ParseUint(f.ID, 10, 16); err == nil {
		handle = uint16(n)
	}

	// The ring side.
	qs, err := d.newQueues(f, order, nq)
	if err != nil {
		return fail(err)
	}
	var kvs []device.KV
	ringKVs := func(dir string, q *queue) {
		if order == 0 {
			kvs = append(kvs, device.Uint(dir+"ring-ref", q.share.Refs[0]))
			return
		}
		for i, r := range q.share.Refs {
			kvs = append(kvs, device.Uint(dir+"ring-ref"+strconv.Itoa(i), r))
		}
	}
	if nq == 1 {
		// The single-queue layout, as before multi-queue; a frontend that
		// published queues before (a reconnection) says it has one now.
		kvs = append(kvs, device.Uint("event-channel", qs[0].port), device.KV{Key: "protocol", Value: blkif.Protocol})
		if order > 0 {
			kvs = append(kvs, device.Uint("ring-page-order", uint32(order)))
		}
		ringKVs("", qs[0])
		if d.mq {
			kvs = append(kvs, device.Uint("multi-queue-num-queues", uint32(1)))
		}
	} else {
		kvs = append(kvs, device.KV{Key: "protocol", Value: blkif.Protocol})
		if order > 0 {
			kvs = append(kvs, device.Uint("ring-page-order", uint32(order)))
		}
		kvs = append(kvs, device.Uint("multi-queue-num-queues", uint32(nq)))
		for _, q := range qs {
			dir := "queue-" + strconv.Itoa(q.index) + "/"
			ringKVs(dir, q)
			kvs = append(kvs, device.Uint(dir+"event-channel", q.port))
		}
		d.mq = true
	}
	persistent := "0"
	if d.cfg.Persistent {
		persistent = "1"
	}
	kvs = append(kvs, device.KV{Key: "feature-persistent", Value: persistent})
	published = true
	if err := f.Publish(ctx, kvs, device.Initialised); err != nil {
		return fail(err)
	}
	if _, err := f.WaitBackend(ctx, device.Connected); err != nil {
		return fail(err)
	}
	info, err := readInfo(ctx, f, d.cfg)
	if err != nil {
		return fail(err)
	}
	info.RingOrder, info.Handle, info.Queues = order, handle, nq
	if err := f.SwitchState(ctx, device.Connected); err != nil {
		return fail(err)
	}
	d.mu.Lock()
	d.info = info
	need := info.MaxSegments + blkif.IndirectPages(info.MaxSegments)
	d.maxPages = max(d.maxPages, need)
	d.queuePages = max(d.maxPages/nq, need)
	d.running = true
	d.wakeLocked()
	d.mu.Unlock()
	return true, nil
}

// readInfo reads the disk's parameters and features once the backend is
// Connected.
func readInfo(ctx context.Context, f *device.Frontend, cfg Config) (Info, error) {
	var in Info
	sectors, err := f.ReadBackend(ctx, "sectors")
	if err != nil {
		return in, fmt.Errorf("reading sectors: %w", err)
	}
	if in.Sectors, err = strconv.ParseUint(strings.TrimSpace(sectors), 10, 64); err != nil || in.Sectors > 1<<54 {
		return in, fmt.Errorf("%w: sectors %q", ErrProtocol, clip(sectors))
	}
	ss, err := backendUint(ctx, f, "sector-size", 32, 0)
	if err != nil {
		return in, err
	}
	if ss < blkif.SectorSize || ss > 4096 || bits.OnesCount64(ss) != 1 {
		return in, fmt.Errorf("%w: sector-size %d", ErrProtocol, ss)
	}
	in.SectorSize = int(ss)
	if in.Sectors*blkif.SectorSize%ss != 0 {
		return in, fmt.Errorf("%w: %d sectors of 512 bytes is no whole number of %d-byte sectors", ErrProtocol, in.Sectors, ss)
	}
	ps, err := backendUint(ctx, f, "physical-sector-size", 32, ss)
	if err != nil {
		return in, err
	}
	if ps < ss || ps > 1<<20 || bits.OnesCount64(ps) != 1 {
		return in, fmt.Errorf("%w: physical-sector-size %d with sector-size %d", ErrProtocol, ps, ss)
	}
	in.PhysicalSectorSize = int(ps)
	vinfo, err := backendUint(ctx, f, "info", 32, 0)
	if err != nil {
		return in, err
	}
	in.VDiskInfo = uint32(vinfo)
	in.ReadOnly = vinfo&blkif.VDiskReadOnly != 0
	if in.FlushCache, err = f.Feature(ctx, "flush-cache"); err != nil {
		return in, err
	}
	if in.Barrier, err = f.Feature(ctx, "barrier"); err != nil {
		return in, err
	}
	if in.Discard, err = f.Feature(ctx, "discard"); err != nil {
		return in, err
	}
	if in.Discard {
		g, err := backendUint(ctx, f, "discard-granularity", 32, 0)
		if err != nil {
			return in, err
		}
		a, err := backendUint(ctx, f, "discard-alignment", 32, 0)
		if err != nil {
			return in, err
		}
		s, err := backendUint(ctx, f, "discard-secure", 32, 0)
		if err != nil {
			return in, err
		}
		in.DiscardGranularity, in.DiscardAlignment, in.DiscardSecure = uint32(g), uint32(a), s != 0
	}
	bp, err := f.Feature(ctx, "persistent")
	if err != nil {
		return in, err
	}
	in.Persistent = bp && cfg.Persistent
	ind, err := backendUint(ctx, f, "feature-max-indirect-segments", 32, 0)
	if err != nil {
		return in, err
	}
	in.MaxSegments = blkif.MaxSegments
	if n := min(ind, uint64(max(cfg.MaxIndirectSegments, 0)), blkif.MaxIndirectSegments); n > blkif.MaxSegments {
		in.MaxSegments, in.Indirect = int(n), true
	}
	return in, nil
}

// newQueues grants n rings of 2^order pages, allocates their event
// channels and starts their completion goroutines. On an error it
// releases what it made.
func (d *Disk) newQueues(f *device.Frontend, order, n int) ([]*queue, error) {
	qs := make([]*queue, 0, n)
	release := func() {
		for _, q := range qs {
			d.cfg.Memory.Unshare(q.share)
			d.cfg.Events.Close(q.port)
		}
	}
	for i := range n {
		q := &queue{index: i, remote: f.BackendID, done: make(chan struct{})}
		s, err := d.cfg.Memory.Share(f.BackendID, 1<<order, true)
		if err != nil {
			release()
			return nil, fmt.Errorf("granting the ring of queue %d: %w", i, err)
		}
		q.share = s
		if q.front, err = ring.NewFront(s.Buf, blkif.Layout); err != nil {
			d.cfg.Memory.Unshare(s)
			release()
			return nil, err
		}
		if q.port, err = d.cfg.Events.AllocUnbound(f.BackendID); err != nil {
			d.cfg.Memory.Unshare(s)
			release()
			return nil, fmt.Errorf("allocating the event channel of queue %d: %w", i, err)
		}
		q.initShadow()
		qs = append(qs, q)
	}
	d.mu.Lock()
	for _, q := range qs {
		d.shares[q.share] = struct{}{}
		ctx, cancel := context.WithCancel(context.Background())
		q.stop = cancel
		go d.complete(ctx, q)
	}
	d.qs = qs
	d.next = 0
	for len(d.requests) < n {
		d.requests = append(d.requests, 0)
	}
	d.hasPort = true
	d.mu.Unlock()
	return qs, nil
}
