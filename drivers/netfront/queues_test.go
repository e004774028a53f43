package netfront_test

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/gozen-dev/gozen/drivers/netback"
	"github.com/gozen-dev/gozen/drivers/netfront"
	"github.com/gozen-dev/gozen/drivers/netif"
	"github.com/gozen-dev/gozen/evtchn/evheap"
	"github.com/gozen-dev/gozen/gnttab/gntheap"
	"github.com/gozen-dev/gozen/xenbus/device"
	"github.com/gozen-dev/gozen/xenbus/memstore"
	"github.com/gozen-dev/gozen/xenbus/wire"
)

// flowFrame builds frame seq of flow: Ethernet, IPv4 and TCP headers
// whose source port is the flow, then the sequence number, n bytes of
// data and a CRC-32 of everything before it.
func flowFrame(flow, seq, n int) []byte {
	b := make([]byte, 54+8+n+4)
	b[12], b[13] = 0x08, 0x00
	b[14], b[14+9] = 0x45, 6
	copy(b[14+12:], []byte{10, 0, 0, 1, 10, 0, 0, 2})
	binary.BigEndian.PutUint16(b[34:], uint16(10000+flow))
	binary.BigEndian.PutUint16(b[36:], 80)
	binary.BigEndian.PutUint32(b[54:], uint32(flow))
	binary.BigEndian.PutUint32(b[58:], uint32(seq))
	copy(b[62:], payload(n, uint64(flow<<20|seq)))
	binary.BigEndian.PutUint32(b[len(b)-4:], crc32.ChecksumIEEE(b[:len(b)-4]))
	return b
}

// flows checks frames of flowFrame: whole, and each flow's in order.
type flows struct {
	next map[int]int
	n    int
}

func (fl *flows) check(b []byte) error {
	if len(b) < 66 || binary.BigEndian.Uint32(b[len(b)-4:]) != crc32.ChecksumIEEE(b[:len(b)-4]) {
		return fmt.Errorf("frame of %d bytes: bad checksum", len(b))
	}
	flow, seq := int(binary.BigEndian.Uint32(b[54:])), int(binary.BigEndian.Uint32(b[58:]))
	if fl.next == nil {
		fl.next = map[int]int{}
	}
	if seq != fl.next[flow] {
		return fmt.Errorf("flow %d: frame %d, want %d", flow, seq, fl.next[flow])
	}
	fl.next[flow]++
	fl.n++
	return nil
}

// frameSize is the data size of frame seq of flow: small, a page and
// more, up to several pages.
func frameSize(flow, seq int) int { return []int{10, 1400, 4000, 9000, 30000}[(flow+seq)%5] }

// exchange sends frames of nflows flows both ways (the guest's from two
// goroutines, batches of several flows) and checks them.
func (r *rig) exchange(nflows, per int) {
	r.t.Helper()
	errc := make(chan error, 3)
	var wg sync.WaitGroup
	for half := range 2 {
		wg.Go(func() {
			for seq := range per {
				var batch []netfront.Frame
				for flow := half; flow < nflows; flow += 2 {
					batch = append(batch, netfront.Frame{Data: flowFrame(flow, seq, frameSize(flow, seq))})
				}
				if err := r.nic.Send(r.ctx, batch...); err != nil {
					errc <- err
					return
				}
			}
		})
	}
	wg.Go(func() {
		for seq := range per {
			for flow := range nflows {
				if err := r.vif.Send(r.ctx, netback.Frame{Data: flowFrame(flow, seq, frameSize(flow, seq))}); err != nil {
					errc <- err
					return
				}
			}
		}
	})
	var rx flows
	for rx.n < nflows*per {
		if _, err := r.nic.Receive(r.ctx, 0, func(f netfront.Frame) error { return rx.check(f.Data) }); err != nil {
			r.t.Fatal(err)
		}
	}
	var tx flows
	for tx.n < nflows*per {
		if err := tx.check((<-r.frames).Data); err != nil {
			r.t.Fatal(err)
		}
	}
	wg.Wait()
	close(errc)
	for err := range errc {
		r.t.Fatal(err)
	}
}

