package v4v

import (
	"fmt"
	"strconv"
	"strings"

	"github.com/gozen-dev/gozen/domid"
)

// Port is an Argo port (xen_argo_port_t). It has nothing to do with
// event-channel ports.
type Port uint32

// Addr is an Argo address (xen_argo_addr_t): a domain and a port. It
// implements net.Addr.
type Addr struct {
	// Domain is the domain id.
	Domain domid.ID
	// Port is the Argo port within that domain.
	Port Port
}

// Network returns "v4v".
func (a Addr) Network() string { return "v4v" }

// String returns "domain:port" in decimal, with "any" for domid.Any.
func (a Addr) String() string {
	if a.Domain == domid.Any {
		return "any:" + strconv.FormatUint(uint64(a.Port), 10)
	}
	return strconv.FormatUint(uint64(a.Domain), 10) + ":" + strconv.FormatUint(uint64(a.Port), 10)
}

// ParseAddr parses the form String produces: "domain:port" with decimal
// numbers, or "any:port".
func ParseAddr(s string) (Addr, error) {
	d, p, ok := strings.Cut(s, ":")
	if !ok {
		return Addr{}, fmt.Errorf("v4v: address %q: want domain:port: %w", s, ErrInvalid)
	}
	var a Addr
	if d == "any" {
		a.Domain = domid.Any
	} else {
		n, err := strconv.ParseUint(d, 10, 16)
		if err != nil {
			return Addr{}, fmt.Errorf("v4v: address %q: domain: %w", s, ErrInvalid)
		}
		a.Domain = domid.ID(n)
	}
	n, err := strconv.ParseUint(p, 10, 32)
	if err != nil {
		return Addr{}, fmt.Errorf("v4v: address %q: port: %w", s, ErrInvalid)
	}
	a.Port = Port(n)
	return a, nil
}
