package netback

import (
	"errors"
	"testing"

	"github.com/gozen-dev/gozen/drivers/netif"
)

// FuzzTxPacket feeds arbitrary transmit request slots to the packet
// assembly: no panic, bounded chains, and a complete packet starts with a
// data slot.
func FuzzTxPacket(f *testing.F) {
	f.Add([]byte{1, 0, 0, 0, 0, 0, 12, 0, 0, 0, 0xdc, 5, 1, 0, 0xa8, 5, 1, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 1, 0, 100, 0})
	f.Add([]byte{1, 0, 0, 0, 0, 0, 4, 0, 0, 0, 0xdc, 5})
	f.Fuzz(func(t *testing.T, b []byte) {
		var p txPacket
		for len(b) >= netif.TxRequestSize {
			done, err := p.add(b[:netif.TxRequestSize])
			b = b[netif.TxRequestSize:]
			if err != nil {
				if !errors.Is(err, ErrProtocol) {
					t.Fatalf("error %v", err)
				}
				return
			}
			if p.data > netif.SlotsMin || p.extras > netif.MaxExtras || len(p.slots) > netif.SlotsMin+netif.MaxExtras {
				t.Fatalf("packet of %d data, %d extra slots", p.data, p.extras)
			}
			if done {
				if p.slots[0].extra {
					t.Fatal("packet starts with an extra slot")
				}
				p.reset()
			}
		}
	})
}
