package vchan

import (
	"context"
	"encoding/binary"
	"testing"

	"github.com/gozen-dev/gozen/domid"
	"github.com/gozen-dev/gozen/evtchn"
	"github.com/gozen-dev/gozen/gnttab"
)

// nopEvents accepts notifications and never wakes anyone.
type nopEvents struct{}

func (nopEvents) AllocUnbound(domid.ID) (evtchn.Port, error)                 { return 1, nil }
func (nopEvents) BindInterdomain(domid.ID, evtchn.Port) (evtchn.Port, error) { return 1, nil }
func (nopEvents) Notify(evtchn.Port) error                                   { return nil }
func (nopEvents) Close(evtchn.Port) error                                    { return nil }
func (nopEvents) Wait(ctx context.Context, _ evtchn.Port, _ evtchn.Generation) (evtchn.Generation, error) {
	<-ctx.Done()
	return 0, ctx.Err()
}

// seedPage returns a control page as a libxenvchan server would write it.
func seedPage(left, right int, lprod, rprod uint32) []byte {
	b := make([]byte, gnttab.PageSize)
	ne := binary.NativeEndian
	ne.PutUint32(b[offLeftProd:], lprod)
	ne.PutUint32(b[offRightProd:], rprod)
	ne.PutUint16(b[offOrders:], uint16(left))
	ne.PutUint16(b[offOrders+2:], uint16(right))
	b[offFlags+flagCliLive], b[offFlags+flagSrvLive], b[offFlags+flagCliNotify] = liveWaiting, liveOpen, notifyWrite
	for i := range ringPages(left) + ringPages(right) {
		ne.PutUint32(b[offGrants+4*i:], uint32(100+i))
	}
	return b
}

// FuzzSharedPage feeds arbitrary control pages to the client's decoder and
// then to the ring accessors, as a hostile server could. Nothing may
// panic, index out of range, or report more data or space than the ring
// holds.
func FuzzSharedPage(f *testing.F) {
	f.Add(seedPage(10, 11, 0, 0), uint32(0), uint32(0), []byte("hello"))
	f.Add(seedPage(11, 10, 5, 9), uint32(1000), uint32(3), []byte("x"))
	f.Add(seedPage(12, 16, 0xfffffff0, 0x10), uint32(0xffffff00), uint32(7), make([]byte, 300))
	f.Add(seedPage(20, 20, 1<<20, 0), uint32(1), uint32(1<<20), make([]byte, 5000))
	f.Add(seedPage(20, 10, 0, 0), uint32(0), uint32(0), []byte{})
	f.Add(seedPage(9, 21, 0, 0), uint32(0), uint32(0), []byte{})
	f.Add([]byte{}, uint32(0), uint32(0), []byte{})
	f.Fuzz(func(t *testing.T, data []byte, peerCons, peerProd uint32, msg []byte) {
		page := make([]byte, gnttab.PageSize)
		copy(page, data)
		sh, err := newShared(page)
		if err != nil {
			t.Fatal(err)
		}
		l, err := readLayout(sh)
		if err != nil {
			if !isProtocol(err) {
				t.Fatalf("readLayout error %v does not wrap ErrProtocol", err)
			}
			return
		}
		if len(l.leftGrants) != ringPages(l.leftOrder) || len(l.rightGrants) != ringPages(l.rightOrder) {
			t.Fatalf("layout %+v: grant counts do not match orders", l)
		}
		buf := func(order int) []byte {
			if off, in := inPageOffset(order); in {
				if off+1<<order > len(page) {
					t.Fatalf("in-page ring of order %d at %d overruns the page", order, off)
				}
				return page[off:]
			}
			return make([]byte, 1<<order)
		}
		c := newConn(Config{Events: nopEvents{}}, false, sh)
		c.wr = newRingView(buf(l.leftOrder), l.leftOrder, offLeftProd, offLeftCons)
		c.rd = newRingView(buf(l.rightOrder), l.rightOrder, offRightProd, offRightCons)
		c.wprod = sh.load(offLeftProd)
		c.rcons = sh.load(offRightCons)
		// The peer moves its indexes to arbitrary values.
		sh.store(offLeftCons, peerCons)
		sh.store(offRightProd, peerProd)
		if n, err := c.readable(); err == nil {
			if n > c.rd.size {
				t.Fatalf("readable %d > ring %d", n, c.rd.size)
			}
			got := make([]byte, len(msg))
			if n > 0 && len(got) > 0 {
				if k := c.recv(got, n); k > len(got) || uint32(k) > n {
					t.Fatalf("recv returned %d of %d", k, n)
				}
			}
		} else if !isProtocol(err) {
			t.Fatal(err)
		}
		if n, err := c.writable(); err == nil {
			if n > c.wr.size {
				t.Fatalf("writable %d > ring %d", n, c.wr.size)
			}
			if k := min(n, uint32(len(msg))); k > 0 {
				if err := c.send(msg[:k]); err != nil {
					t.Fatal(err)
				}
			}
		} else if !isProtocol(err) {
			t.Fatal(err)
		}
		if _, err := c.peerState(); err != nil && !isProtocol(err) {
			t.Fatal(err)
		}
	})
}
