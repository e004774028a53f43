package netstack_test

import (
	"errors"
	"strings"
	"testing"

	"github.com/gozen-dev/gozen/netstack"
)

func TestParseArgs(t *testing.T) {
	cases := []struct {
		args string
		want string // Config.String(), or the error text
		err  bool
	}{
		{"", "dhcp", false},
		{"console=hvc0 quiet", "dhcp", false},
		{"ip=dhcp", "dhcp", false},
		{"ip=10.0.0.2/24", "static 10.0.0.2/24", false},
		{"app ip=10.0.0.2/24 gw=10.0.0.1 dns=10.0.0.1 other=x", "static 10.0.0.2/24 gw 10.0.0.1 dns 10.0.0.1", false},
		{"ip=10.0.0.2/24 gw=10.0.0.1 dns=10.0.0.1,8.8.8.8", "static 10.0.0.2/24 gw 10.0.0.1 dns 10.0.0.1,8.8.8.8", false},
		{"ip=10.0.0.2/24 dns=2001:db8::1", "static 10.0.0.2/24 dns 2001:db8::1", false},
		{"ip=10.0.0.2/24 ip=dhcp", "dhcp", false},
		{"ip=10.0.0.2", "ip=\"10.0.0.2\"", true},
		{"ip=10.0.0.2/33", "ip=", true},
		{"ip=2001:db8::2/64", "ip=", true},
		{"ip=0.0.0.0/8", "ip=", true},
		{"ip=224.0.0.1/24", "ip=", true},
		{"ip=10.0.0.2/24 gw=10.0.1.1", "not in 10.0.0.0/24", true},
		{"ip=10.0.0.2/24 gw=10.0.0.2", "own address", true},
		{"ip=10.0.0.2/24 gw=x", "gw=", true},
		{"ip=10.0.0.2/24 dns=10.0.0.1,", "dns=", true},
		{"ip=10.0.0.2/24 dns=0.0.0.0", "dns=", true},
		{"gw=10.0.0.1", "need a static ip=", true},
		{"ip=dhcp dns=8.8.8.8", "with ip=dhcp", true},
		{"ipv6=maybe", "ipv6=", true},
	}
	for _, tc := range cases {
		c, err := netstack.ParseArgs(strings.Fields(tc.args))
		switch {
		case tc.err && err == nil:
			t.Errorf("ParseArgs(%q) = %v, want an error", tc.args, c)
		case tc.err && (!errors.Is(err, netstack.ErrConfig) || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("ParseArgs(%q) error %q, want ErrConfig containing %q", tc.args, err, tc.want)
		case !tc.err && err != nil:
			t.Errorf("ParseArgs(%q): %v", tc.args, err)
		case !tc.err && c.String() != tc.want:
			t.Errorf("ParseArgs(%q) = %q, want %q", tc.args, c.String(), tc.want)
		}
	}
	c, err := netstack.ParseArgs([]string{"ipv6=on"})
	if err != nil || !c.IPv6 {
		t.Errorf("ipv6=on: %+v %v", c, err)
	}
}
