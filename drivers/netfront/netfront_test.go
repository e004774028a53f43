package netfront_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/gozen-dev/gozen/domid"
	"github.com/gozen-dev/gozen/drivers/netback"
	"github.com/gozen-dev/gozen/drivers/netfront"
	"github.com/gozen-dev/gozen/drivers/netif"
	"github.com/gozen-dev/gozen/evtchn/evheap"
	"github.com/gozen-dev/gozen/gnttab/gntheap"
	"github.com/gozen-dev/gozen/xenbus/device"
	"github.com/gozen-dev/gozen/xenbus/memstore"
)

const (
	guest   domid.ID = 5
	backDom domid.ID = 0
	mac              = "00:16:3e:01:02:03"
)

// rig is a guest with one vif served by a netback in dom0, all in one
// process: memstore, evheap and gntheap.
type rig struct {
	t      testing.TB
	ctx    context.Context
	s      *memstore.Store
	ev     *evheap.Hub
	gnt    *gntheap.Hub
	f      *device.Frontend
	nic    *netfront.NIC
	vif    *netback.VIF
	frames chan netback.Frame // what the guest transmitted, copied
}

type rigOpts struct {
	noSG, noGSO, split bool
	maxQueues          int  // offered by the backend
	frontQueues        int  // Config.MaxQueues of the frontend
	discard            bool // drop transmitted frames (benchmarks)
	frontKeys          map[string]string
}

