package network_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/gozen-dev/gozen/drivers/netback"
	"github.com/gozen-dev/gozen/drivers/netfront"
	"github.com/gozen-dev/gozen/drivers/netif"
	"github.com/gozen-dev/gozen/evtchn/evheap"
	"github.com/gozen-dev/gozen/gnttab/gntheap"
	"github.com/gozen-dev/gozen/netstack"
	"github.com/gozen-dev/gozen/network"
	"github.com/gozen-dev/gozen/xenbus/device"
	"github.com/gozen-dev/gozen/xenbus/memstore"
)

func TestServeBackendBadConfig(t *testing.T) {
	ctx := context.Background()
	s := memstore.New()
	defer s.Close()
	if _, _, err := s.AddDevice(memstore.Device{Frontend: guest, Backend: backDom, Class: "vif", ID: "0"}); err != nil {
		t.Fatal(err)
	}
	dom0, _ := s.Connect(backDom)
	b, err := device.OpenBackend(ctx, dom0, "vif", guest, "0")
	if err != nil {
		t.Fatal(err)
	}
	ev, _ := evheap.NewHub().Domain(backDom)
	gnt, _ := gntheap.NewHub().Domain(backDom)
	for _, tc := range []struct {
		name string
		o    netback.Options
		cfg  network.BackendConfig
	}{
		{"OnFrame set", netback.Options{Events: ev, Grants: gnt, OnFrame: func(netback.Frame) {}}, network.BackendConfig{MAC: backMAC}},
		{"no MAC", netback.Options{Events: ev, Grants: gnt}, network.BackendConfig{}},
		{"no Events", netback.Options{Grants: gnt}, network.BackendConfig{MAC: backMAC}},
	} {
		if n, err := network.ServeBackend(ctx, b, tc.o, tc.cfg); err == nil {
			n.Close()
			t.Errorf("%s: ServeBackend succeeded", tc.name)
		}
	}
}

// TestBackendNICUnconnected: frames sent while no frontend is connected
// are dropped, not queued, and Send does not wait.
func TestBackendNICUnconnected(t *testing.T) {
	r := newDevices(t, variants[0], network.BackendConfig{MAC: backMAC}, false)
	if r.bnic.MTU() != 1500 || r.bnic.MAC().String() != backMAC.String() || r.bnic.Offloads() != (netstack.Offloads{}) {
		t.Errorf("MTU %d MAC %v offloads %+v", r.bnic.MTU(), r.bnic.MAC(), r.bnic.Offloads())
	}
	f := netstack.Frame{Data: [][]byte{make([]byte, 14), make([]byte, 46)}}
	if err := r.bnic.Send(r.ctx, f, f); err != nil {
		t.Fatal(err)
	}
	if s := r.bnic.Stats(); s.TXDropped != 2 || s.TXFrames != 0 {
		t.Errorf("stats %+v, want 2 dropped", s)
	}
	ctx, cancel := context.WithTimeout(r.ctx, 50*time.Millisecond)
	defer cancel()
	if n, err := r.bnic.Receive(ctx, make([]netstack.Frame, 4)); n != 0 || !errors.Is(err, context.DeadlineExceeded) || errors.Is(err, netstack.ErrNICClosed) {
		t.Errorf("Receive with nothing sent: %d, %v", n, err)
	}
	r.close()
}

// TestBackendNICQueue has the guest send more frames than the queue and
// the transmit ring hold while nobody receives: netback waits
// (back-pressure), nothing is lost, and the frames keep their order,
// flags and GSO information.
func TestBackendNICQueue(t *testing.T) {
	r := newDevices(t, variants[0], network.BackendConfig{MAC: backMAC, QueueLen: 3}, true)
	const n = 1000
	frame := func(i int) netfront.Frame {
		f := netfront.Frame{Data: bytes.Repeat([]byte{byte(i), byte(i >> 8)}, 30+i%2000)}
		switch i % 3 {
		case 1:
			f.Flags = netfront.CsumBlank
		case 2:
			f.Flags = netfront.DataValidated
		}
		if len(f.Data) > 1514 && i%2 == 0 {
			f.GSO = netfront.GSO{Type: netif.GSOTCPv4, Size: 1448}
		}
		return f
	}
	errc := make(chan error, 1)
	go func() {
		for i := range n {
			if err := r.nf.Send(r.ctx, frame(i)); err != nil {
				errc <- err
				return
			}
		}
		errc <- nil
	}()
	got := 0
	frames := make([]netstack.Frame, 7)
	for got < n {
		k, err := r.bnic.Receive(r.ctx, frames)
		if err != nil {
			t.Fatal(err)
		}
		for _, g := range frames[:k] {
			want := frame(got)
			wantFlags := netstack.Flags(want.Flags) // same bits
			if want.Flags == netfront.CsumBlank {
				wantFlags |= netstack.DataValidated // netfront sends csum_blank|data_validated
			}
			wantGSO := netstack.GSO{}
			if want.GSO.Type == netif.GSOTCPv4 {
				wantGSO = netstack.GSO{Type: netstack.GSOTCPv4, Size: 1448}
			}
			if len(g.Data) != 1 || !bytes.Equal(g.Data[0], want.Data) || g.Flags != wantFlags || g.GSO != wantGSO {
				t.Fatalf("frame %d: %d bytes, flags %v, gso %+v; want %d bytes, %v, %+v", got, g.Len(), g.Flags, g.GSO, len(want.Data), wantFlags, wantGSO)
			}
			got++
		}
	}
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
	if s := r.bnic.Stats(); s.RXFrames != n || s.RXDropped != 0 {
		t.Errorf("stats %+v", s)
	}
	r.close()
}

