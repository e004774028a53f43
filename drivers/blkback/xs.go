package blkback

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/gozen-dev/gozen/drivers/blkif"
	"github.com/gozen-dev/gozen/evtchn"
	"github.com/gozen-dev/gozen/gnttab"
	"github.com/gozen-dev/gozen/xenbus/device"
	"github.com/gozen-dev/gozen/xenbus/wire"
)

// CloseWait bounds each wait of the close handshake.
const CloseWait = 5 * time.Second

// Serve runs the backend's side of device b until ctx ends or b's
// directory is removed: it publishes the features and goes InitWait,
// connects the ring once the frontend is Initialised, publishes the disk
// and goes Connected, and serves until the frontend goes back to
// Initialising (it reconnects: InitWait again) or closes (the ring is
// unmapped, then the close handshake; a frontend that comes back is
// served again). A frontend whose keys are malformed is refused: the
// backend closes and waits for it to start over. Serve returns ctx's
// error, or the error that ended it.
func (s *Server) Serve(ctx context.Context, b *device.Backend) error {
	for {
		if err := b.Publish(ctx, s.features(), device.InitWait); err != nil {
			return err
		}
		_, err := b.WaitFrontend(ctx, device.Initialised, device.Connected)
		if err != nil && !errors.Is(err, device.ErrFrontendClosed) {
			return err
		}
		var c rings
		if err == nil {
			c, err = s.connect(ctx, b)
		}
		var st device.State
		if err == nil {
			// Serve until the frontend leaves Initialised/Connected.
			st, err = b.WaitFrontend(ctx, device.Initialising, device.InitWait, device.Closing, device.Closed, device.Unknown)
			cerr := c.close()
			if ctx.Err() != nil {
				return errors.Join(ctx.Err(), cerr)
			}
			if err != nil {
				return errors.Join(err, cerr)
			}
			if cerr != nil {
				return cerr
			}
			if st == device.Initialising || st == device.InitWait {
				continue // reconnecting
			}
		}
		// Closing, closed, gone or refused: the close handshake, then wait
		// for the frontend to start over.
		if err := b.Disconnect(ctx, CloseWait); err != nil && ctx.Err() != nil {
			return ctx.Err()
		}
		if err := waitRestart(ctx, b); err != nil {
			return err
		}
	}
}

// waitRestart waits for a closed frontend to start over (Initialising or
// Initialised).
func waitRestart(ctx context.Context, b *device.Backend) error {
	s := b.Store()
	err := s.WaitFor(ctx, b.Frontend+"/state", func() (bool, error) {
		st, err := b.FrontendState(ctx)
		if err != nil {
			return false, nil // malformed: wait for a better one
		}
		return st == device.Initialising || st == device.Initialised, nil
	})
	if err != nil {
		return fmt.Errorf("blkback %s: waiting for the frontend to restart: %w", b.Name(), err)
	}
	return nil
}

// features are the keys published before InitWait.
func (s *Server) features() []device.KV {
	cfg := &s.cfg
	flag := func(b bool) string {
		if b {
			return "1"
		}
		return "0"
	}
	kvs := []device.KV{
		{Key: "feature-flush-cache", Value: flag(cfg.FlushCache)},
		{Key: "feature-barrier", Value: flag(cfg.Barrier)},
		{Key: "feature-persistent", Value: flag(cfg.Persistent)},
		{Key: "feature-discard", Value: flag(cfg.Discard)},
		device.Uint("max-ring-page-order", uint32(cfg.MaxRingOrder)),
	}
	if cfg.Discard {
		kvs = append(kvs,
			device.Uint("discard-granularity", cfg.DiscardGranularity),
			device.Uint("discard-alignment", cfg.DiscardAlignment),
			device.KV{Key: "discard-secure", Value: flag(cfg.DiscardSecure)})
	}
	if cfg.MaxIndirectSegments > 0 {
		kvs = append(kvs, device.Uint("feature-max-indirect-segments", uint32(cfg.MaxIndirectSegments)))
	}
	if cfg.MaxQueues > 0 {
		kvs = append(kvs, device.Uint("multi-queue-max-queues", uint32(cfg.MaxQueues)))
	}
	return kvs
}

