package netstack

import (
	"time"

	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/header"
	"gvisor.dev/gvisor/pkg/tcpip/network/ipv6"
	"gvisor.dev/gvisor/pkg/tcpip/stack"
)

// ndpDispatcher turns gVisor's IPv6 neighbour discovery events (router
// advertisements) into routes of the Stack.
type ndpDispatcher Stack

var _ ipv6.NDPDispatcher = (*ndpDispatcher)(nil)

func (d *ndpDispatcher) setRoute(r tcpip.Route, on bool) {
	st := (*Stack)(d)
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.closed {
		return
	}
	if on {
		st.v6Routes[r] = true
	} else {
		delete(st.v6Routes, r)
	}
	st.applyRoutesLocked()
}

// OnDuplicateAddressDetectionResult implements ipv6.NDPDispatcher.
func (d *ndpDispatcher) OnDuplicateAddressDetectionResult(tcpip.NICID, tcpip.Address, stack.DADResult) {
}

// OnOffLinkRouteUpdated implements ipv6.NDPDispatcher: a router.
func (d *ndpDispatcher) OnOffLinkRouteUpdated(nic tcpip.NICID, dst tcpip.Subnet, router tcpip.Address, _ header.NDPRoutePreference) {
	d.setRoute(tcpip.Route{Destination: dst, Gateway: router, NIC: nic}, true)
}

// OnOffLinkRouteInvalidated implements ipv6.NDPDispatcher.
func (d *ndpDispatcher) OnOffLinkRouteInvalidated(nic tcpip.NICID, dst tcpip.Subnet, router tcpip.Address) {
	d.setRoute(tcpip.Route{Destination: dst, Gateway: router, NIC: nic}, false)
}

// OnOnLinkPrefixDiscovered implements ipv6.NDPDispatcher.
func (d *ndpDispatcher) OnOnLinkPrefixDiscovered(nic tcpip.NICID, p tcpip.Subnet) {
	d.setRoute(tcpip.Route{Destination: p, NIC: nic}, true)
}

// OnOnLinkPrefixInvalidated implements ipv6.NDPDispatcher.
func (d *ndpDispatcher) OnOnLinkPrefixInvalidated(nic tcpip.NICID, p tcpip.Subnet) {
	d.setRoute(tcpip.Route{Destination: p, NIC: nic}, false)
}

// OnAutoGenAddress implements ipv6.NDPDispatcher.
func (d *ndpDispatcher) OnAutoGenAddress(tcpip.NICID, tcpip.AddressWithPrefix) stack.AddressDispatcher {
	return nil
}

// OnAutoGenAddressDeprecated implements ipv6.NDPDispatcher.
func (d *ndpDispatcher) OnAutoGenAddressDeprecated(tcpip.NICID, tcpip.AddressWithPrefix) {}

// OnAutoGenAddressInvalidated implements ipv6.NDPDispatcher.
func (d *ndpDispatcher) OnAutoGenAddressInvalidated(tcpip.NICID, tcpip.AddressWithPrefix) {}

// OnRecursiveDNSServerOption implements ipv6.NDPDispatcher; RDNSS is not
// used (name servers come from DHCP or the static configuration).
func (d *ndpDispatcher) OnRecursiveDNSServerOption(tcpip.NICID, []tcpip.Address, time.Duration) {}

// OnDNSSearchListOption implements ipv6.NDPDispatcher.
func (d *ndpDispatcher) OnDNSSearchListOption(tcpip.NICID, []string, time.Duration) {}

// OnDHCPv6Configuration implements ipv6.NDPDispatcher; DHCPv6 is not run.
func (d *ndpDispatcher) OnDHCPv6Configuration(tcpip.NICID, ipv6.DHCPv6ConfigurationFromNDPRA) {
}
