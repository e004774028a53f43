package netfront_test

import (
	"context"
	"encoding/binary"
	"errors"
	"testing"
	"time"

	"github.com/gozen-dev/gozen/drivers/netfront"
	"github.com/gozen-dev/gozen/drivers/netif"
	"github.com/gozen-dev/gozen/drivers/ring"
	"github.com/gozen-dev/gozen/evtchn"
	"github.com/gozen-dev/gozen/evtchn/evheap"
	"github.com/gozen-dev/gozen/gnttab"
	"github.com/gozen-dev/gozen/gnttab/gntheap"
	"github.com/gozen-dev/gozen/xenbus/device"
	"github.com/gozen-dev/gozen/xenbus/memstore"
)

// rawBack is a hand-driven backend: the test writes whatever responses
// it likes on the mapped rings.
type rawBack struct {
	tx, rx   *ring.Back
	txMem    []byte
	rxMem    []byte
	ev       evtchn.Events
	port     evtchn.Port
	nic      *netfront.NIC
	ctx      context.Context
	teardown func()
}

func newRawBack(t *testing.T) *rawBack {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	s := memstore.New()
	evh, gnth := evheap.NewHub(), gntheap.NewHub()
	if _, _, err := s.AddDevice(memstore.Device{Frontend: guest, Backend: backDom, Class: "vif", ID: "0", FrontendKeys: map[string]string{"mac": mac}}); err != nil {
		t.Fatal(err)
	}
	g, _ := s.Connect(guest)
	dom0, _ := s.Connect(backDom)
	gev, _ := evh.Domain(guest)
	bev, _ := evh.Domain(backDom)
	ggnt, _ := gnth.Domain(guest)
	bgnt, _ := gnth.Domain(backDom)
	b, err := device.OpenBackend(ctx, dom0, "vif", guest, "0")
	if err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(ctx, []device.KV{{Key: "feature-rx-copy", Value: "1"}, {Key: "feature-sg", Value: "1"}, {Key: "feature-gso-tcpv4", Value: "1"}}, device.InitWait); err != nil {
		t.Fatal(err)
	}
	f, err := device.Open(ctx, g, "vif", "0")
	if err != nil {
		t.Fatal(err)
	}
	nicc := make(chan *netfront.NIC, 1)
	errc := make(chan error, 1)
	go func() {
		n, err := netfront.Connect(ctx, f, netfront.Config{Events: gev, Grants: ggnt})
		nicc <- n
		errc <- err
	}()
	if _, err := b.WaitFrontend(ctx, device.Connected); err != nil {
		t.Fatal(err)
	}
	rb := &rawBack{ev: bev, ctx: ctx}
	txRef, _ := b.ReadFrontendUint(ctx, "tx-ring-ref", 32)
	rxRef, _ := b.ReadFrontendUint(ctx, "rx-ring-ref", 32)
	port, _ := b.ReadFrontendUint(ctx, "event-channel", 32)
	txm, err := bgnt.Map(guest, []gnttab.Ref{gnttab.Ref(txRef)}, true)
	if err != nil {
		t.Fatal(err)
	}
	rxm, err := bgnt.Map(guest, []gnttab.Ref{gnttab.Ref(rxRef)}, true)
	if err != nil {
		t.Fatal(err)
	}
	rb.txMem, rb.rxMem = txm.Buf, rxm.Buf
	rb.tx, _ = ring.NewBack(txm.Buf, netif.TxLayout)
	rb.rx, _ = ring.NewBack(rxm.Buf, netif.RxLayout)
	if rb.port, err = bev.BindInterdomain(guest, evtchn.Port(port)); err != nil {
		t.Fatal(err)
	}
	if err := b.SwitchState(ctx, device.Connected); err != nil {
		t.Fatal(err)
	}
	rb.nic = <-nicc
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	rb.teardown = func() {
		go b.Disconnect(ctx, 5*time.Second)
		bgnt.Unmap(txm)
		bgnt.Unmap(rxm)
		f.Disconnect(ctx, 5*time.Second)
		bev.Close(rb.port)
		if err := rb.nic.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
		if st := gnth.Stats(); st.String() != "" {
			t.Errorf("grant leftovers: %v", st)
		}
		if st := gev.Stats(); st.Ports != 0 {
			t.Errorf("guest ports left: %d", st.Ports)
		}
		s.Close()
		cancel()
	}
	return rb
}

