package netfront

import (
	"testing"

	"github.com/gozen-dev/gozen/drivers/netif"
	"github.com/gozen-dev/gozen/gnttab"
)

// FuzzParseRx feeds arbitrary response slots to the receive assembly:
// it must never panic, and a complete packet must stay inside its pages
// and its bounds.
func FuzzParseRx(f *testing.F) {
	f.Add([]byte{0, 0, 0, 0, 0, 0, 100, 0}, uint32(0))
	f.Add([]byte{0, 0, 0, 0, 12, 0, 100, 0, 1, 0, 0xa8, 5, 1, 0, 0, 0, 2, 0, 0, 0, 0, 0, 50, 0}, uint32(0))
	f.Add([]byte{255, 0, 0, 0, 4, 0, 0, 16}, uint32(255))
	f.Fuzz(func(t *testing.T, b []byte, first uint32) {
		const mask = 255
		var rsps [][netif.RxResponseSize]byte
		for len(b) >= netif.RxResponseSize && len(rsps) < 40 {
			var r [netif.RxResponseSize]byte
			copy(r[:], b)
			rsps = append(rsps, r)
			b = b[netif.RxResponseSize:]
		}
		var p rxPacket
		complete, err := parseRx(&p, rsps, first, mask)
		if err != nil || !complete {
			return
		}
		if p.slots > len(rsps) || p.slots > maxRxSlots || p.nfrags > netif.SlotsMin {
			t.Fatalf("packet of %d slots, %d frags from %d responses", p.slots, p.nfrags, len(rsps))
		}
		size := 0
		for _, fr := range p.frags[:p.nfrags] {
			if fr.off < 0 || fr.n <= 0 || fr.off+fr.n > gnttab.PageSize || fr.slot-first >= uint32(p.slots) {
				t.Fatalf("fragment %+v", fr)
			}
			size += fr.n
		}
		if p.drop == nil && (size != p.size || size == 0) {
			t.Fatalf("size %d, fragments %d", p.size, size)
		}
		if p.drop == nil && p.gso.Type != netif.GSONone && p.gso.Size == 0 {
			t.Fatalf("gso %+v", p.gso)
		}
	})
}
