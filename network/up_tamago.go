//go:build tamago

package network

import (
	"context"
	"fmt"
	"net"
	"os"

	"github.com/gozen-dev/gozen/drivers/netfront"
	"github.com/gozen-dev/gozen/netstack"
	"github.com/gozen-dev/gozen/platform"
	"github.com/gozen-dev/gozen/xenbus/device"
)

// Network is the guest's network: its vifs and the stack over them.
type Network struct {
	// NIC is the first vif, the one Up started on (Link.Stats counts
	// the current one).
	NIC *netfront.NIC
	// Bus connects the vifs and follows them.
	Bus *device.Bus
	// Link is the stack's NIC: the vif that is up (vif/0, or the first
	// one connected), then whichever replaces it after xl network-detach
	// and network-attach.
	Link *Link
	// Stack is the TCP/IP stack installed as net.SocketFunc.
	Stack *netstack.Stack
	// Config is what the command line asked for (DHCP when Addr is zero).
	Config netstack.Config
}

// Up connects the domain's vifs, starts a TCP/IP stack on the first one,
// addressed as the command line says (xl's extra=: "ip=10.0.0.2/24
// gw=10.0.0.1 dns=10.0.0.1", else DHCP; "queues=N" for up to N queues per
// vif where netback offers them, see ParseQueues), installs it as net.SocketFunc and
// its name servers with net.SetDefaultNS, and prints the addressing chosen
// ("net: dhcp 10.0.0.100/24 gw 10.0.0.1 dns 10.0.0.1"). The stack then
// follows the vifs (Link.Follow): when its vif goes away the link is down
// (connections stall, TCP retransmits) until another vif connects, which
// the stack takes (Stack.LinkChanged). Device errors and link changes are
// printed. The devices outlive ctx: its end does not stop them (the
// start is bounded by device.DefaultTimeout per vif and the DHCP
// timeout).
func Up(ctx context.Context) (*Network, error) {
	cfg, err := netstack.ParseArgs(os.Args[1:])
	if err != nil {
		return nil, fmt.Errorf("network: %w", err)
	}
	queues, err := ParseQueues(os.Args[1:])
	if err != nil {
		return nil, err
	}
	p := platform.Domain()
	g, err := p.Grants()
	if err != nil {
		return nil, fmt.Errorf("network: %w", err)
	}
	onError := func(e *device.DeviceError) { fmt.Printf("net: %v\n", e) }
	// The bus outlives ctx, to follow vifs that come and go (each
	// connection is bounded by the bus's Timeout).
	bus, err := p.StartDevices(context.WithoutCancel(ctx), onError, netfront.Driver{Config: netfront.Config{Events: p.Events(), Grants: g, MaxQueues: queues}})
	if err != nil {
		return nil, fmt.Errorf("network: %w", err)
	}
	link, err := BusLink(bus)
	if err != nil {
		return nil, fmt.Errorf("%w (is there a vif= line in the xl config?)", err)
	}
	st, err := netstack.New(link, cfg)
	if err != nil {
		return nil, fmt.Errorf("network: %w", err)
	}
	net.SocketFunc = st.Socket
	if dns := st.DNS(); len(dns) > 0 {
		net.SetDefaultNS(dns)
	}
	fmt.Printf("net: %s mac %s\n", st.Addressing(), link.MAC())
	go link.Follow(context.Background(), bus, func() {
		st.LinkChanged()
		fmt.Printf("net: link up on %s mac %s\n", link.Stats().VIF, link.MAC())
	})
	first, _ := link.Current().(*NIC)
	return &Network{NIC: first.nf, Bus: bus, Link: link, Stack: st, Config: cfg}, nil
}