// TestQueues connects with the backend offering some queues and the
// frontend wanting some: the smaller count is used, each queue with its
// own rings and ports, frames of many flows go over every queue both
// ways, each flow's in order, and nothing is left over.
func TestQueues(t *testing.T) {
	for _, tc := range []struct {
		name         string
		offer, want  int
		queues       int
		split        bool
		numQueuesKey string
	}{
		{"not offered", 0, 4, 1, false, ""},
		{"offered one", 1, 4, 1, false, "1"},
		{"not wanted", 4, 0, 1, true, "1"},
		{"two", 2, 2, 2, false, "2"},
		{"two split", 2, 2, 2, true, "2"},
		{"four", 4, 4, 4, false, "4"},
		{"four split", 4, 4, 4, true, "4"},
		{"backend offers more", 8, 2, 2, false, "2"},
		{"backend offers fewer", 2, 4, 2, true, "2"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, rigOpts{maxQueues: tc.offer, frontQueues: tc.want, split: tc.split})
			ft := r.nic.Features()
			if ft.Queues != tc.queues || ft.MaxQueues != tc.offer {
				t.Fatalf("features %+v", ft)
			}
			// The xenstore layout.
			read := func(k string) string {
				v, err := r.f.Store().ReadString(r.ctx, r.f.Path+"/"+k)
				if err != nil && !errors.Is(err, wire.ErrNotExist) {
					t.Fatal(err)
				}
				return v
			}
			if v := read("multi-queue-num-queues"); v != tc.numQueuesKey {
				t.Errorf("multi-queue-num-queues %q", v)
			}
			evKeys := []string{"event-channel"}
			if tc.split {
				evKeys = []string{"event-channel-tx", "event-channel-rx"}
			}
			flat := tc.queues == 1
			for _, k := range append([]string{"tx-ring-ref", "rx-ring-ref"}, evKeys...) {
				if (read(k) != "") != flat {
					t.Errorf("%s = %q", k, read(k))
				}
				for q := range tc.queues + 1 {
					k := "queue-" + strconv.Itoa(q) + "/" + k
					if (read(k) != "") != (!flat && q < tc.queues) {
						t.Errorf("%s = %q", k, read(k))
					}
				}
			}
			if v := read("request-rx-copy"); v != "1" {
				t.Errorf("request-rx-copy %q", v)
			}
			ports := 2 * tc.queues
			if tc.split {
				ports *= 2
			}
			if s := r.ev.Stats(); s.Ports != ports {
				t.Errorf("%d ports, want %d", s.Ports, ports)
			}

			r.exchange(16, 20)
			st, bs := r.nic.Stats(), r.vif.Stats()
			if len(st.Queues) != tc.queues || bs.Queues != tc.queues || len(bs.QueueTXFrames) != tc.queues || len(bs.QueueRXFrames) != tc.queues {
				t.Fatalf("frontend %+v, backend %+v", st, bs)
			}
			for i, q := range st.Queues {
				if q.TXFrames == 0 || q.RXFrames == 0 || q.TXFrames != uint64(bs.QueueTXFrames[i]) || q.RXFrames != uint64(bs.QueueRXFrames[i]) {
					t.Errorf("queue %d: frontend %+v, backend tx %d rx %d", i, q, bs.QueueTXFrames[i], bs.QueueRXFrames[i])
				}
			}
			if st.TXFrames != 320 || st.RXFrames != 320 || st.TXErrors != 0 || st.RXErrors != 0 {
				t.Errorf("stats %+v", st)
			}
			r.close()
		})
	}
}