// rxRespond answers the next receive requests with the given responses
// (each 8 bytes: an RxResponse or an Extra), then pushes and notifies.
func (rb *rawBack) rxRespond(t *testing.T, rsps ...[]byte) {
	t.Helper()
	var req [netif.RxRequestSize]byte
	for _, r := range rsps {
		if ok, err := rb.rx.TakeRequest(req[:]); !ok || err != nil {
			t.Fatalf("no rx request: %v", err)
		}
		if err := rb.rx.PutResponse(r); err != nil {
			t.Fatal(err)
		}
	}
	rb.rx.PushResponses()
	rb.ev.Notify(rb.port)
}

func rsp(id uint16, off uint16, flags netif.RxFlags, status int16) []byte {
	b := make([]byte, netif.RxResponseSize)
	netif.RxResponse{ID: id, Offset: off, Flags: flags, Status: status}.Encode(b)
	return b
}

func extra(e netif.Extra) []byte {
	b := make([]byte, netif.ExtraInfoSize)
	e.Encode(b)
	return b
}

func (rb *rawBack) receive() (int, error) {
	return rb.nic.Receive(rb.ctx, 0, func(netfront.Frame) error { return nil })
}

func TestHostileRx(t *testing.T) {
	more := netif.Extra{Type: netif.ExtraMcastAdd, Flags: netif.ExtraFlagMore}
	long := [][]byte{}
	for i := range netif.SlotsMin + 1 {
		long = append(long, rsp(uint16(i), 0, netif.RxMoreData, 100))
	}
	endless := [][]byte{rsp(0, 0, netif.RxExtraInfo, 100)}
	for range netif.MaxExtras + 1 {
		endless = append(endless, extra(more))
	}
	for _, tc := range []struct {
		name string
		rsps [][]byte
		want error
	}{
		{"bad id", [][]byte{rsp(7, 0, 0, 100)}, netfront.ErrProtocol},
		{"past the page", [][]byte{rsp(0, 4000, 0, 100)}, netfront.ErrProtocol},
		{"huge offset", [][]byte{rsp(0, 0xffff, 0, 1)}, netfront.ErrProtocol},
		{"more_data chain too long", long, netfront.ErrProtocol},
		{"endless extra chain", endless, netfront.ErrProtocol},
		{"extra type 0", [][]byte{rsp(0, 0, netif.RxExtraInfo, 100), extra(netif.Extra{})}, netfront.ErrProtocol},
		{"extra type 200", [][]byte{rsp(0, 0, netif.RxExtraInfo, 100), extra(netif.Extra{Type: 200})}, netfront.ErrProtocol},
		{"extra info on a later slot", [][]byte{rsp(0, 0, netif.RxMoreData, 100), rsp(1, 0, netif.RxExtraInfo, 100)}, netfront.ErrProtocol},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rb := newRawBack(t)
			defer rb.teardown()
			rb.rxRespond(t, tc.rsps...)
			n, err := rb.receive()
			if !errors.Is(err, tc.want) || n != 0 {
				t.Fatalf("Receive = %d, %v; want %v", n, err, tc.want)
			}
			// The device stays broken, Send too.
			if _, err := rb.receive(); !errors.Is(err, tc.want) {
				t.Fatalf("second Receive: %v", err)
			}
			if err := rb.nic.Send(rb.ctx, netfront.Frame{Data: []byte{1}}); !errors.Is(err, tc.want) {
				t.Fatalf("Send on a broken device: %v", err)
			}
		})
	}
}

