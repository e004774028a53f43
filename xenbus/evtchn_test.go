package xenbus_test

import (
	"context"
	"testing"
	"time"

	"github.com/gozen-dev/gozen/evtchn/evheap"
	"github.com/gozen-dev/gozen/xenbus"
	"github.com/gozen-dev/gozen/xenbus/memstore"
	"github.com/gozen-dev/gozen/xenbus/xsring"
)

// TestOverEventChannels builds the client exactly as the guest does: a
// store page and an (already bound) event-channel port of an
// evtchn.Events, with xenstored (memstore, in dom0) at the other end.
func TestOverEventChannels(t *testing.T) {
	hub := evheap.NewHub()
	guest, err := hub.Domain(7)
	if err != nil {
		t.Fatal(err)
	}
	dom0, err := hub.Domain(0)
	if err != nil {
		t.Fatal(err)
	}
	// The toolstack allocates the guest's store port; xenstored binds it.
	gport, err := guest.AllocUnbound(0)
	if err != nil {
		t.Fatal(err)
	}
	sport, err := dom0.BindInterdomain(7, gport)
	if err != nil {
		t.Fatal(err)
	}
	page := make([]byte, xsring.PageSize) // the store page both sides map
	s := memstore.New()
	defer s.Close()
	s.AddDomain(7)
	if _, err := s.Serve(page, xsring.EventChannel(dom0, sport), 7); err != nil {
		t.Fatal(err)
	}

	c, err := xenbus.New(page, xsring.EventChannel(guest, gport), 7)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	w, err := c.Watch(ctx, "control/shutdown")
	if err != nil {
		t.Fatal(err)
	}
	<-w.Events()
	big := make([]byte, 3000) // spans several ring laps
	if err := c.Write(ctx, "data/big", big); err != nil {
		t.Fatal(err)
	}
	if got, err := c.Read(ctx, "data/big"); err != nil || len(got) != len(big) {
		t.Fatalf("read: %d %v", len(got), err)
	}
	s.Write("/local/domain/7/control/shutdown", "poweroff")
	if ev := <-w.Events(); ev.Path != "/local/domain/7/control/shutdown" {
		t.Fatalf("event %q", ev.Path)
	}
	if v, _ := c.ReadString(ctx, "control/shutdown"); v != "poweroff" {
		t.Fatalf("got %q", v)
	}
}
