//go:build tamago

package network

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"

	"github.com/gozen-dev/gozen/drivers/netfront"
	"github.com/gozen-dev/gozen/netstack"
	"github.com/gozen-dev/gozen/platform"
	"github.com/gozen-dev/gozen/xenbus/device"
)

// Network is the guest's network: its vif and the stack over it.
type Network struct {
	// NIC is the vif (device vif/0, or the first one found).
	NIC *netfront.NIC
	// Stack is the TCP/IP stack installed as net.SocketFunc.
	Stack *netstack.Stack
	// Config is what the command line asked for (DHCP when Addr is zero).
	Config netstack.Config
}

// Up connects the domain's first vif, starts a TCP/IP stack on it,
// addressed as the command line says (xl's extra=: "ip=10.0.0.2/24
// gw=10.0.0.1 dns=10.0.0.1", else DHCP), installs it as net.SocketFunc and
// its name servers with net.SetDefaultNS, and prints the addressing chosen
// ("net: dhcp 10.0.0.100/24 gw 10.0.0.1 dns 10.0.0.1"). Device errors
// after start are printed too.
func Up(ctx context.Context) (*Network, error) {
	cfg, err := netstack.ParseArgs(os.Args[1:])
	if err != nil {
		return nil, fmt.Errorf("network: %w", err)
	}
	p := platform.Domain()
	g, err := p.Grants()
	if err != nil {
		return nil, fmt.Errorf("network: %w", err)
	}
	onError := func(e *device.DeviceError) { fmt.Printf("net: %v\n", e) }
	bus, err := p.StartDevices(ctx, onError, netfront.Driver{Config: netfront.Config{Events: p.Events(), Grants: g}})
	if err != nil {
		return nil, fmt.Errorf("network: %w", err)
	}
	var nic *netfront.NIC
	for _, d := range bus.Devices() {
		if n, ok := netfront.FromDevice(d); ok {
			nic = n
			break
		}
	}
	if nic == nil {
		return nil, errors.New("network: no vif connected (is there a vif= line in the xl config?)")
	}
	st, err := netstack.New(NewNIC(nic), cfg)
	if err != nil {
		return nil, fmt.Errorf("network: %w", err)
	}
	net.SocketFunc = st.Socket
	if dns := st.DNS(); len(dns) > 0 {
		net.SetDefaultNS(dns)
	}
	fmt.Printf("net: %s mac %s\n", st.Addressing(), nic.MAC())
	return &Network{NIC: nic, Stack: st, Config: cfg}, nil
}
