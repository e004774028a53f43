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
// multi-queue, multi-queue-num-queues.
//
// Multi-queue: the NIC uses min(multi-queue-max-queues,
// Config.MaxQueues) queues (one if either is zero or one; an offer that
// is not a decimal from 1 to 65535 fails with ErrNegotiation). With one
// queue the ring keys stay in the device directory, as Linux writes them
// (multi-queue-num-queues=1 if the backend offers queues, or if a
// reconnection follows one with several). With N > 1 it writes
// multi-queue-num-queues=N and, for each queue, queue-<i>/tx-ring-ref,
// queue-<i>/rx-ring-ref and queue-<i>/event-channel (or
// queue-<i>/event-channel-tx and -rx); the feature keys stay at the top.
// Each queue has its own rings, pools and event channels. Send puts each
// frame on the queue its flow hashes to (netif.FlowHash: addresses,
// protocol, ports), so a flow's frames stay in order; Receive hands over
// the frames of every queue (each queue's in order), woken by one
// goroutine per queue waiting on its receive port. Stats counts frames
// per queue.
//
// # Rings (ring.go, tx.go, rx.go)
//
// Each ring (two per queue) is one granted page. Packet buffers come from two pools of
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
