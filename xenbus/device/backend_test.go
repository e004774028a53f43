package device_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/gozen-dev/gozen/domid"
	"github.com/gozen-dev/gozen/xenbus/device"
	"github.com/gozen-dev/gozen/xenbus/memstore"
	"github.com/gozen-dev/gozen/xenbus/wire"
)

func TestBackendHandshake(t *testing.T) {
	s := memstore.New()
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	front, back, err := s.AddDevice(memstore.Device{Frontend: 5, Backend: 0, Class: "vif", ID: "0"})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.AddDevice(memstore.Device{Frontend: 6, Backend: 0, Class: "vif", ID: "3"}); err != nil {
		t.Fatal(err)
	}
	g, err := s.Connect(5)
	if err != nil {
		t.Fatal(err)
	}
	dom0, err := s.Connect(0)
	if err != nil {
		t.Fatal(err)
	}
	devs, err := device.EnumerateBackend(ctx, dom0, "vif")
	if err != nil || len(devs) != 2 || devs[0] != (device.BackendDevice{FrontID: 5, ID: "0"}) || devs[1] != (device.BackendDevice{FrontID: 6, ID: "3"}) {
		t.Fatalf("EnumerateBackend = %v, %v", devs, err)
	}
	if devs, err := device.EnumerateBackend(ctx, dom0, "vbd"); err != nil || len(devs) != 0 {
		t.Fatalf("EnumerateBackend vbd = %v, %v", devs, err)
	}
	b, err := device.OpenBackend(ctx, dom0, "vif", 5, "0")
	if err != nil {
		t.Fatal(err)
	}
	if b.Path != back || b.Frontend != front || b.FrontendID != 5 || b.Name() != "vif/5/0" {
		t.Fatalf("backend %+v", b)
	}
	if err := b.Publish(ctx, []device.KV{device.Uint("feature-sg", uint8(1)), {Key: "feature-rx-copy", Value: "1"}}, device.InitWait); err != nil {
		t.Fatal(err)
	}
	f, err := device.Open(ctx, g, "vif", "0")
	if err != nil {
		t.Fatal(err)
	}
	if st, err := f.WaitBackend(ctx, device.InitWait); err != nil || st != device.InitWait {
		t.Fatalf("WaitBackend = %v, %v", st, err)
	}
	if sg, err := f.Feature(ctx, "sg"); err != nil || !sg {
		t.Fatalf("feature-sg = %v, %v", sg, err)
	}
	go f.Publish(ctx, []device.KV{device.Uint("tx-ring-ref", uint32(8)), {Key: "event-channel", Value: "x9"}, {Key: "request-rx-copy", Value: "1"}}, device.Initialised)
	if st, err := b.WaitFrontend(ctx, device.Initialised, device.Connected); err != nil || st != device.Initialised {
		t.Fatalf("WaitFrontend = %v, %v", st, err)
	}
	if v, err := b.ReadFrontendUint(ctx, "tx-ring-ref", 32); err != nil || v != 8 {
		t.Fatalf("tx-ring-ref = %v, %v", v, err)
	}
	if _, err := b.ReadFrontendUint(ctx, "event-channel", 32); !errors.Is(err, wire.ErrMalformed) {
		t.Fatalf("malformed event-channel: %v", err)
	}
	if _, err := b.ReadFrontendUint(ctx, "rx-ring-ref", 32); !errors.Is(err, wire.ErrNotExist) {
		t.Fatalf("missing rx-ring-ref: %v", err)
	}
	if ok, err := b.FrontendFlag(ctx, "request-rx-copy"); err != nil || !ok {
		t.Fatalf("request-rx-copy = %v, %v", ok, err)
	}
	if ok, err := b.FrontendFlag(ctx, "feature-nope"); err != nil || ok {
		t.Fatalf("feature-nope = %v, %v", ok, err)
	}
	if err := b.SwitchState(ctx, device.Connected); err != nil {
		t.Fatal(err)
	}
	if st, err := b.State(ctx); err != nil || st != device.Connected {
		t.Fatalf("State = %v, %v", st, err)
	}
	if st, err := b.FrontendState(ctx); err != nil || st != device.Initialised {
		t.Fatalf("FrontendState = %v, %v", st, err)
	}

	// The frontend closes: a wait for Connected fails, Disconnect follows.
	done := make(chan error, 1)
	go func() { done <- f.Disconnect(ctx, 5*time.Second) }()
	if st, err := b.WaitFrontend(ctx, device.Closing); err != nil || st != device.Closing {
		t.Fatalf("WaitFrontend(Closing) = %v, %v", st, err)
	}
	if err := b.Disconnect(ctx, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("frontend Disconnect: %v", err)
	}
	if st, _ := b.State(ctx); st != device.Closed {
		t.Fatalf("backend state %v", st)
	}
	// Waiting for a state the closed frontend will not reach fails.
	if _, err := b.WaitFrontend(ctx, device.Connected); !errors.Is(err, device.ErrFrontendClosed) {
		t.Fatalf("WaitFrontend(Connected) on a closed frontend: %v", err)
	}
	// A removed directory is not re-created by a state switch.
	if err := s.Rm(back); err != nil {
		t.Fatal(err)
	}
	if err := b.SwitchState(ctx, device.InitWait); !errors.Is(err, wire.ErrNotExist) {
		t.Fatalf("SwitchState on removed dir: %v", err)
	}
}

func TestOpenBackendMalformed(t *testing.T) {
	s := memstore.New()
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, back, err := s.AddDevice(memstore.Device{Frontend: 5, Backend: 0, Class: "vif", ID: "0"})
	if err != nil {
		t.Fatal(err)
	}
	dom0, err := s.Connect(0)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		key, value string
		want       error
	}{
		{"frontend-id", "6", wire.ErrMalformed},
		{"frontend-id", "x", wire.ErrMalformed},
		{"frontend", "relative/path", wire.ErrMalformed},
		{"frontend", "/", wire.ErrMalformed},
	} {
		good, _ := s.Read(back + "/" + tc.key)
		s.Write(back+"/"+tc.key, tc.value)
		if _, err := device.OpenBackend(ctx, dom0, "vif", 5, "0"); !errors.Is(err, tc.want) {
			t.Errorf("%s=%q: %v, want %v", tc.key, tc.value, err, tc.want)
		}
		s.Write(back+"/"+tc.key, good)
	}
	for _, tc := range []struct {
		class, id string
		front     domid.ID
	}{{"", "0", 5}, {"vif", "a/b", 5}, {"v/if", "0", 5}, {"vif", "0", domid.Self}} {
		if _, err := device.OpenBackend(ctx, dom0, tc.class, tc.front, tc.id); !errors.Is(err, wire.ErrInvalid) {
			t.Errorf("OpenBackend(%q, %d, %q) = %v", tc.class, tc.front, tc.id, err)
		}
	}
	if _, err := device.OpenBackend(ctx, dom0, "vif", 5, "1"); !errors.Is(err, wire.ErrNotExist) {
		t.Errorf("missing device: %v", err)
	}
}
