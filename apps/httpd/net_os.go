//go:build !tamago

package main

import (
	"fmt"
	"net"
)

// hosted is the operating system's network: the addresses are its own.
type hosted struct{}

// up has nothing to bring up: the operating system configured the network.
func up() (platform, error) {
	if _, err := net.Interfaces(); err != nil {
		return nil, fmt.Errorf("httpd: network interfaces: %w", err)
	}
	return hosted{}, nil
}

func (hosted) Addressing() addressing {
	a := addressing{Source: "os"}
	addrs, _ := net.InterfaceAddrs()
	for _, x := range addrs {
		if n, ok := x.(*net.IPNet); ok && !n.IP.IsLoopback() && n.IP.To4() != nil {
			a.Addr = n.String()
			break
		}
	}
	return a
}

func (hosted) Counters() (link, stack any) { return nil, nil }
