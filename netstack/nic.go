package netstack

import (
	"context"
	"errors"
	"fmt"
	"net"
)

// NIC is the frame device under a Stack: an Ethernet interface such as a
// Xen netfront. The link endpoint of a Stack calls Send from the stack's
// goroutines (never two calls at once) and Receive from one goroutine of its
// own that blocks in it; the NIC drives reception by returning from Receive,
// nothing polls.
type NIC interface {
	// MAC is the interface's Ethernet address.
	MAC() net.HardwareAddr
	// MTU is the largest IP packet (without Ethernet header) of a frame
	// that carries no GSO request, typically 1500.
	MTU() int
	// Offloads says what the NIC does for frames passed to Send.
	Offloads() Offloads
	// Send transmits frames. Their Data stays valid only until Send
	// returns: the NIC copies it (into its ring's pages) or finishes with it
	// before returning. Send may block while the NIC has no room, until ctx
	// is done; an error means the frames not yet taken were dropped.
	Send(ctx context.Context, frames ...Frame) error
	// Receive blocks until at least one frame has arrived or ctx is done,
	// then fills frames[:n] and returns n >= 1. The Data of the returned
	// frames belongs to the NIC and stays valid until the next call of
	// Receive. An error that wraps ErrNICClosed ends reception for good;
	// other errors are counted and reception goes on.
	Receive(ctx context.Context, frames []Frame) (n int, err error)
}

// ErrNICClosed is wrapped by a NIC's Receive or Send error once the NIC is
// gone for good (closed or disconnected).
var ErrNICClosed = errors.New("netstack: NIC closed")

// Frame is one Ethernet frame, from its Ethernet header on, possibly in
// several pieces (scatter-gather): the frame is the concatenation of Data.
type Frame struct {
	// Data holds the frame's bytes.
	Data [][]byte
	// Flags carries the checksum state of the frame.
	Flags Flags
	// GSO, when its Type is not GSONone, asks the NIC (on Send) to cut
	// the TCP payload into segments of GSO.Size bytes, or tells (on
	// Receive) that the frame holds several coalesced segments.
	GSO GSO
}

// Len returns the frame's length in bytes.
func (f *Frame) Len() int {
	n := 0
	for _, d := range f.Data {
		n += len(d)
	}
	return n
}

// Flags is a set of per-frame checksum flags (netif.h's NETTXF_/NETRXF_
// csum_blank and data_validated).
type Flags uint8

const (
	// ChecksumBlank says the sender left the TCP or UDP checksum to be
	// filled: the checksum field holds only the pseudo-header sum
	// (CHECKSUM_PARTIAL in Linux). On Send the NIC (or its backend) fills
	// it; on Receive the frame came from a trusted local sender and its
	// data is known good.
	ChecksumBlank Flags = 1 << iota
	// DataValidated says the frame's checksums were already verified (on
	// Receive) or need no verification.
	DataValidated
)

// String names the set flags.
func (f Flags) String() string {
	s := ""
	if f&ChecksumBlank != 0 {
		s += "|csum_blank"
	}
	if f&DataValidated != 0 {
		s += "|data_validated"
	}
	if rest := f &^ (ChecksumBlank | DataValidated); rest != 0 {
		s += fmt.Sprintf("|%#x", uint8(rest))
	}
	if s == "" {
		return "0"
	}
	return s[1:]
}

// GSOType is the kind of segmentation a GSO frame asks for.
type GSOType uint8

const (
	// GSONone marks an ordinary frame.
	GSONone GSOType = iota
	// GSOTCPv4 is TCP over IPv4 segmentation (netif.h XEN_NETIF_GSO_TYPE_TCPV4).
	GSOTCPv4
	// GSOTCPv6 is TCP over IPv6 segmentation (XEN_NETIF_GSO_TYPE_TCPV6).
	GSOTCPv6
)

// String names the type.
func (t GSOType) String() string {
	switch t {
	case GSONone:
		return "none"
	case GSOTCPv4:
		return "tcpv4"
	case GSOTCPv6:
		return "tcpv6"
	}
	return fmt.Sprintf("GSOType(%d)", uint8(t))
}

// GSO describes a large TCP frame to be segmented (TSO).
type GSO struct {
	// Type is the segmentation kind; GSONone for ordinary frames.
	Type GSOType
	// Size is the TCP payload size of each segment (the MSS).
	Size uint16
}

// Offloads is what a NIC does for frames given to Send.
type Offloads struct {
	// TXChecksum says the NIC accepts ChecksumBlank frames (netback's
	// feature-no-csum-offload is 0). Without it the stack computes every
	// checksum itself.
	TXChecksum bool
	// GSOTCPv4 and GSOTCPv6 say the NIC accepts GSO frames of that type
	// (feature-gso-tcpv4, feature-gso-tcpv6); they need TXChecksum.
	GSOTCPv4, GSOTCPv6 bool
	// GSOMaxSize is the largest GSO frame's IP packet in bytes; 0 means
	// 65535.
	GSOMaxSize int
}
