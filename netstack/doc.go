// Package netstack gives Gozen guests TCP/IP under Go's net package: gVisor's
// network stack over a frame device, with DHCP or static addressing.
//
// Layering, bottom up:
//
//	netfront (or any NIC)   Ethernet frames in and out: the NIC interface
//	  │                     (Send, Receive, per-frame checksum flags and GSO)
//	link endpoint           gVisor stack.LinkEndpoint over the NIC: Ethernet
//	  │                     header, ChecksumBlank and GSO on the way out, one
//	  │                     goroutine blocked in NIC.Receive on the way in,
//	  │                     checksum verification of unflagged frames
//	gVisor tcpip/stack      ARP, IPv4, IPv6 (optional), ICMP, TCP, UDP
//	  │
//	gonet                   net.Conn, net.Listener, net.PacketConn
//	  │
//	Stack.Socket            has net.SocketFunc's signature (tamago-go)
//
// A guest application does:
//
//	cfg, err := netstack.ParseArgs(os.Args) // ip=10.0.0.2/24 gw=... dns=..., or DHCP
//	st, err := netstack.New(nic, cfg)       // nic: the netfront device
//	fmt.Println("net:", st.Addressing())    // net: dhcp 10.0.2.15/24 gw 10.0.2.2 dns 10.0.2.3
//	net.SocketFunc = st.Socket
//	net.SetDefaultNS(st.DNS())
//
// after which net.Dial, net.Listen, net.ListenPacket and the resolver run
// over the stack.
//
// Checksums: a NIC that offers TX checksum offload gets TCP and UDP frames
// flagged ChecksumBlank with the pseudo-header sum in the checksum field
// (Linux's CHECKSUM_PARTIAL, netif.h NETTXF_csum_blank); one that also
// offers GSO gets TCP frames of up to 64 KiB with a GSO request (TSO). On
// receive, frames flagged ChecksumBlank or DataValidated (netback's
// dom0-local frames) are accepted as verified; the others are verified by
// the link endpoint (see checksum.go for why there and what it cannot
// check: the transport checksum of fragmented datagrams). Received GSO
// frames are delivered whole, as one large segment.
//
// Package netstack/dhcp is the DHCP client; package netstack/pipenic
// connects two NICs back to back for host tests.
package netstack