// TestBackendNICSend: frames from the backend's side reach the guest
// with their flags and GSO information, gathered from their pieces.
func TestBackendNICSend(t *testing.T) {
	r := newDevices(t, variants[0], network.BackendConfig{MAC: backMAC}, true)
	cases := []struct {
		f         netstack.Frame
		wantFlags netfront.Flags
		wantGSO   netfront.GSO
	}{
		{netstack.Frame{Data: [][]byte{[]byte("0123456789abcd"), bytes.Repeat([]byte("x"), 50)}}, 0, netfront.GSO{}},
		{netstack.Frame{Data: [][]byte{bytes.Repeat([]byte("y"), 1514)}, Flags: netstack.ChecksumBlank}, netfront.CsumBlank | netfront.DataValidated, netfront.GSO{}},
		{netstack.Frame{Data: [][]byte{bytes.Repeat([]byte("z"), 100)}, Flags: netstack.DataValidated}, netfront.DataValidated, netfront.GSO{}},
		{netstack.Frame{Data: [][]byte{make([]byte, 54), bytes.Repeat([]byte("g"), 30000), bytes.Repeat([]byte("h"), 30000)}, Flags: netstack.ChecksumBlank,
			GSO: netstack.GSO{Type: netstack.GSOTCPv4, Size: 1448}}, netfront.CsumBlank | netfront.DataValidated, netfront.GSO{Type: netif.GSOTCPv4, Size: 1448}},
		{netstack.Frame{Data: [][]byte{make([]byte, 74), bytes.Repeat([]byte("6"), 9000)}, Flags: netstack.ChecksumBlank,
			GSO: netstack.GSO{Type: netstack.GSOTCPv6, Size: 1428}}, netfront.CsumBlank | netfront.DataValidated, netfront.GSO{Type: netif.GSOTCPv6, Size: 1428}},
	}
	for i, tc := range cases {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			if err := r.bnic.Send(r.ctx, tc.f); err != nil {
				t.Fatal(err)
			}
			want := bytes.Join(tc.f.Data, nil)
			_, err := r.nf.Receive(r.ctx, 1, func(f netfront.Frame) error {
				if !bytes.Equal(f.Data, want) || f.Flags != tc.wantFlags || f.GSO != tc.wantGSO {
					return fmt.Errorf("got %d bytes, flags %v, gso %+v; want %d bytes, %v, %+v", len(f.Data), f.Flags, f.GSO, len(want), tc.wantFlags, tc.wantGSO)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
		})
	}
	if s := r.bnic.Stats(); s.TXFrames != uint64(len(cases)) || s.TXDropped != 0 {
		t.Errorf("stats %+v", s)
	}
	r.close()
}

// TestBackendNICDisconnectWhileFull: the guest disconnects while netback
// waits for room in a full queue nobody drains; the teardown does not
// hang, the waiting frame is dropped and nothing is left.
func TestBackendNICDisconnectWhileFull(t *testing.T) {
	const queue = 3
	r := newDevices(t, variants[0], network.BackendConfig{MAC: backMAC, QueueLen: queue}, true)
	errc := make(chan error, 1)
	go func() {
		for {
			if err := r.nf.Send(r.ctx, netfront.Frame{Data: make([]byte, 100)}); err != nil {
				errc <- err
				return
			}
		}
	}()
	deadline := time.Now().Add(20 * time.Second)
	for r.bnic.VIF().Stats().TXFrames <= queue {
		if time.Now().After(deadline) {
			t.Fatalf("netback took %d frames", r.bnic.VIF().Stats().TXFrames)
		}
		time.Sleep(time.Millisecond)
	}
	r.close() // fails the test if the handshake hangs or grants are left
	if err := <-errc; !errors.Is(err, netfront.ErrClosed) {
		t.Errorf("guest Send after Close: %v", err)
	}
	if s := r.bnic.Stats(); s.RXDropped != 1 {
		t.Errorf("stats %+v, want the one waiting frame dropped", s)
	}
}
