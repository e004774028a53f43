// Package netback is a backend of Xen's network split driver in portable
// Go, for host tests of netfront and later for a user-space backend in a
// driver domain. It serves one frontend: it runs the backend's side of the
// xenstore handshake (device.Backend), maps the frontend's two ring pages,
// binds its event channel(s), copies transmitted packets out of the
// frontend's grants and received packets into them (grant copy: rx-copy
// mode), and hands frames to the user.
//
// Offered: feature-rx-copy, and, as Options say, feature-sg,
// feature-gso-tcpv4/-tcpv6, feature-split-event-channels and
// multi-queue-max-queues. A frontend that writes multi-queue-num-queues
// (1 up to the offer; more, zero or a malformed value is refused with
// ErrProtocol) publishes each queue's tx-ring-ref, rx-ring-ref and
// event-channel (or event-channel-tx and -rx) under queue-N/, as Linux's
// xen-netback reads them; one queue uses the keys of the device
// directory. Each queue's transmit ring is served by its own goroutine;
// Send puts a frame on the queue its flow hashes to (netif.FlowHash). It follows
// the frontend as Linux's netback does: connects when it is Connected,
// disconnects when it goes Closing or back to Initialising, and goes
// InitWait again for a reconnection.
package netback

import (
	"errors"

	"github.com/gozen-dev/gozen/drivers/netif"
	"github.com/gozen-dev/gozen/evtchn"
	"github.com/gozen-dev/gozen/gnttab"
)

// Frame is one Ethernet frame with its offload metadata.
type Frame struct {
	// Data is the frame.
	Data []byte
	// CsumBlank and DataValidated are the checksum flags (NETTXF_ /
	// NETRXF_csum_blank and data_validated).
	CsumBlank, DataValidated bool
	// GSOType and GSOSize are the GSO extra info (GSONone if none).
	GSOType netif.GSOType
	GSOSize uint16
}

// Options configure a backend.
type Options struct {
	// Events and Grants are the backend domain's services.
	Events evtchn.Events
	Grants gnttab.SharedMemory
	// Offer: feature-sg, feature-gso-tcpv4, feature-gso-tcpv6,
	// feature-split-event-channels; MaxQueues > 0 offers
	// multi-queue-max-queues (the frontend may use up to that many
	// queues).
	SG, GSOTCPv4, GSOTCPv6, SplitEventChannels bool
	MaxQueues                                  int
	// OnFrame is called with every frame the frontend transmits, from
	// the backend's goroutines (one per queue), one at a time; Data is
	// valid only during
	// the call. The connection's teardown waits for a call in progress:
	// an OnFrame that waits must also stop waiting when VIF.Link's
	// channel says the connection changed.
	OnFrame func(Frame)
}

// Errors of this package; they are wrapped with context.
var (
	// ErrProtocol means the frontend broke the protocol; the connection
	// is dropped.
	ErrProtocol = errors.New("netback: frontend protocol violation")
	// ErrNotConnected means no frontend is connected.
	ErrNotConnected = errors.New("netback: not connected")
	// ErrClosed means the backend was closed.
	ErrClosed = errors.New("netback: closed")
)
