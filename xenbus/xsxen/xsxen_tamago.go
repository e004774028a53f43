//go:build tamago

// Package xsxen connects a Gozen guest to xenstore: the ring page at
// HVM_PARAM_STORE_PFN and the event channel at HVM_PARAM_STORE_EVTCHN,
// driven by the portable xenbus client. Package platform owns the
// domain's one connection and calls Connect and Reconnect; apps and
// drivers take the client from the platform.
package xsxen

import (
	"context"
	"fmt"
	"time"

	"github.com/gozen-dev/gozen/domid"
	"github.com/gozen-dev/gozen/evtchn"
	"github.com/gozen-dev/gozen/evtchn/evxen"
	"github.com/gozen-dev/gozen/hypercall"
	"github.com/gozen-dev/gozen/internal/phys"
	"github.com/gozen-dev/gozen/xenbus"
	"github.com/gozen-dev/gozen/xenbus/xsring"
)

// Ring is the store ring the toolstack set up: its page and its already
// bound event channel.
type Ring struct {
	// Page is the ring page (struct xenstore_domain_interface).
	Page []byte
	// Port is the event channel to xenstored.
	Port evtchn.Port
}

// Find reads the store ring's page and port from the HVM parameters and
// adopts the port in ev. Checked: a zero page or a port outside the
// 2-level ABI is an error.
func Find(ev *evxen.Events) (Ring, error) {
	pfn, err := hypercall.GetParam(hypercall.HVMParamStorePFN)
	if err != nil || pfn == 0 {
		return Ring{}, fmt.Errorf("xsxen: no xenstore ring (HVM_PARAM_STORE_PFN %d): %v", pfn, err)
	}
	p, err := hypercall.GetParam(hypercall.HVMParamStoreEvtchn)
	if err != nil || p == 0 || p >= evxen.NrPorts {
		return Ring{}, fmt.Errorf("xsxen: no xenstore event channel (HVM_PARAM_STORE_EVTCHN %d): %v", p, err)
	}
	port := evtchn.Port(p)
	if err := ev.Adopt(port); err != nil {
		return Ring{}, fmt.Errorf("xsxen: %w", err)
	}
	return Ring{Page: phys.Bytes(uintptr(pfn<<12), 4096), Port: port}, nil
}

// Connect starts a xenstore client on the domain's store ring. With
// known, self is the domain's id; otherwise the client reads it from the
// store (10 s at most).
func Connect(ev *evxen.Events, self domid.ID, known bool) (*xenbus.Client, Ring, error) {
	r, err := Find(ev)
	if err != nil {
		return nil, Ring{}, err
	}
	n := xsring.EventChannel(ev, r.Port)
	if known {
		c, err := xenbus.New(r.Page, n, self)
		return c, r, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := xenbus.Dial(ctx, r.Page, n)
	return c, r, err
}

// Reconnect resumes a suspended client c after a resume into a new
// domain: the ring and port are read again (the toolstack gave the new
// domain fresh ones) and c takes them up, registering its watches again.
func Reconnect(ctx context.Context, ev *evxen.Events, c *xenbus.Client) (Ring, error) {
	r, err := Find(ev)
	if err != nil {
		return Ring{}, err
	}
	if err := c.Resume(ctx, false, r.Page, xsring.EventChannel(ev, r.Port)); err != nil {
		return r, fmt.Errorf("xsxen: %w", err)
	}
	return r, nil
}
