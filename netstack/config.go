package netstack

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"time"
)

// Config says how a Stack gets its addresses and what it runs.
type Config struct {
	// Addr is the static IPv4 address with its prefix length; when it is
	// the zero Prefix the stack uses DHCP.
	Addr netip.Prefix
	// Gateway is the static default router; optional.
	Gateway netip.Addr
	// DNS lists static name servers; optional.
	DNS []netip.Addr
	// IPv6 also runs IPv6, with a link-local address from the MAC and
	// addresses and routers from router advertisements (SLAAC).
	IPv6 bool
	// Hostname is sent to the DHCP server; optional.
	Hostname string
	// DHCPTimeout bounds how long New waits for the first lease; 0 means
	// 30 s.
	DHCPTimeout time.Duration
	// DHCPRetransmit is the DHCP client's first retransmission interval;
	// 0 means 4 s (RFC 2131).
	DHCPRetransmit time.Duration
}

// ErrConfig is wrapped by the errors of ParseArgs.
var ErrConfig = errors.New("netstack: bad network configuration")

// ParseArgs reads the network configuration from command-line words as
// given in xl's extra= (for a Gozen guest, os.Args): "ip=ADDR/BITS" for a
// static address, "ip=dhcp" (the default), "gw=ADDR", "dns=ADDR[,ADDR...]"
// and "ipv6=on|off". Other words are ignored; a bad value, or gw= or dns=
// without a static ip=, is an error wrapping ErrConfig.
func ParseArgs(args []string) (Config, error) {
	var c Config
	var haveGW, haveDNS, dhcp bool
	for _, w := range args {
		key, val, ok := strings.Cut(w, "=")
		if !ok {
			continue
		}
		switch key {
		case "ip":
			if val == "dhcp" {
				dhcp, c.Addr = true, netip.Prefix{}
				continue
			}
			p, err := netip.ParsePrefix(val)
			if err != nil || !p.Addr().Is4() || !usable4(p.Addr()) || p.Bits() == 0 {
				return Config{}, fmt.Errorf("%w: ip=%q: want an IPv4 address with prefix length like 10.0.0.2/24, or dhcp", ErrConfig, val)
			}
			c.Addr, dhcp = p, false
		case "gw":
			a, err := netip.ParseAddr(val)
			if err != nil || !usable4(a) {
				return Config{}, fmt.Errorf("%w: gw=%q: want an IPv4 unicast address", ErrConfig, val)
			}
			c.Gateway, haveGW = a, true
		case "dns":
			c.DNS = nil
			for _, s := range strings.Split(val, ",") {
				a, err := netip.ParseAddr(s)
				if err != nil || !a.IsValid() || a.IsUnspecified() || a.IsMulticast() {
					return Config{}, fmt.Errorf("%w: dns=%q: %q is not a unicast IP address", ErrConfig, val, s)
				}
				c.DNS = append(c.DNS, a.Unmap())
			}
			haveDNS = true
		case "ipv6":
			switch val {
			case "on", "1", "yes", "true":
				c.IPv6 = true
			case "off", "0", "no", "false":
				c.IPv6 = false
			default:
				return Config{}, fmt.Errorf("%w: ipv6=%q: want on or off", ErrConfig, val)
			}
		}
	}
	if !c.Addr.IsValid() && (haveGW || haveDNS) {
		mode := "without ip="
		if dhcp {
			mode = "with ip=dhcp"
		}
		return Config{}, fmt.Errorf("%w: gw= and dns= need a static ip=, not %s", ErrConfig, mode)
	}
	if c.Gateway.IsValid() && !c.Addr.Masked().Contains(c.Gateway) {
		return Config{}, fmt.Errorf("%w: gw=%v is not in %v", ErrConfig, c.Gateway, c.Addr.Masked())
	}
	if c.Gateway.IsValid() && c.Gateway == c.Addr.Addr() {
		return Config{}, fmt.Errorf("%w: gw=%v is the guest's own address", ErrConfig, c.Gateway)
	}
	return c, nil
}

func usable4(a netip.Addr) bool {
	return a.Is4() && !a.IsUnspecified() && !a.IsLoopback() && !a.IsMulticast() && a.As4()[0] < 240
}

// Static reports whether c gives a static address.
func (c Config) Static() bool { return c.Addr.IsValid() }

// String prints the configuration in one line: "dhcp" or
// "static 10.0.0.2/24 gw 10.0.0.1 dns 10.0.0.1,8.8.8.8".
func (c Config) String() string {
	if !c.Static() {
		return "dhcp"
	}
	return Addressing{Source: "static", Addr: c.Addr, Gateway: c.Gateway, DNS: c.DNS}.String()
}

// Addressing is the IPv4 configuration a Stack is using.
type Addressing struct {
	// Source is "static", "dhcp", or "none" (a DHCP lease was lost and
	// not yet replaced).
	Source  string
	Addr    netip.Prefix
	Gateway netip.Addr   // invalid when there is none
	DNS     []netip.Addr // possibly empty
	// Lease and Server describe a DHCP lease.
	Lease  time.Duration
	Server netip.Addr
}

// String prints the addressing in one line, as a guest prints it on its
// console after "net: ": "dhcp 10.0.2.15/24 gw 10.0.2.2 dns 10.0.2.3" or
// "static 10.0.0.2/24 gw 10.0.0.1 dns 10.0.0.1,8.8.8.8".
func (a Addressing) String() string {
	if a.Source == "none" || !a.Addr.IsValid() {
		return a.Source + " (no address)"
	}
	s := a.Source + " " + a.Addr.String()
	if a.Gateway.IsValid() {
		s += " gw " + a.Gateway.String()
	}
	if len(a.DNS) > 0 {
		s += " dns "
		for i, d := range a.DNS {
			if i > 0 {
				s += ","
			}
			s += d.String()
		}
	}
	return s
}