// connect reads the frontend's keys, connects the rings, publishes the
// disk and goes Connected.
func (s *Server) connect(ctx context.Context, b *device.Backend) (rings, error) {
	cfg := &s.cfg
	nq := uint64(1)
	if v, err := b.ReadFrontendUint(ctx, "multi-queue-num-queues", 32); err == nil {
		nq = v
	} else if !errors.Is(err, wire.ErrNotExist) {
		return nil, err
	}
	if nq == 0 || nq > uint64(max(1, cfg.MaxQueues)) {
		return nil, fmt.Errorf("blkback %s: multi-queue-num-queues %d, 1 to %d offered: %w", b.Name(), nq, max(1, cfg.MaxQueues), wire.ErrMalformed)
	}
	order := uint64(0)
	if v, err := b.ReadFrontendUint(ctx, "ring-page-order", 32); err == nil {
		order = v
	} else if !errors.Is(err, wire.ErrNotExist) {
		return nil, err
	}
	if order > uint64(cfg.MaxRingOrder) {
		return nil, fmt.Errorf("blkback %s: ring-page-order %d, at most %d offered: %w", b.Name(), order, cfg.MaxRingOrder, wire.ErrMalformed)
	}
	proto, err := b.ReadFrontend(ctx, "protocol")
	if err != nil && !errors.Is(err, wire.ErrNotExist) {
		return nil, err
	}
	if p := strings.TrimSpace(proto); err == nil && p != blkif.Protocol {
		return nil, fmt.Errorf("blkback %s: protocol %q not supported: %w", b.Name(), p, wire.ErrMalformed)
	}
	fp, err := b.FrontendFlag(ctx, "feature-persistent")
	if err != nil {
		return nil, err
	}
	// Every queue's keys are read before anything is mapped.
	type ringKeys struct {
		refs []gnttab.Ref
		port evtchn.Port
	}
	keys := make([]ringKeys, nq)
	for q := range keys {
		dir := ""
		if nq > 1 {
			dir = "queue-" + strconv.Itoa(q) + "/"
		}
		refs := make([]gnttab.Ref, 1<<order)
		for i := range refs {
			key := dir + "ring-ref"
			if order > 0 {
				key += strconv.Itoa(i)
			}
			v, err := b.ReadFrontendUint(ctx, key, 32)
			if err != nil {
				return nil, err
			}
			refs[i] = gnttab.Ref(v)
		}
		port, err := b.ReadFrontendUint(ctx, dir+"event-channel", 32)
		if err != nil {
			return nil, err
		}
		keys[q] = ringKeys{refs, evtchn.Port(port)}
	}
	persistent := fp && cfg.Persistent
	var c rings
	for q, k := range keys {
		r, err := s.newConn(q, b.FrontendID, k.refs, k.port, persistent)
		if err != nil {
			return nil, errors.Join(fmt.Errorf("blkback %s: %w", b.Name(), err), c.close())
		}
		c = append(c, r)
	}
	s.count(func(st *Stats) {
		st.Connections++
		st.Queues = len(c)
		st.RingOrder = int(order)
		st.Persistent = persistent
	})
	info := 0
	mode := "w"
	if cfg.ReadOnly {
		info |= blkif.VDiskReadOnly
		mode = "r"
	}
	kvs := []device.KV{
		device.Uint("sectors", uint64(cfg.Size)/blkif.SectorSize),
		device.Uint("sector-size", uint32(cfg.SectorSize)),
		device.Uint("physical-sector-size", uint32(cfg.PhysicalSectorSize)),
		device.Uint("info", uint32(info)),
		{Key: "mode", Value: mode},
	}
	if err := b.Publish(ctx, kvs, device.Connected); err != nil {
		return nil, errors.Join(err, c.close())
	}
	return c, nil
}
