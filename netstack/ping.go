package netstack

import (
	"bytes"
	"context"
	"fmt"
	"net/netip"
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/transport/icmp"
	"gvisor.dev/gvisor/pkg/waiter"
)

// Ping sends ICMP echo requests to the IPv4 address dst, one every 500 ms,
// until one is answered or ctx ends, and returns the round-trip time of
// the answered one.
func (st *Stack) Ping(ctx context.Context, dst netip.Addr) (time.Duration, error) {
	if !dst.Is4() {
		return 0, fmt.Errorf("netstack: ping %v: only IPv4", dst)
	}
	var wq waiter.Queue
	ep, terr := st.s.NewEndpoint(icmp.ProtocolNumber4, ipv4.ProtocolNumber, &wq)
	if terr != nil {
		return 0, fmt.Errorf("netstack: ping: %s", terr)
	}
	defer ep.Close()
	we, ch := waiter.NewChannelEntry(waiter.ReadableEvents)
	wq.EventRegister(&we)
	defer wq.EventUnregister(&we)
	to := tcpip.FullAddress{Addr: toAddr(dst)}
	payload := []byte("gozen netstack ping")
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for seq := uint16(1); ; seq++ {
		req := make([]byte, header.ICMPv4MinimumSize+len(payload))
		h := header.ICMPv4(req)
		h.SetType(header.ICMPv4Echo)
		h.SetSequence(seq)
		copy(req[header.ICMPv4MinimumSize:], payload)
		sent := time.Now()
		var r bytes.Reader
		r.Reset(req)
		if _, terr := ep.Write(&r, tcpip.WriteOptions{To: &to}); terr != nil {
			if _, ok := terr.(*tcpip.ErrWouldBlock); !ok {
				return 0, fmt.Errorf("netstack: ping %v: %s", dst, terr)
			}
		}
		for wait := true; wait; {
			var buf bytes.Buffer
			_, terr := ep.Read(&buf, tcpip.ReadOptions{})
			if terr == nil {
				rep := header.ICMPv4(buf.Bytes())
				if len(rep) >= header.ICMPv4MinimumSize && rep.Type() == header.ICMPv4EchoReply && rep.Sequence() == seq {
					return time.Since(sent), nil
				}
				continue
			}
			if _, ok := terr.(*tcpip.ErrWouldBlock); !ok {
				return 0, fmt.Errorf("netstack: ping %v: %s", dst, terr)
			}
			select {
			case <-ch:
			case <-tick.C:
				wait = false
			case <-ctx.Done():
				return 0, fmt.Errorf("netstack: ping %v: %w", dst, ctx.Err())
			}
		}
	}
}
