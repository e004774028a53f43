package netfront

import (
	"fmt"

	"github.com/gozen-dev/gozen/drivers/netif"
	"github.com/gozen-dev/gozen/gnttab"
)

// maxRxSlots bounds the slots of one received packet: the data slots and
// the extra-info slots.
const maxRxSlots = netif.SlotsMin + netif.MaxExtras

// frag is one data fragment of a received packet: a slice of the receive
// page of ring slot index.
type frag struct {
	slot    uint32 // ring index (mod ring size: the page)
	off, n  int
	flagged bool
}

// rxPacket is a received packet parsed from its responses.
type rxPacket struct {
	frags  [netif.SlotsMin]frag
	nfrags int
	slots  int // ring slots the packet used (data and extras)
	size   int
	flags  Flags
	gso    GSO
	// drop, if not nil, says why the packet is dropped without breaking
	// the connection (an error status, unusable GSO information).
	drop error
}

// parseRx parses the packet whose responses start at rsps[0], the
// response of ring index first, in a ring of mask+1 slots whose request
// of index i carries the id i&mask. It reports complete false if the
// packet continues past the responses given (wait for more); it fails
// with an error wrapping ErrProtocol for responses that cannot be right.
func parseRx(p *rxPacket, rsps [][netif.RxResponseSize]byte, first, mask uint32) (complete bool, err error) {
	*p = rxPacket{}
	i := 0
	more := true
	extras := false
	for more {
		if i >= len(rsps) {
			return false, nil
		}
		idx := first + uint32(i)
		r, _ := netif.DecodeRxResponse(rsps[i][:])
		i++
		if want := uint16(idx & mask); r.ID != want {
			return false, fmt.Errorf("%w: rx response %d has id %d, want %d", ErrProtocol, idx, r.ID, want)
		}
		if p.nfrags == netif.SlotsMin {
			return false, fmt.Errorf("%w: rx packet at %d: more than %d data slots", ErrProtocol, first, netif.SlotsMin)
		}
		if r.Flags&netif.RxExtraInfo != 0 {
			if p.nfrags != 0 {
				return false, fmt.Errorf("%w: rx response %d: extra info after the first slot", ErrProtocol, idx)
			}
			extras = true
		}
		if r.Status < 0 {
			if p.drop == nil {
				p.drop = fmt.Errorf("netfront: rx response %d: status %d", idx, r.Status)
			}
		} else if int(r.Offset)+int(r.Status) > gnttab.PageSize {
			return false, fmt.Errorf("%w: rx response %d: %d bytes at offset %d pass the page", ErrProtocol, idx, r.Status, r.Offset)
		} else {
			p.frags[p.nfrags] = frag{slot: idx, off: int(r.Offset), n: int(r.Status)}
			p.size += int(r.Status)
		}
		p.nfrags++
		if p.nfrags == 1 {
			if r.Flags&netif.RxCsumBlank != 0 {
				p.flags |= CsumBlank
			}
			if r.Flags&netif.RxDataValidated != 0 {
				p.flags |= DataValidated
			}
		}
		more = r.Flags&netif.RxMoreData != 0
		// The extra-info slots follow the first response.
		for n := 0; extras; n++ {
			if i >= len(rsps) {
				return false, nil
			}
			if n == netif.MaxExtras {
				return false, fmt.Errorf("%w: rx packet at %d: more than %d extra-info slots", ErrProtocol, first, netif.MaxExtras)
			}
			e, _ := netif.DecodeExtra(rsps[i][:])
			i++
			if e.Type == netif.ExtraNone || e.Type >= netif.ExtraTypeMax {
				return false, fmt.Errorf("%w: rx extra info %d: type %d", ErrProtocol, first+uint32(i-1), e.Type)
			}
			if e.Type == netif.ExtraGSO {
				size, typ, _ := e.GSO()
				switch {
				case size == 0:
					p.dropf("netfront: rx extra info %d: GSO size 0", first+uint32(i-1))
				case typ != netif.GSOTCPv4 && typ != netif.GSOTCPv6:
					p.dropf("netfront: rx extra info %d: GSO type %v", first+uint32(i-1), typ)
				default:
					p.gso = GSO{Type: typ, Size: size}
				}
			}
			extras = e.More()
		}
	}
	// Keep only the data fragments (a dropped slot left a zero entry).
	k := 0
	for _, f := range p.frags[:p.nfrags] {
		if f.n > 0 {
			p.frags[k] = f
			k++
		}
	}
	p.nfrags = k
	p.slots = i
	if p.drop == nil && p.size == 0 {
		p.dropf("netfront: rx packet at %d: empty", first)
	}
	return true, nil
}

func (p *rxPacket) dropf(format string, args ...any) {
	if p.drop == nil {
		p.drop = fmt.Errorf(format, args...)
	}
}
