package netfront

import (
	"errors"

	"github.com/gozen-dev/gozen/drivers/netif"
)

// Flags describe the checksum state of a frame.
type Flags uint8

const (
	// CsumBlank means the frame's L4 checksum field is not filled in
	// (a partial checksum, Linux's CHECKSUM_PARTIAL). On transmit it asks
	// the backend to complete it; on receive it marks a frame from a
	// local domain, which the stack must accept without verifying the
	// checksum (and complete it if it forwards the frame).
	CsumBlank Flags = 1 << 0
	// DataValidated means the frame's checksums are known to be good
	// (Linux's CHECKSUM_UNNECESSARY).
	DataValidated Flags = 1 << 1
)

// GSO is the segmentation offload information of a frame larger than the
// MTU: the TCP segment size and the type. The zero value means none.
type GSO struct {
	// Type is netif.GSOTCPv4 or netif.GSOTCPv6 (netif.GSONone for none).
	Type netif.GSOType
	// Size is the maximum segment size (the TCP payload of each segment).
	Size uint16
}

// Frame is one Ethernet frame (destination MAC first, no FCS) with its
// offload metadata.
type Frame struct {
	// Data is the frame: 1 to MaxFrameSize bytes. See the package doc for
	// who owns it.
	Data []byte
	// Flags is the checksum state.
	Flags Flags
	// GSO is the segmentation offload information, if any.
	GSO GSO
}

// MaxFrameSize is the largest frame Send takes: the netif packet size
// limit (a uint16).
const MaxFrameSize = netif.MaxTxSize

// Errors of this package; they are wrapped with context.
var (
	// ErrProtocol means the backend broke the netif protocol; the
	// connection is unusable until a reconnection.
	ErrProtocol = errors.New("netfront: backend protocol violation")
	// ErrClosed means the NIC was closed.
	ErrClosed = errors.New("netfront: closed")
	// ErrFrame means a frame given to Send cannot be sent: empty, larger
	// than MaxFrameSize, larger than a page when the backend has no
	// scatter-gather, or with a GSO type the backend does not offer.
	ErrFrame = errors.New("netfront: frame not sendable")
	// ErrNegotiation means the backend or the device directory does not
	// allow a connection (no feature-rx-copy, a malformed mac or mtu...).
	ErrNegotiation = errors.New("netfront: negotiation failed")
)
