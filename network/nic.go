// Package network gives a Gozen guest Go's net package over its Xen
// network device: netfront (drivers/netfront) under gVisor's TCP/IP stack
// (package netstack), whose Socket method becomes net.SocketFunc.
//
// The adapter in this file, NIC, is portable and host-tested; Up, which
// finds the guest's first vif, builds the stack from the command line
// (netstack.ParseArgs: ip=, gw=, dns=, else DHCP) and installs it in
// package net, builds only for the guest.
//
// Link (link.go) keeps one stack over whichever vif is up: it follows a
// device.Bus, goes down when its vif is detached (Send drops, Receive
// waits) and moves to the next vif that connects (xl network-attach).
//
// BackendNIC (backend.go) is the other end of a vif as a netstack.NIC:
// netback (drivers/netback) under a stack, for a network backend in user
// space (a driver domain) and for host tests of the whole path, guest
// stack to netfront to netback to backend stack, without Xen.
package network

import (
	"context"
	"errors"
	"fmt"
	"net"

	"github.com/gozen-dev/gozen/drivers/netfront"
	"github.com/gozen-dev/gozen/drivers/netif"
	"github.com/gozen-dev/gozen/drivers/ring"
	"github.com/gozen-dev/gozen/netstack"
)

// NIC makes a netfront NIC a netstack.NIC. Transmit frames given in pieces
// are gathered into one buffer (netfront copies each frame into its granted
// pages once more); received frames are copied once out of the pages the
// backend may still write, into buffers that stay valid until the next
// Receive, as netstack.NIC asks.
type NIC struct {
	nf    *netfront.NIC
	txBuf []byte
	rx    [][]byte // one buffer per frame slot of the last Receive
}

// NewNIC adapts nf.
func NewNIC(nf *netfront.NIC) *NIC { return &NIC{nf: nf} }

// MAC returns the vif's MAC address.
func (n *NIC) MAC() net.HardwareAddr { return n.nf.MAC() }

// MTU returns the vif's MTU.
func (n *NIC) MTU() int { return n.nf.MTU() }

// Offloads says what the backend does for transmitted frames: netback
// always completes checksum-blank frames; segmentation as negotiated.
func (n *NIC) Offloads() netstack.Offloads {
	f := n.nf.Features()
	return netstack.Offloads{
		TXChecksum: true,
		GSOTCPv4:   f.GSOTCPv4 && f.SG,
		GSOTCPv6:   f.GSOTCPv6 && f.SG,
		GSOMaxSize: netfront.MaxFrameSize - 14,
	}
}

// Send transmits frames (see netstack.NIC).
func (n *NIC) Send(ctx context.Context, frames ...netstack.Frame) error {
	out := make([]netfront.Frame, 0, len(frames))
	// one gather buffer for the call: frames are copied back to back
	total := 0
	for i := range frames {
		if len(frames[i].Data) > 1 {
			total += frames[i].Len()
		}
	}
	if cap(n.txBuf) < total {
		n.txBuf = make([]byte, 0, total)
	}
	buf := n.txBuf[:0]
	for i := range frames {
		f := &frames[i]
		var data []byte
		switch len(f.Data) {
		case 0:
			continue
		case 1:
			data = f.Data[0]
		default:
			start := len(buf)
			for _, p := range f.Data {
				buf = append(buf, p...)
			}
			data = buf[start:]
		}
		nf := netfront.Frame{Data: data}
		if f.Flags&netstack.ChecksumBlank != 0 {
			nf.Flags |= netfront.CsumBlank
		}
		if f.Flags&netstack.DataValidated != 0 {
			nf.Flags |= netfront.DataValidated
		}
		switch f.GSO.Type {
		case netstack.GSOTCPv4:
			nf.GSO = netfront.GSO{Type: netif.GSOTCPv4, Size: f.GSO.Size}
		case netstack.GSOTCPv6:
			nf.GSO = netfront.GSO{Type: netif.GSOTCPv6, Size: f.GSO.Size}
		}
		out = append(out, nf)
	}
	return linkErr(n.nf.Send(ctx, out...))
}

// Receive waits for frames and copies at most len(frames) of them into
// buffers owned by n (see netstack.NIC).
func (n *NIC) Receive(ctx context.Context, frames []netstack.Frame) (int, error) {
	if len(frames) == 0 {
		return 0, nil
	}
	for len(n.rx) < len(frames) {
		n.rx = append(n.rx, nil)
	}
	i := 0
	_, err := n.nf.Receive(ctx, len(frames), func(f netfront.Frame) error {
		b := append(n.rx[i][:0], f.Data...)
		n.rx[i] = b
		var fl netstack.Flags
		if f.Flags&netfront.CsumBlank != 0 {
			fl |= netstack.ChecksumBlank
		}
		if f.Flags&netfront.DataValidated != 0 {
			fl |= netstack.DataValidated
		}
		var g netstack.GSO
		switch f.GSO.Type {
		case netif.GSOTCPv4:
			g = netstack.GSO{Type: netstack.GSOTCPv4, Size: f.GSO.Size}
		case netif.GSOTCPv6:
			g = netstack.GSO{Type: netstack.GSOTCPv6, Size: f.GSO.Size}
		}
		frames[i] = netstack.Frame{Data: [][]byte{b}, Flags: fl, GSO: g}
		i++
		return nil
	})
	if i > 0 {
		return i, nil
	}
	return 0, linkErr(err)
}

// linkErr marks the errors after which the vif never works again as
// netstack.ErrNICClosed, so the stack stops using it instead of retrying.
func linkErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, netfront.ErrClosed), errors.Is(err, netfront.ErrProtocol), errors.Is(err, ring.ErrCorrupt):
		return fmt.Errorf("network: %w: %w", netstack.ErrNICClosed, err)
	}
	return fmt.Errorf("network: %w", err)
}
