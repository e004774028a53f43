// Package vchan implements libxenvchan's byte-stream channel between two
// domains in portable Go, over the [evtchn.Events] and [gnttab.SharedMemory]
// interfaces, so the same code runs in a Xen guest and, over the in-heap or
// unix transports, between goroutines or Linux processes.
//
// The wire format is Xen's public io/libxenvchan.h. The server grants a
// control page holding struct vchan_interface: two rings' (cons, prod)
// indexes, their orders, each side's live state and notification-request
// bits, and the grant list of rings too big for the page. The left ring
// carries client-to-server data, the right ring server-to-client. Rings of
// order 10 and 11 live inside the control page at offsets 1024 and 2048;
// orders 12 to 20 are separately granted pages, the left ring's listed
// first. The server advertises the control page's grant reference and an
// unbound event channel in xenstore as <path>/ring-ref and
// <path>/event-channel, conventionally
// /local/domain/<server>/data/vchan/<client>/<port> ([Path]).
//
// A reader that finds its ring empty sets VCHAN_NOTIFY_WRITE in the peer's
// notify byte, looks again, and only then waits on the event channel; a
// writer that finds the ring full does the same with VCHAN_NOTIFY_READ.
// After moving an index each side clears the matching bit in its own
// notify byte and notifies only if it was set, exactly as libxenvchan does.
// Nothing polls.
//
// The peer is not trusted: every field it can write is read once,
// atomically, and checked before use. Indexes that run past the ring,
// impossible orders or live states, or a grant list that does not fit end
// the channel with an error wrapping [ErrProtocol]; they never hang,
// panic or reach outside the shared memory.
//
// A guest builds a server and a client like this, with p :=
// platform.Domain(), ev from p.Events(), mem from p.Grants() and xs =
// vchan.NewXenStore(client, self) with the client from p.Store() (its
// nodes are then readable by
// the client domain only, as libxenvchan makes them):
//
//	cfg := vchan.Config{Events: ev, Memory: mem, Store: xs, Remote: client,
//		Path: vchan.ServerPath(client, "7")}
//	l, err := vchan.Listen(ctx, cfg) // grants, port, xenstore nodes
//	conn, err := l.Accept(ctx)       // waits for the client
//
//	cfg := vchan.Config{Events: ev, Memory: mem, Store: xs, Remote: server,
//		Path: vchan.Path(server, self, "7")}
//	conn, err := vchan.Dial(ctx, cfg)
//
// A [Conn] is a net.Conn. vchan has no half-close: [Conn.CloseWrite] marks
// this end closed, so the peer reads io.EOF after draining, and, as with
// libxenvchan, the peer's further writes fail.
package vchan
