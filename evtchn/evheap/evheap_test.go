package evheap_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/gozen-dev/gozen/domid"
	"github.com/gozen-dev/gozen/evtchn"
	"github.com/gozen-dev/gozen/evtchn/evheap"
	"github.com/gozen-dev/gozen/evtchn/evtchntest"
)

func newPair(t *testing.T) (a, b evtchntest.Domain) {
	hub := evheap.NewHub()
	return domain(t, hub, 1), domain(t, hub, 2)
}

func domain(t *testing.T, hub *evheap.Hub, id domid.ID) evtchntest.Domain {
	d, err := hub.Domain(id)
	if err != nil {
		t.Fatal(err)
	}
	return evtchntest.Domain{Svc: d, ID: id, Leftovers: func() string {
		if n := d.Stats().Ports; n != 0 {
			return fmt.Sprintf("%d ports open", n)
		}
		return ""
	}}
}

func TestConformance(t *testing.T) {
	evtchntest.Run(t, newPair)
}

func TestDomainSelfIsNotAnID(t *testing.T) {
	if _, err := evheap.NewHub().Domain(domid.Self); !errors.Is(err, evtchn.ErrNoPeer) {
		t.Errorf("Domain(DomIDSelf): err = %v, want ErrNoPeer", err)
	}
}

func TestPortExhaustion(t *testing.T) {
	hub := evheap.NewHub()
	d, _ := hub.Domain(1)
	for i := 1; i < evheap.MaxPorts; i++ {
		if _, err := d.AllocUnbound(2); err != nil {
			t.Fatalf("port %d: %v", i, err)
		}
	}
	if _, err := d.AllocUnbound(2); !errors.Is(err, evtchn.ErrNoSpace) {
		t.Fatalf("AllocUnbound past MaxPorts: err = %v, want ErrNoSpace", err)
	}
	if err := d.Close(7); err != nil {
		t.Fatal(err)
	}
	if p, err := d.AllocUnbound(2); err != nil || p != 7 {
		t.Fatalf("AllocUnbound after Close(7) = %d, %v; want the freed port 7", p, err)
	}
	if got := hub.Stats().Ports; got != evheap.MaxPorts-1 {
		t.Errorf("Stats().Ports = %d, want %d", got, evheap.MaxPorts-1)
	}
}

func TestNotifyUnboundIsDropped(t *testing.T) {
	hub := evheap.NewHub()
	a, _ := hub.Domain(1)
	b, _ := hub.Domain(2)
	p, _ := a.AllocUnbound(2)
	if err := a.Notify(p); err != nil {
		t.Fatalf("Notify(unbound): %v", err)
	}
	q, err := b.BindInterdomain(1, p)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := b.Wait(ctx, q, 0); !errors.Is(err, context.Canceled) {
		t.Errorf("Wait after a notification sent before bind: err = %v, want Canceled", err)
	}
	a.Close(p)
	b.Close(q)
}

func BenchmarkRoundTrip(b *testing.B) {
	hub := evheap.NewHub()
	x, _ := hub.Domain(1)
	y, _ := hub.Domain(2)
	evtchntest.BenchmarkRoundTrip(b, evtchntest.Domain{Svc: x, ID: 1}, evtchntest.Domain{Svc: y, ID: 2})
}
