package netstack

import (
	"bytes"
	"context"
	"errors"
	"net"
	"time"

	"github.com/gozen-dev/gozen/netstack/dhcp"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/arp"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv4"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
)

// verifyTries is how many retransmission intervals a DHCP client waits
// for an answer to the rebind that checks its lease after LinkChanged.
const verifyTries = 4

// LinkChanged tells st that its NIC now reaches a link again, maybe
// another one: a vif was detached and a new one attached (see
// network.Link), a cable moved. The stack takes the NIC's MAC again (a
// new vif usually has a new one), forgets its neighbours (the ARP and NDP
// caches), announces its IPv4 address with a gratuitous ARP so that peers
// learn the MAC, and, with DHCP, checks its lease at once instead of at
// T1 (RFC 2131 section 3.7: the client may have moved): it rebinds for up
// to four retransmission intervals; an ACK extends the lease, a NAK drops
// the address and starts over with DISCOVER, silence keeps the lease. A
// lease taken with another MAC is dropped and a new one acquired.
// Connections stay open: TCP retransmits what the link lost meanwhile.
func (st *Stack) LinkChanged() {
	st.mu.Lock()
	closed, v4 := st.closed, st.v4
	st.mu.Unlock()
	if closed {
		return
	}
	if mac := st.link.nic.MAC(); len(mac) == 6 && mac[0]&1 == 0 {
		st.s.SetNICAddress(nicID, tcpip.LinkAddress(mac))
	}
	st.s.ClearNeighbors(nicID, ipv4.ProtocolNumber)
	if st.cfg.IPv6 {
		st.s.ClearNeighbors(nicID, ipv6.ProtocolNumber)
	}
	if v4.Address.Len() == 4 {
		st.link.sendFrame(gratuitousARP(st.link.LinkAddress(), v4.Address))
	}
	select {
	case st.relink <- struct{}{}:
	default:
	}
}

// gratuitousARP is an ARP request for our own address, broadcast.
func gratuitousARP(mac tcpip.LinkAddress, ip tcpip.Address) []byte {
	b := make([]byte, header.EthernetMinimumSize+header.ARPSize)
	header.Ethernet(b).Encode(&header.EthernetFields{SrcAddr: mac, DstAddr: header.EthernetBroadcastAddress, Type: arp.ProtocolNumber})
	a := header.ARP(b[header.EthernetMinimumSize:])
	a.SetIPv4OverEthernet()
	a.SetOp(header.ARPRequest)
	copy(a.HardwareAddressSender(), mac)
	ipb := ip.As4()
	copy(a.ProtocolAddressSender(), ipb[:])
	copy(a.ProtocolAddressTarget(), ipb[:])
	return b
}

// keepDHCP keeps the lease l (dhcp.Client.Keep) until the stack closes,
// checking it again after every LinkChanged.
func (st *Stack) keepDHCP(c *dhcp.Client, l *dhcp.Lease) {
	relinked := false
	for {
		if !relinked {
			// Keep returns only when the stack closes or the link changed.
			st.untilRelink(func(ctx context.Context) { c.Keep(ctx, l, st.applyLease) })
		}
		if st.ctx.Err() != nil {
			return
		}
		relinked = false
		st.mu.Lock()
		l = st.lease
		st.mu.Unlock()
		if mac := net.HardwareAddr(st.link.LinkAddress()); !bytes.Equal(mac, c.MAC) {
			c.MAC = mac // Keep is not running
			if l != nil {
				l = nil
				st.applyLease(nil)
			}
			continue
		}
		if l == nil {
			continue
		}
		retransmit := st.cfg.DHCPRetransmit
		if retransmit <= 0 {
			retransmit = 4 * time.Second
		}
		deadline := time.Now().Add(verifyTries * retransmit)
		if end := l.Expiry(); end.Before(deadline) {
			deadline = end
		}
		var nl *dhcp.Lease
		var err error
		relinked = st.untilRelink(func(ctx context.Context) { nl, err = c.Rebind(ctx, l, deadline) })
		switch {
		case nl != nil:
			l = nl
			st.applyLease(l)
		case errors.Is(err, dhcp.ErrNak):
			l = nil
			st.applyLease(nil)
		}
	}
}

// untilRelink runs fn with a context that ends when the stack closes or
// LinkChanged is called, and reports whether LinkChanged was.
func (st *Stack) untilRelink(fn func(ctx context.Context)) (relinked bool) {
	ctx, cancel := context.WithCancel(st.ctx)
	defer cancel()
	stop := make(chan struct{})
	res := make(chan bool, 1)
	go func() {
		select {
		case <-st.relink:
			cancel()
			res <- true
		case <-stop:
			res <- false
		}
	}()
	fn(ctx)
	close(stop)
	return <-res
}
