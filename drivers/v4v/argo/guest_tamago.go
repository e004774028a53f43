//go:build tamago

package argo

import (
	"context"
	"fmt"

	"github.com/gozen-dev/gozen/domid"
	"github.com/gozen-dev/gozen/evtchn"
	"github.com/gozen-dev/gozen/evtchn/evxen"
	"github.com/gozen-dev/gozen/platform"
)

// Open returns Argo for this Gozen guest: VIRQ_ARGO is bound through the
// domain's event-channel service (its events wake blocked reads and
// sends), and the domain id comes from Xen's CPUID leaf. On a hypervisor
// without Argo it fails with an error wrapping v4v.ErrNotSupported.
func Open() (*Hypervisor, error) {
	p := platform.Domain()
	ev := p.Events()
	port, err := ev.BindVIRQ(evxen.VIRQArgo, nil)
	if err != nil {
		return nil, fmt.Errorf("argo: binding VIRQ_ARGO: %w", err)
	}
	dom := domid.Any
	if id, ok := p.Self(); ok {
		dom = id
	}
	h, err := New(Config{Domain: dom, Wait: func(ctx context.Context, seen uint64) (uint64, error) {
		g, err := ev.Wait(ctx, port, evtchn.Generation(seen))
		return uint64(g), err
	}})
	if err != nil {
		ev.Close(port)
		return nil, err
	}
	h.virq = port
	return h, nil
}
