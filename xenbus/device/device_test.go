package device_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/gozen-dev/gozen/xenbus/device"
	"github.com/gozen-dev/gozen/xenbus/memstore"
	"github.com/gozen-dev/gozen/xenbus/wire"
)

func TestHandshake(t *testing.T) {
	s := memstore.New()
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, back, err := s.AddDevice(memstore.Device{
		Frontend: 5, Backend: 0, Class: "vif", ID: "0",
		FrontendKeys: map[string]string{"mac": "00:16:3e:00:00:01"},
		BackendKeys:  map[string]string{"feature-sg": "1", "feature-gso-tcpv4": "0", "feature-rx-copy": "1"},
	})
	if err != nil {
		t.Fatal(err)
	}
	s.AddDevice(memstore.Device{Frontend: 5, Backend: 0, Class: "vif", ID: "1"})
	g, err := s.Connect(5)
	if err != nil {
		t.Fatal(err)
	}
	dom0, err := s.Connect(0)
	if err != nil {
		t.Fatal(err)
	}
	ids, err := device.Enumerate(ctx, g, "vif")
	if err != nil || !slices.Equal(ids, []string{"0", "1"}) {
		t.Fatalf("enumerate: %q %v", ids, err)
	}
	if ids, err := device.Enumerate(ctx, g, "vbd"); err != nil || len(ids) != 0 {
		t.Fatalf("enumerate vbd: %q %v", ids, err)
	}
	f, err := device.Open(ctx, g, "vif", "0")
	if err != nil {
		t.Fatal(err)
	}
	if f.Backend != back || f.BackendID != 0 || f.Path != "/local/domain/5/device/vif/0" {
		t.Fatalf("frontend %+v", f)
	}
	if sg, err := f.Feature(ctx, "sg"); err != nil || !sg {
		t.Fatalf("feature sg: %v %v", sg, err)
	}
	if gso, _ := f.Feature(ctx, "gso-tcpv4"); gso {
		t.Fatal("gso reported")
	}
	if x, err := f.Feature(ctx, "nope"); err != nil || x {
		t.Fatalf("missing feature: %v %v", x, err)
	}
	feats, err := f.BackendFeatures(ctx)
	if err != nil || len(feats) != 3 || feats["rx-copy"] != "1" {
		t.Fatalf("features %v %v", feats, err)
	}

	// Backend (dom0) goes to InitWait after a while.
	go func() {
		time.Sleep(20 * time.Millisecond)
		dom0.WriteString(ctx, back+"/state", "2")
	}()
	if st, err := f.WaitBackend(ctx, device.InitWait); err != nil || st != device.InitWait {
		t.Fatalf("wait InitWait: %v %v", st, err)
	}
	// Backend reacts to our Initialised by connecting.
	bw, err := dom0.Watch(ctx, f.Path+"/state")
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		for range bw.Events() {
			v, _ := dom0.ReadString(ctx, f.Path+"/state")
			if v == "3" {
				rr, _ := dom0.ReadString(ctx, f.Path+"/tx-ring-ref")
				if rr == "8" {
					dom0.WriteString(ctx, back+"/state", "4")
					return // once: a late event must not undo the test's later writes
				}
			}
		}
	}()
	err = f.Publish(ctx, []device.KV{device.Uint("tx-ring-ref", uint32(8)), device.Uint("rx-ring-ref", uint32(9)), device.Uint("event-channel", uint16(3))}, device.Initialised)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := f.WaitBackend(ctx, device.Connected); err != nil || st != device.Connected {
		t.Fatalf("wait Connected: %v %v", st, err)
	}
	if err := f.SwitchState(ctx, device.Connected); err != nil {
		t.Fatal(err)
	}
	if st, _ := f.State(ctx); st != device.Connected {
		t.Fatalf("our state %v", st)
	}
	bw.Unwatch(ctx)

	// Backend closing while we wait for something else.
	dom0.WriteString(ctx, back+"/state", "6")
	if _, err := f.WaitBackend(ctx, device.Connected); !errors.Is(err, device.ErrBackendClosed) {
		t.Fatalf("closed backend: %v", err)
	}
	// Timeout.
	dom0.WriteString(ctx, back+"/state", "4")
	short2, cancel3 := context.WithTimeout(ctx, 30*time.Millisecond)
	defer cancel3()
	if _, err := f.WaitBackend(short2, device.Reconfigured); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("timeout: %v", err)
	}
	// The guest cannot write into the backend directory.
	if err := g.WriteString(ctx, back+"/state", "1"); !errors.Is(err, wire.ErrAccess) {
		t.Fatalf("write to backend: %v", err)
	}
}

func TestOpenErrors(t *testing.T) {
	s := memstore.New()
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	g, _ := s.Connect(5)
	if _, err := device.Open(ctx, g, "vif", "0"); !errors.Is(err, wire.ErrNotExist) {
		t.Fatalf("missing device: %v", err)
	}
	s.AddDevice(memstore.Device{Frontend: 5, Class: "vif", ID: "0"})
	s.Write("/local/domain/5/device/vif/0/backend-id", "zero")
	if _, err := device.Open(ctx, g, "vif", "0"); !errors.Is(err, wire.ErrMalformed) {
		t.Fatalf("bad backend-id: %v", err)
	}
	s.Write("/local/domain/5/device/vif/0/backend", "rel/path")
	if _, err := device.Open(ctx, g, "vif", "0"); !errors.Is(err, wire.ErrMalformed) {
		t.Fatalf("bad backend: %v", err)
	}
}

func TestStates(t *testing.T) {
	for s := device.Unknown; s <= device.Reconfigured; s++ {
		p, err := device.ParseState(string(rune('0' + s)))
		if err != nil || p != s {
			t.Errorf("%v: %v %v", s, p, err)
		}
	}
	if device.Connected.String() != "Connected" || device.State(42).String() != "State(42)" {
		t.Error("String")
	}
	for _, bad := range []string{"", "9", "-1", "x", "4x"} {
		if _, err := device.ParseState(bad); !errors.Is(err, wire.ErrMalformed) {
			t.Errorf("ParseState(%q): %v", bad, err)
		}
	}
}