func newRig(t testing.TB, o rigOpts) *rig {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	r := &rig{t: t, ctx: ctx, s: memstore.New(), ev: evheap.NewHub(), gnt: gntheap.NewHub(), frames: make(chan netback.Frame, 4096)}
	t.Cleanup(func() { r.s.Close() })
	keys := map[string]string{"mac": mac}
	for k, v := range o.frontKeys {
		keys[k] = v
	}
	if _, _, err := r.s.AddDevice(memstore.Device{Frontend: guest, Backend: backDom, Class: "vif", ID: "0", FrontendKeys: keys}); err != nil {
		t.Fatal(err)
	}
	g, err := r.s.Connect(guest)
	if err != nil {
		t.Fatal(err)
	}
	dom0, err := r.s.Connect(backDom)
	if err != nil {
		t.Fatal(err)
	}
	gev, _ := r.ev.Domain(guest)
	bev, _ := r.ev.Domain(backDom)
	ggnt, _ := r.gnt.Domain(guest)
	bgnt, _ := r.gnt.Domain(backDom)
	b, err := device.OpenBackend(ctx, dom0, "vif", guest, "0")
	if err != nil {
		t.Fatal(err)
	}
	r.vif, err = netback.Serve(ctx, b, netback.Options{
		Events: bev, Grants: bgnt,
		SG: !o.noSG, GSOTCPv4: !o.noGSO, GSOTCPv6: !o.noGSO, SplitEventChannels: o.split, MaxQueues: o.maxQueues,
		OnFrame: func(f netback.Frame) {
			if o.discard {
				return
			}
			f.Data = bytes.Clone(f.Data)
			r.frames <- f
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.vif.Close() })
	if r.f, err = device.Open(ctx, g, "vif", "0"); err != nil {
		t.Fatal(err)
	}
	if r.nic, err = netfront.Connect(ctx, r.f, netfront.Config{Events: gev, Grants: ggnt, MaxQueues: o.frontQueues}); err != nil {
		t.Fatal(err)
	}
	return r
}

// close runs the close handshake, closes both ends and checks that no
// grant, mapping or port is left.
func (r *rig) close() {
	r.t.Helper()
	if err := r.f.Disconnect(r.ctx, 5*time.Second); err != nil {
		r.t.Errorf("Disconnect: %v", err)
	}
	if err := r.nic.Close(); err != nil {
		r.t.Errorf("NIC Close: %v", err)
	}
	r.vif.Close()
	if s := r.gnt.Stats(); s.String() != "" {
		r.t.Errorf("grant leftovers: %v", s)
	}
	if s := r.ev.Stats(); s.Ports != 0 {
		r.t.Errorf("port leftovers: %d", s.Ports)
	}
}

func payload(n int, seed uint64) []byte {
	b := make([]byte, n)
	rng := rand.New(rand.NewPCG(seed, uint64(n)))
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

func testSizes() []int {
	var s []int
	for n := 1; n <= 80; n++ {
		s = append(s, n)
	}
	for _, base := range []int{1500, 4096, 8192, 12288, 32768, 61440, 65535 - 100} {
		for d := -2; d <= 2; d++ {
			s = append(s, base+d)
		}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	for range 100 {
		s = append(s, 1+rng.IntN(netfront.MaxFrameSize))
	}
	return append(s, netfront.MaxFrameSize)
}

// receiveOne receives one frame and returns a copy.
func (r *rig) receiveOne() netfront.Frame {
	r.t.Helper()
	var got netfront.Frame
	n, err := r.nic.Receive(r.ctx, 1, func(f netfront.Frame) error {
		got = f
		got.Data = bytes.Clone(f.Data)
		return nil
	})
	if err != nil || n != 1 {
		r.t.Fatalf("Receive: %d, %v", n, err)
	}
	return got
}

func TestSizesBothWays(t *testing.T) {
	for _, split := range []bool{false, true} {
		t.Run(fmt.Sprintf("split=%v", split), func(t *testing.T) {
			r := newRig(t, rigOpts{split: split})
			if r.nic.MAC().String() != mac || r.nic.MTU() != 1500 {
				t.Fatalf("MAC %v MTU %d", r.nic.MAC(), r.nic.MTU())
			}
			ft := r.nic.Features()
			if !ft.SG || !ft.GSOTCPv4 || !ft.GSOTCPv6 || ft.SplitEventChannels != split || ft.Queues != 1 {
				t.Fatalf("features %+v", ft)
			}
			for i, n := range testSizes() {
				f := netfront.Frame{Data: payload(n, uint64(i))}
				switch i % 4 {
				case 1:
					f.Flags = netfront.CsumBlank
				case 2:
					f.Flags = netfront.DataValidated
				}
				if n > 1514 && i%2 == 0 {
					f.GSO = netfront.GSO{Type: netif.GSOTCPv4 + netif.GSOType(i/2%2), Size: 1448}
				}
				// Guest to backend.
				if err := r.nic.Send(r.ctx, f); err != nil {
					t.Fatalf("Send %d bytes: %v", n, err)
				}
				got := <-r.frames
				if !bytes.Equal(got.Data, f.Data) || got.CsumBlank != (f.Flags == netfront.CsumBlank) ||
					got.DataValidated != (f.Flags != 0) || got.GSOType != f.GSO.Type || got.GSOSize != f.GSO.Size {
					t.Fatalf("frame %d of %d bytes: backend got %d bytes csum=%v valid=%v gso=%v/%d", i, n, len(got.Data), got.CsumBlank, got.DataValidated, got.GSOType, got.GSOSize)
				}
				// Backend to guest.
				bf := netback.Frame{Data: f.Data, CsumBlank: f.Flags == netfront.CsumBlank, DataValidated: f.Flags == netfront.DataValidated, GSOType: f.GSO.Type, GSOSize: f.GSO.Size}
				if err := r.vif.Send(r.ctx, bf); err != nil {
					t.Fatalf("backend Send %d bytes: %v", n, err)
				}
				rf := r.receiveOne()
				wantFlags := f.Flags
				if wantFlags == netfront.CsumBlank {
					wantFlags |= netfront.DataValidated
				}
				if !bytes.Equal(rf.Data, f.Data) || rf.Flags != wantFlags || rf.GSO != f.GSO {
					t.Fatalf("frame %d of %d bytes: guest got %d bytes flags %v gso %+v, want flags %v gso %+v", i, n, len(rf.Data), rf.Flags, rf.GSO, wantFlags, f.GSO)
				}
			}
			st := r.nic.Stats()
			if st.TXFrames != uint64(len(testSizes())) || st.RXFrames != st.TXFrames || st.RXErrors != 0 || st.TXErrors != 0 {
				t.Fatalf("stats %+v", st)
			}
			r.close()
		})
	}
}

func TestInFlightBackPressure(t *testing.T) {
	r := newRig(t, rigOpts{})
	const n = 3000
	errc := make(chan error, 2)
	go func() {
		// Batches of varying size, larger than the ring now and then.
		for i := 0; i < n; {
			k := min(n-i, 1+i%300)
			batch := make([]netfront.Frame, k)
			for j := range batch {
				batch[j] = netfront.Frame{Data: payload(60+(i+j)%3000, uint64(i+j))}
			}
			if err := r.nic.Send(r.ctx, batch...); err != nil {
				errc <- err
				return
			}
			i += k
		}
		errc <- nil
	}()
	go func() {
		for i := range n {
			if err := r.vif.Send(r.ctx, netback.Frame{Data: payload(60+i%9000, uint64(i))}); err != nil {
				errc <- err
				return
			}
		}
		errc <- nil
	}()
	got := 0
	for got < n {
		_, err := r.nic.Receive(r.ctx, 0, func(f netfront.Frame) error {
			if !bytes.Equal(f.Data, payload(60+got%9000, uint64(got))) {
				return fmt.Errorf("rx frame %d: %d bytes, wrong", got, len(f.Data))
			}
			got++
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	for i := range n {
		f := <-r.frames
		if !bytes.Equal(f.Data, payload(60+i%3000, uint64(i))) {
			t.Fatalf("tx frame %d: %d bytes, wrong", i, len(f.Data))
		}
	}
	for range 2 {
		if err := <-errc; err != nil {
			t.Fatal(err)
		}
	}
	r.close()
}

func TestFrameChecks(t *testing.T) {
	r := newRig(t, rigOpts{noSG: true, noGSO: true, maxQueues: 4, frontKeys: map[string]string{"mtu": "9000"}})
	if r.nic.MTU() != 9000 {
		t.Errorf("MTU %d", r.nic.MTU())
	}
	if ft := r.nic.Features(); ft.SG || ft.GSOTCPv4 || ft.MaxQueues != 4 || ft.Queues != 1 {
		t.Errorf("features %+v", ft)
	}
	for _, f := range []netfront.Frame{
		{},
		{Data: make([]byte, 4097)},
		{Data: make([]byte, 100), GSO: netfront.GSO{Type: netif.GSOTCPv4, Size: 1000}},
		{Data: make([]byte, 100), GSO: netfront.GSO{Type: 7, Size: 1000}},
		{Data: make([]byte, netfront.MaxFrameSize+1)},
	} {
		if err := r.nic.Send(r.ctx, f); !errors.Is(err, netfront.ErrFrame) {
			t.Errorf("Send of %d bytes, gso %+v: %v", len(f.Data), f.GSO, err)
		}
	}
	if err := r.nic.Send(r.ctx, netfront.Frame{Data: make([]byte, 4096)}); err != nil {
		t.Fatal(err)
	}
	<-r.frames
	r.close()
	if err := r.nic.Send(r.ctx, netfront.Frame{Data: make([]byte, 10)}); !errors.Is(err, netfront.ErrClosed) {
		t.Errorf("Send after Close: %v", err)
	}
	if _, err := r.nic.Receive(r.ctx, 0, func(netfront.Frame) error { return nil }); !errors.Is(err, netfront.ErrClosed) {
		t.Errorf("Receive after Close: %v", err)
	}
}

func TestSuspendResume(t *testing.T) {
	r := newRig(t, rigOpts{split: true})
	ping := func(i int) {
		t.Helper()
		f := netfront.Frame{Data: payload(1000+i, uint64(i))}
		if err := r.nic.Send(r.ctx, f); err != nil {
			t.Fatal(err)
		}
		if got := <-r.frames; !bytes.Equal(got.Data, f.Data) {
			t.Fatal("tx frame wrong")
		}
		if err := r.vif.Send(r.ctx, netback.Frame{Data: f.Data}); err != nil {
			t.Fatal(err)
		}
		if got := r.receiveOne(); !bytes.Equal(got.Data, f.Data) {
			t.Fatal("rx frame wrong")
		}
	}
	ping(0)
	// A receiver blocked across the suspend and the reconnection gets the
	// frame sent after it.
	recv := make(chan []byte, 1)
	go func() {
		r.nic.Receive(r.ctx, 1, func(f netfront.Frame) error {
			recv <- bytes.Clone(f.Data)
			return nil
		})
	}()
	// Cancelled suspend: same rings.
	if err := r.nic.Suspend(r.ctx); err != nil {
		t.Fatal(err)
	}
	if err := r.nic.Resume(true); err != nil {
		t.Fatal(err)
	}
	if err := r.vif.Send(r.ctx, netback.Frame{Data: []byte("after cancelled suspend")}); err != nil {
		t.Fatal(err)
	}
	if got := <-recv; string(got) != "after cancelled suspend" {
		t.Fatalf("blocked receiver got %q", got)
	}
	ping(1)
	// A resume in a new domain: reconnect as device.Bound does.
	if err := r.nic.Suspend(r.ctx); err != nil {
		t.Fatal(err)
	}
	sent := make(chan error, 1)
	go func() { sent <- r.nic.Send(r.ctx, netfront.Frame{Data: []byte("sent while suspended")}) }()
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
	if got := <-r.frames; string(got.Data) != "sent while suspended" {
		t.Fatalf("got %q", got.Data)
	}
	ping(2)
	if c := r.vif.Stats().Connections; c != 2 {
		t.Errorf("backend connections: %d", c)
	}
	// The old domain's ports were forgotten (Xen drops them with the old
	// domain; evheap keeps them): two split ports of the guest remain.
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
	gev, _ := r.ev.Domain(guest)
	if s := r.ev.Stats(); s.Ports != 2 || gev.Stats().Ports != 2 {
		t.Errorf("ports left: %d (guest %d), want the 2 forgotten ones", s.Ports, gev.Stats().Ports)
	}
}