func TestHostileRxDropped(t *testing.T) {
	rb := newRawBack(t)
	defer rb.teardown()
	// An error status, GSO size 0, an unknown GSO type and an empty
	// packet are dropped and counted; the good frame after them arrives.
	rb.rxRespond(t,
		rsp(0, 0, 0, netif.RspError),
		rsp(1, 0, netif.RxExtraInfo, 100), extra(netif.GSOExtra(0, netif.GSOTCPv4, 0)),
		rsp(3, 0, netif.RxExtraInfo, 100), extra(netif.GSOExtra(1448, 9, 0)),
		rsp(5, 0, 0, 0),
		rsp(6, 0, netif.RxMoreData, 10), rsp(7, 0, 0, netif.RspDropped),
		rsp(8, 10, netif.RxCsumBlank, 5),
	)
	var got []byte
	n, err := rb.nic.Receive(rb.ctx, 0, func(f netfront.Frame) error {
		got = append(got, f.Data...)
		if f.Flags != netfront.CsumBlank {
			t.Errorf("flags %v", f.Flags)
		}
		return nil
	})
	if err != nil || n != 1 || len(got) != 5 {
		t.Fatalf("Receive = %d, %v, %d bytes", n, err, len(got))
	}
	if st := rb.nic.Stats(); st.RXErrors != 5 || st.RXFrames != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestHostileRing(t *testing.T) {
	t.Run("rsp_prod overflow", func(t *testing.T) {
		rb := newRawBack(t)
		defer rb.teardown()
		binary.LittleEndian.PutUint32(rb.rxMem[ring.OffRspProd:], 1000)
		rb.ev.Notify(rb.port)
		if _, err := rb.receive(); !errors.Is(err, ring.ErrCorrupt) {
			t.Fatalf("Receive: %v", err)
		}
	})
	t.Run("tx response for an id not in flight", func(t *testing.T) {
		rb := newRawBack(t)
		defer rb.teardown()
		if err := rb.nic.Send(rb.ctx, netfront.Frame{Data: []byte("hello")}); err != nil {
			t.Fatal(err)
		}
		var req [netif.TxRequestSize]byte
		if ok, _ := rb.tx.TakeRequest(req[:]); !ok {
			t.Fatal("no tx request")
		}
		r, _ := netif.DecodeTxRequest(req[:])
		var b [netif.TxResponseSize]byte
		netif.TxResponse{ID: r.ID + 1, Status: netif.RspOkay}.Encode(b[:])
		rb.tx.PutResponse(b[:])
		rb.tx.PushResponses()
		if err := rb.nic.Send(rb.ctx, netfront.Frame{Data: []byte("again")}); !errors.Is(err, netfront.ErrProtocol) {
			t.Fatalf("Send: %v", err)
		}
	})
	t.Run("tx responses beyond the requests", func(t *testing.T) {
		rb := newRawBack(t)
		defer rb.teardown()
		binary.LittleEndian.PutUint32(rb.txMem[ring.OffRspProd:], 3)
		if err := rb.nic.Send(rb.ctx, netfront.Frame{Data: []byte("x")}); !errors.Is(err, ring.ErrCorrupt) {
			t.Fatalf("Send: %v", err)
		}
	})
	t.Run("tx error status is counted", func(t *testing.T) {
		rb := newRawBack(t)
		defer rb.teardown()
		rb.nic.Send(rb.ctx, netfront.Frame{Data: []byte("hello")})
		var req [netif.TxRequestSize]byte
		rb.tx.TakeRequest(req[:])
		r, _ := netif.DecodeTxRequest(req[:])
		var b [netif.TxResponseSize]byte
		netif.TxResponse{ID: r.ID, Status: netif.RspError}.Encode(b[:])
		rb.tx.PutResponse(b[:])
		rb.tx.PushResponses()
		if err := rb.nic.Send(rb.ctx, netfront.Frame{Data: []byte("again")}); err != nil {
			t.Fatal(err)
		}
		if st := rb.nic.Stats(); st.TXErrors != 1 {
			t.Fatalf("stats %+v", st)
		}
	})
}
