//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sync/atomic"

	"github.com/gozen-dev/gozen/gnttab"
	"github.com/gozen-dev/gozen/netstack"
)

// maxTapFrame is the largest frame read from the TAP device: a 64 KiB
// packet with its Ethernet and VLAN headers.
const maxTapFrame = 65536 + 18

// maxGuestFrame is the largest frame given to the guest: one page, since
// the backend offers no scatter-gather.
const maxGuestFrame = gnttab.PageSize

// frameNIC is what the link needs of the guest's side (a
// network.BackendNIC over netback).
type frameNIC interface {
	Receive(ctx context.Context, frames []netstack.Frame) (int, error)
	Send(ctx context.Context, frames ...netstack.Frame) error
}

// tapLink moves frames between the guest's vif and a TAP device opened
// with IFF_TAP|IFF_NO_PI, where each read returns one whole frame and
// each write sends one (no packet-information or virtio-net header: no
// offload metadata crosses). Frames from the guest marked checksum-blank
// get their TCP or UDP checksum filled in before they reach the TAP;
// frames from the TAP carry full checksums (the host's stack completes
// them for a TAP without offloads).
type tapLink struct {
	nic frameNIC
	tap io.ReadWriter

	// ToTap counts frames written to the TAP device, FromTap frames read
	// from it and given to the guest; Filled checksums completed.
	ToTap, FromTap, Filled atomic.Uint64
	// DroppedBadCsum counts checksum-blank frames whose checksum could not
	// be completed, DroppedGSO GSO frames from the guest (not offered),
	// DroppedBig frames from the TAP larger than maxGuestFrame,
	// DroppedWrite frames the TAP refused (e.g. the link is down).
	DroppedBadCsum, DroppedGSO, DroppedBig, DroppedWrite atomic.Uint64
}

// guestToTap copies the guest's frames to the TAP device until ctx ends
// or the NIC is closed.
func (l *tapLink) guestToTap(ctx context.Context) error {
	frames := make([]netstack.Frame, 64)
	for {
		n, err := l.nic.Receive(ctx, frames)
		if err != nil {
			return fmt.Errorf("gozen-backend: receiving from the guest: %w", err)
		}
		for _, f := range frames[:n] {
			if f.GSO.Type != netstack.GSONone {
				l.DroppedGSO.Add(1)
				continue
			}
			if len(f.Data) != 1 {
				continue // BackendNIC hands one buffer per frame
			}
			data := f.Data[0]
			if f.Flags&netstack.ChecksumBlank != 0 {
				if completeChecksum(data) != nil {
					l.DroppedBadCsum.Add(1)
					continue
				}
				l.Filled.Add(1)
			}
			if _, err := l.tap.Write(data); err != nil {
				if errors.Is(err, os.ErrClosed) || errors.Is(err, io.ErrClosedPipe) {
					return fmt.Errorf("gozen-backend: writing to the TAP device: %w", err)
				}
				l.DroppedWrite.Add(1)
				continue
			}
			l.ToTap.Add(1)
		}
	}
}

// tapToGuest copies the TAP device's frames to the guest until the TAP
// device is closed (or fails) or the NIC is.
func (l *tapLink) tapToGuest(ctx context.Context) error {
	buf := make([]byte, maxTapFrame)
	for {
		n, err := l.tap.Read(buf)
		if err != nil {
			return fmt.Errorf("gozen-backend: reading the TAP device: %w", err)
		}
		if n == 0 {
			continue
		}
		if n > maxGuestFrame {
			l.DroppedBig.Add(1)
			continue
		}
		if err := l.nic.Send(ctx, netstack.Frame{Data: [][]byte{buf[:n]}}); err != nil {
			return fmt.Errorf("gozen-backend: sending to the guest: %w", err)
		}
		l.FromTap.Add(1)
	}
}
