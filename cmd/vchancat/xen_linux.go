package main

import (
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/gozen-dev/gozen/domid"
	"github.com/gozen-dev/gozen/drivers/vchan"
	"github.com/gozen-dev/gozen/evtchn/evlinux"
	"github.com/gozen-dev/gozen/gnttab/gntlinux"
	"github.com/gozen-dev/gozen/xenbus"
	"github.com/gozen-dev/gozen/xenbus/xslinux"
)

// xenServices opens what -xen runs on in a Linux domain: event channels
// through /dev/xen/evtchn, grants through /dev/xen/gntalloc and gntdev,
// and xenstore through xenstored's socket or /dev/xen/xenbus. It returns
// the services, the domain's own id (from its xenstore home) and a
// function that closes them all.
func xenServices(ctx context.Context) (cfg vchan.Config, self domid.ID, closeAll func(), err error) {
	ev, err := evlinux.Open()
	if err != nil {
		return cfg, 0, nil, fmt.Errorf("event channels: %w", err)
	}
	mem, err := gntlinux.Open()
	if err != nil {
		ev.Shutdown()
		return cfg, 0, nil, fmt.Errorf("grants: %w", err)
	}
	conn, err := xslinux.Open()
	if err != nil {
		mem.Shutdown()
		ev.Shutdown()
		return cfg, 0, nil, fmt.Errorf("xenstore: %w", err)
	}
	dctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	xs, err := xenbus.DialTransport(dctx, conn)
	cancel()
	if err != nil {
		mem.Shutdown()
		ev.Shutdown()
		return cfg, 0, nil, fmt.Errorf("xenstore: %w", err)
	}
	closeAll = func() {
		xs.Close()
		mem.Shutdown()
		ev.Shutdown()
	}
	n, err := strconv.ParseUint(strings.TrimPrefix(xs.Home(), "/local/domain/"), 10, 16)
	if err != nil || domid.ID(n) >= domid.Self {
		closeAll()
		return cfg, 0, nil, fmt.Errorf("xenstore home %q is not /local/domain/<domid>", xs.Home())
	}
	self = domid.ID(n)
	cfg = vchan.Config{Events: ev, Memory: mem, Store: vchan.NewXenStore(xs, self), Self: self}
	return cfg, self, closeAll, nil
}