// TestQueuesSuspendResume suspends a two-queue NIC (cancelled, then into
// a new domain and reconnected) with a receiver blocked across, and
// checks the traffic on both queues after each.
func TestQueuesSuspendResume(t *testing.T) {
	r := newRig(t, rigOpts{maxQueues: 2, frontQueues: 2})
	r.exchange(8, 5)
	// A receiver blocked across the suspend gets a frame sent after it,
	// on each queue.
	var onQueue [2]int // a flow of each queue
	for flow := range 8 {
		onQueue[netif.FlowHash(flowFrame(flow, 0, 0))%2] = flow
	}
	for _, flow := range onQueue {
		recv := make(chan error, 1)
		go func() {
			var rx flows
			rx.next = map[int]int{flow: 5}
			_, err := r.nic.Receive(r.ctx, 1, func(f netfront.Frame) error { return rx.check(f.Data) })
			recv <- err
		}()
		time.Sleep(5 * time.Millisecond) // let it block (not needed to pass)
		if err := r.nic.Suspend(r.ctx); err != nil {
			t.Fatal(err)
		}
		if err := r.nic.Resume(true); err != nil {
			t.Fatal(err)
		}
		if err := r.vif.Send(r.ctx, netback.Frame{Data: flowFrame(flow, 5, 100)}); err != nil {
			t.Fatal(err)
		}
		if err := <-recv; err != nil {
			t.Fatalf("blocked receiver: %v", err)
		}
	}
	// A resume in a new domain, with a send waiting across.
	if err := r.nic.Suspend(r.ctx); err != nil {
		t.Fatal(err)
	}
	sent := make(chan error, 1)
	go func() { sent <- r.nic.Send(r.ctx, netfront.Frame{Data: flowFrame(0, 0, 500)}) }()
	if err := r.nic.Resume(false); err != nil {
		t.Fatal(err)
	}
	f, err := device.Open(r.ctx, r.f.Store(), "vif", "0")
	if err != nil {
		t.Fatal(err)
	}
	if err := f.SwitchState(r.ctx, device.Initialising); err != nil {
		t.Fatal(err)
	}
	if err := r.nic.Reconnect(r.ctx, f); err != nil {
		t.Fatal(err)
	}
	r.f = f
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	if err := (&flows{}).check((<-r.frames).Data); err != nil {
		t.Fatal(err)
	}
	before := r.nic.Stats()
	r.exchange(8, 5)
	after := r.nic.Stats()
	for i := range 2 {
		if after.Queues[i].TXFrames == before.Queues[i].TXFrames || after.Queues[i].RXFrames == before.Queues[i].RXFrames {
			t.Errorf("queue %d idle after the reconnection: %+v then %+v", i, before.Queues[i], after.Queues[i])
		}
	}
	if c, q := r.vif.Stats().Connections, r.vif.Stats().Queues; c != 2 || q != 2 || r.nic.Features().Queues != 2 {
		t.Errorf("backend: %d connections of %d queues", c, q)
	}
	if err := r.f.Disconnect(r.ctx, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := r.nic.Close(); err != nil {
		t.Fatal(err)
	}
	r.vif.Close()
	if s := r.gnt.Stats(); s.String() != "" {
		t.Errorf("grant leftovers: %v", s)
	}
	// The old domain's ports were forgotten: one per queue remains.
	if s := r.ev.Stats(); s.Ports != 2 {
		t.Errorf("ports left: %d, want the 2 forgotten ones", s.Ports)
	}
}

// TestHostileQueueOffer has a backend offer multi-queue-max-queues values
// a hostile or broken one could write: a malformed offer fails the
// connection with ErrNegotiation before anything is granted; a huge one
// is capped by Config.MaxQueues.
func TestHostileQueueOffer(t *testing.T) {
	for _, tc := range []struct {
		name, offer string
		want        int // queues used, if no error
		err         error
	}{
		{"zero", "0", 0, netfront.ErrNegotiation},
		{"not a number", "two", 0, netfront.ErrNegotiation},
		{"negative", "-2", 0, netfront.ErrNegotiation},
		{"past 16 bits", "65536", 0, netfront.ErrNegotiation},
		{"huge", "65535", 3, nil},
		{"spaces", " 2\n", 2, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			s := memstore.New()
			defer s.Close()
			evh, gnth := evheap.NewHub(), gntheap.NewHub()
			if _, _, err := s.AddDevice(memstore.Device{Frontend: guest, Backend: backDom, Class: "vif", ID: "0", FrontendKeys: map[string]string{"mac": mac}}); err != nil {
				t.Fatal(err)
			}
			g, _ := s.Connect(guest)
			dom0, _ := s.Connect(backDom)
			gev, _ := evh.Domain(guest)
			ggnt, _ := gnth.Domain(guest)
			b, err := device.OpenBackend(ctx, dom0, "vif", guest, "0")
			if err != nil {
				t.Fatal(err)
			}
			if err := b.Publish(ctx, []device.KV{{Key: "feature-rx-copy", Value: "1"}, {Key: "multi-queue-max-queues", Value: tc.offer}}, device.InitWait); err != nil {
				t.Fatal(err)
			}
			f, err := device.Open(ctx, g, "vif", "0")
			if err != nil {
				t.Fatal(err)
			}
			if tc.err != nil {
				n, err := netfront.Connect(ctx, f, netfront.Config{Events: gev, Grants: ggnt, MaxQueues: 3})
				if !errors.Is(err, tc.err) || n != nil {
					t.Fatalf("Connect: %v, %v", n, err)
				}
				if st := gnth.Stats(); st.String() != "" {
					t.Errorf("grant leftovers: %v", st)
				}
				if st := evh.Stats(); st.Ports != 0 {
					t.Errorf("ports left: %d", st.Ports)
				}
				return
			}
			// A backend that goes Connected once the frontend published,
			// without serving the rings: the layout is what matters.
			go func() {
				if _, err := b.WaitFrontend(ctx, device.Connected); err == nil {
					b.SwitchState(ctx, device.Connected)
				}
			}()
			n, err := netfront.Connect(ctx, f, netfront.Config{Events: gev, Grants: ggnt, MaxQueues: 3})
			if err != nil {
				t.Fatal(err)
			}
			if q := n.Features().Queues; q != tc.want {
				t.Errorf("%d queues", q)
			}
			if v, _ := b.ReadFrontend(ctx, "multi-queue-num-queues"); v != strconv.Itoa(tc.want) {
				t.Errorf("multi-queue-num-queues %q", v)
			}
			go b.Disconnect(ctx, 5*time.Second)
			f.Disconnect(ctx, 5*time.Second)
			if err := n.Close(); err != nil {
				t.Error(err)
			}
			if st := gnth.Stats(); st.String() != "" {
				t.Errorf("grant leftovers: %v", st)
			}
			if st := evh.Stats(); st.Ports != 0 {
				t.Errorf("ports left: %d", st.Ports)
			}
		})
	}
}
