//go:build tamago

// Package xsxen connects a Gozen guest to xenstore: the ring page at
// HVM_PARAM_STORE_PFN and the event channel at HVM_PARAM_STORE_EVTCHN,
// driven by the portable xenbus client.
package xsxen

import (
	"context"
	"fmt"
	"sync"
	"time"

	"github.com/gozen-dev/gozen/boot"
	"github.com/gozen-dev/gozen/domid"
	"github.com/gozen-dev/gozen/evtchn"
	"github.com/gozen-dev/gozen/evtchn/evxen"
	"github.com/gozen-dev/gozen/hypercall"
	"github.com/gozen-dev/gozen/internal/phys"
	"github.com/gozen-dev/gozen/xenbus"
	"github.com/gozen-dev/gozen/xenbus/xsring"
)

var (
	once   sync.Once
	client *xenbus.Client
	err    error
	port   evtchn.Port
)

// Default returns the domain's xenstore client, connecting on first use.
// Paths are relative to /local/domain/<domid> unless absolute.
func Default() (*xenbus.Client, error) {
	once.Do(func() { client, err = connect() })
	return client, err
}

// Port returns the xenstore event channel (valid after Default).
func Port() evtchn.Port { return port }

func connect() (*xenbus.Client, error) {
	ev := evxen.Default()
	if ev == nil {
		return nil, fmt.Errorf("xsxen: event channels not set up")
	}
	pfn, err := hypercall.GetParam(hypercall.HVMParamStorePFN)
	if err != nil || pfn == 0 {
		return nil, fmt.Errorf("xsxen: no xenstore ring (HVM_PARAM_STORE_PFN %d): %v", pfn, err)
	}
	p, err := hypercall.GetParam(hypercall.HVMParamStoreEvtchn)
	if err != nil || p == 0 || p >= evxen.NrPorts {
		return nil, fmt.Errorf("xsxen: no xenstore event channel (HVM_PARAM_STORE_EVTCHN %d): %v", p, err)
	}
	port = evtchn.Port(p)
	if err := ev.Adopt(port); err != nil {
		return nil, fmt.Errorf("xsxen: %w", err)
	}
	page := phys.Bytes(uintptr(pfn<<12), 4096)
	n := xsring.EventChannel(ev, port)
	if id, ok := boot.DomID(); ok {
		return xenbus.New(page, n, domid.ID(id))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return xenbus.Dial(ctx, page, n)
}
