//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"

	"github.com/gozen-dev/gozen/domid"
	"github.com/gozen-dev/gozen/drivers/netback"
	"github.com/gozen-dev/gozen/network"
	"github.com/gozen-dev/gozen/xenbus/device"
)

// backendMAC is the backend end's Ethernet address, as Xen's vif scripts
// give the backend interface (the guest never sees it on the wire).
var backendMAC = net.HardwareAddr{0xfe, 0xff, 0xff, 0xff, 0xff, 0xff}

// vifHotplug is the vif's nodes as xl's network-attach writes them (the
// backend's feature keys are netback's).
func vifHotplug(c vifConfig, back domid.ID) *hotplug {
	id := strconv.FormatUint(uint64(c.ID), 10)
	mac := c.MAC.String()
	h := &hotplug{
		Class:        "vif",
		BackendClass: c.BackendClass,
		Front:        c.Dom,
		Back:         back,
		ID:           id,
		FrontKeys: []device.KV{
			{Key: "handle", Value: id},
			{Key: "mac", Value: mac},
		},
		BackKeys: []device.KV{
			{Key: "handle", Value: id},
			{Key: "mac", Value: mac},
			{Key: "type", Value: "vif"},
		},
	}
	if c.Bridge != "" {
		h.BackKeys = append(h.BackKeys, device.KV{Key: "bridge", Value: c.Bridge})
	}
	return h
}

// runVIF creates the vif c.Dom sees as vif/<c.ID> with address c.MAC and
// serves it with netback, moving frames between it and tap (the TAP
// device named tapName, one frame per read and write; runVIF closes it),
// until ctx ends or the frontend closes; then it tears the device down
// and prints the counters and the leftovers.
func runVIF(ctx context.Context, e *env, c vifConfig, tap io.ReadWriteCloser, tapName string) error {
	defer tap.Close()
	back, err := homeDomain(e.Store.Home())
	if err != nil {
		return err
	}
	s := &session{env: e, h: vifHotplug(c, back)}
	if err := s.start(ctx); err != nil {
		return err
	}
	wctx, quiet := context.WithCancel(context.WithoutCancel(ctx))
	defer quiet()
	where := "tap " + tapName
	if c.Bridge != "" {
		where += " in bridge " + c.Bridge
	}
	frontClosed, followed := s.follow(wctx, func(st device.State) string {
		if st != device.Connected {
			return ""
		}
		queues := "one queue"
		if c.Queues > 1 {
			queues = fmt.Sprintf("up to %d queues", c.Queues)
		}
		return fmt.Sprintf("connected: mac %s, %s, %s, no scatter-gather, no GSO or checksum offload to the tap (checksums completed in software)", c.MAC, where, queues)
	})
	sctx, stopServe := context.WithCancel(context.WithoutCancel(ctx))
	defer stopServe()
	// Offer no scatter-gather and no GSO: frames cross the TAP device
	// without a virtio-net header, so they must be whole and at most one
	// page (the TAP's MTU of 1500 keeps them so).
	nic, err := network.ServeBackend(sctx, s.b, netback.Options{Events: e.Events, Grants: e.Grants, MaxQueues: c.Queues},
		network.BackendConfig{MAC: backendMAC})
	if err != nil {
		return errors.Join(err, s.teardown(func() error { return nil }, func() { quiet(); followed() }))
	}
	link := &tapLink{nic: nic, tap: tap}
	var wg sync.WaitGroup
	pumpErr := make(chan error, 2)
	for _, pump := range []func(context.Context) error{link.guestToTap, link.tapToGuest} {
		wg.Go(func() {
			pumpErr <- pump(sctx)
		})
	}
	var runErr error
	select {
	case <-ctx.Done():
		s.logf("stopping: %v", context.Cause(ctx))
	case <-frontClosed:
		s.logf("stopping: the frontend closed")
	case <-nic.VIF().Done():
		s.logf("stopping: netback stopped")
	case runErr = <-pumpErr:
		s.logf("stopping: %v", runErr)
	}
	err = s.teardown(func() error {
		stopServe()
		err := nic.Close()
		tap.Close() // wakes tapToGuest
		wg.Wait()
		return err
	}, func() { quiet(); followed() })
	vs, ns := nic.VIF().Stats(), nic.Stats()
	s.logf("stats: %d connections, %d frames from the guest, %d to it (%d tx errors); tap: %d written, %d read, %d checksums completed; dropped: %d to a down link, %d unfixable checksums, %d GSO, %d too big for a page, %d tap writes",
		vs.Connections, vs.TXFrames, vs.RXFrames, vs.TXErrors,
		link.ToTap.Load(), link.FromTap.Load(), link.Filled.Load(),
		ns.TXDropped+ns.RXDropped, link.DroppedBadCsum.Load(), link.DroppedGSO.Load(), link.DroppedBig.Load(), link.DroppedWrite.Load())
	if vs.Queues > 1 {
		s.logf("stats: %d queues, frames from the guest per queue %v, to it %v", vs.Queues, vs.QueueTXFrames, vs.QueueRXFrames)
	}
	for _, err := range nic.VIF().Errors() {
		s.logf("netback: %v", err)
	}
	return errors.Join(runErr, err, s.leftovers())
}
