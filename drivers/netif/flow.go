package netif

import "encoding/binary"

// FlowHash returns a hash of an Ethernet frame's flow, for spreading
// frames over the queues of a multi-queue vif so that the frames of one
// flow stay on one queue, in order: the IPv4 or IPv6 addresses and
// protocol and, for TCP, UDP, SCTP and UDP-Lite, the ports (not for IPv4
// fragments after the first, nor for packets whose first IPv6 next header
// is an extension header: those hash by addresses and protocol only). One
// 802.1Q or 802.1ad tag is skipped. Other frames (ARP...) hash to 0. The
// frame is untrusted: any bytes give a hash, nothing is read past its end.
func FlowHash(frame []byte) uint32 {
	const (
		etherIPv4 = 0x0800
		etherIPv6 = 0x86dd
		etherVLAN = 0x8100
		etherQinQ = 0x88a8
	)
	if len(frame) < 14 {
		return 0
	}
	et := binary.BigEndian.Uint16(frame[12:])
	p := frame[14:]
	if (et == etherVLAN || et == etherQinQ) && len(p) >= 4 {
		et = binary.BigEndian.Uint16(p[2:])
		p = p[4:]
	}
	var addrs []byte
	var proto byte
	var l4 []byte
	switch et {
	case etherIPv4:
		if len(p) < 20 || p[0]>>4 != 4 {
			return 0
		}
		ihl := int(p[0]&15) * 4
		if ihl < 20 || len(p) < ihl {
			return 0
		}
		addrs, proto = p[12:20], p[9]
		if binary.BigEndian.Uint16(p[6:])&0x1fff == 0 { // first fragment or whole
			l4 = p[ihl:]
		}
	case etherIPv6:
		if len(p) < 40 || p[0]>>4 != 6 {
			return 0
		}
		addrs, proto, l4 = p[8:40], p[6], p[40:]
	default:
		return 0
	}
	// FNV-1a over the addresses, the protocol and the ports.
	h := uint32(2166136261)
	mix := func(b byte) { h = (h ^ uint32(b)) * 16777619 }
	for _, b := range addrs {
		mix(b)
	}
	mix(proto)
	switch proto {
	case 6, 17, 132, 136: // TCP, UDP, SCTP, UDP-Lite
		if len(l4) >= 4 {
			for _, b := range l4[:4] {
				mix(b)
			}
		}
	}
	return h
}
