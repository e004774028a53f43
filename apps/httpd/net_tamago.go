//go:build tamago

package main

import (
	"context"
	"time"

	"github.com/gozen-dev/gozen/network"
	_ "github.com/gozen-dev/gozen/xenbus/control" // xl shutdown / xl reboot
)

// gozen is the domain's vif under Gozen's TCP/IP stack.
type gozen struct{ n *network.Network }

// up brings the vif up: DHCP, or the address on the command line.
func up() (platform, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	n, err := network.Up(ctx)
	if err != nil {
		return nil, err
	}
	return gozen{n}, nil
}

func (g gozen) Addressing() addressing {
	a := g.n.Stack.Addressing()
	s := addressing{Source: a.Source, Addr: a.Addr.String()}
	if a.Gateway.IsValid() {
		s.Gateway = a.Gateway.String()
	}
	for _, d := range a.DNS {
		s.DNS = append(s.DNS, d.String())
	}
	if a.Lease > 0 {
		s.Lease = a.Lease.String()
	}
	return s
}

func (g gozen) Counters() (link, stack any) {
	return g.n.Link.Stats(), g.n.Stack.Stats()
}
