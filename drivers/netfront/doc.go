// Package netfront is the frontend of Xen's network split driver (the
// guest's virtual NIC, "vif"), written against the portable interfaces
// evtchn.Events, gnttab.SharedMemory and the xenbus/device model, over the
// shared rings of package ring and the wire format of package netif.
//
// # Negotiation (xs.go)
//
// As Linux's xen-netfront: the MAC address and MTU are read from our
// device directory ("mac", "mtu"); the backend must offer feature-rx-copy;
// its feature-sg, feature-gso-tcpv4/-tcpv6, feature-split-event-channels
// and multi-queue-max-queues are read; we publish tx-ring-ref,
// rx-ring-ref, event-channel (or event-channel-tx and event-channel-rx),
// request-rx-copy=1, feature-rx-notify=1, feature-sg=1,
// feature-gso-tcpv4=1, feature-gso-tcpv6=1 and, when the backend offers
// multi-queue, multi-queue-num-queues=1. One queue is used: with a single
// queue the keys stay in the device directory, as Linux writes them.
//
// # Rings (ring.go, tx.go, rx.go)
//
// Each ring is one granted page. Packet buffers come from two pools of
// pages granted once at connection time and reused: one page per transmit
// ring slot (granted read-only) and one per receive ring slot (granted
// writable). A frame to send is copied into transmit pages, one request
// per page (more_data chains them; a GSO frame carries an extra-info
// slot); a receive request of ring index i always offers receive page
// i mod ring size, so responses are paired with their pages by ring slot,
// and the ids the backend echoes are only checked. Receive is driven by
// the event channel: Receive waits with evtchn.Events.Wait.
//
// # Hostile backends
//
// Everything read from the rings is copied once and checked. A response
// that cannot be right (an unexpected id, data past the page, a chain of
// more than netif.SlotsMin data slots or of more than netif.MaxExtras
// extra-info slots, an unknown extra type, a producer index beyond what
// was requested) breaks the connection with an error wrapping
// ErrProtocol (or ring.ErrCorrupt), returned by Send and Receive until a
// reconnection. A response reporting an error status, or GSO information
// that is not usable, only drops that frame and is counted in Stats.
//
// # Frames and ownership
//
// Send copies the frames' bytes into granted pages before it returns: the
// caller keeps its buffers. Receive lends each frame to its callback: the
// Frame's Data points into the receive page (one-slot frames, no copy) or
// into the NIC's reassembly buffer (multi-slot frames, one copy) and is
// valid only until the callback returns; the page is then offered to the
// backend again.
package netfront
