package dhcp

import (
	"bytes"
	"errors"
	"net"
	"net/netip"
	"reflect"
	"testing"
)

func sample() *Message {
	return &Message{
		Op: OpReply, XID: 0x01020304, Broadcast: true,
		YIAddr: netip.MustParseAddr("10.0.2.15"), CHAddr: net.HardwareAddr{2, 0, 0, 0, 0, 1},
		CIAddr: netip.IPv4Unspecified(), SIAddr: netip.IPv4Unspecified(), GIAddr: netip.IPv4Unspecified(),
		Type: Ack, SubnetMask: netip.MustParseAddr("255.255.255.0"),
		Routers:  []netip.Addr{netip.MustParseAddr("10.0.2.2")},
		DNS:      []netip.Addr{netip.MustParseAddr("10.0.2.3"), netip.MustParseAddr("8.8.8.8")},
		ServerID: netip.MustParseAddr("10.0.2.2"), LeaseTime: 86400, T1: 100, T2: 200,
		Hostname: "g", ParamReq: []byte{1, 3}, ClientID: []byte{1, 2, 0, 0, 0, 0, 1},
	}
}

func TestMarshalParse(t *testing.T) {
	m := sample()
	got, err := Parse(m.Marshal())
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, m) {
		t.Errorf("round trip\n got %+v\nwant %+v", got, m)
	}
}

func TestParseMalformed(t *testing.T) {
	good := sample().Marshal()
	mod := func(f func([]byte) []byte) []byte { return f(append([]byte(nil), good...)) }
	end := bytes.IndexByte(good[minLen:], optEnd) + minLen
	cases := map[string][]byte{
		"short":         good[:minLen-1],
		"bad cookie":    mod(func(b []byte) []byte { b[headerLen] = 0; return b }),
		"bad htype":     mod(func(b []byte) []byte { b[1] = 6; return b }),
		"bad op":        mod(func(b []byte) []byte { b[0] = 9; return b }),
		"no end":        good[:end],
		"cut option":    good[:minLen+2],
		"mask length":   mod(func(b []byte) []byte { return append(b[:minLen], optSubnetMask, 3, 1, 2, 3, optEnd) }),
		"router length": mod(func(b []byte) []byte { return append(b[:minLen], optRouter, 5, 1, 2, 3, 4, 5, optEnd) }),
		"dns empty":     mod(func(b []byte) []byte { return append(b[:minLen], optDNS, 0, optEnd) }),
		"type length":   mod(func(b []byte) []byte { return append(b[:minLen], optMsgType, 2, 5, 5, optEnd) }),
		"lease length":  mod(func(b []byte) []byte { return append(b[:minLen], optLeaseTime, 2, 5, 5, optEnd) }),
		"repeated":      mod(func(b []byte) []byte { return append(b[:minLen], optMsgType, 1, 5, optMsgType, 1, 5, optEnd) }),
		"length beyond": mod(func(b []byte) []byte { return append(b[:minLen], optHostname, 200, 'x') }),
	}
	for name, b := range cases {
		if _, err := Parse(b); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", name, err)
		}
	}
}

func TestLeaseOf(t *testing.T) {
	m := sample()
	l, err := leaseOf(m, netip.Addr{})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := l.String(), "10.0.2.15/24 gw 10.0.2.2 dns 10.0.2.3,8.8.8.8 lease 24h0m0s from 10.0.2.2"; got != want {
		t.Errorf("lease %q, want %q", got, want)
	}
	if l.T1.Seconds() != 100 || l.T2.Seconds() != 200 {
		t.Errorf("T1 %v T2 %v", l.T1, l.T2)
	}
	m.T1, m.T2 = 300, 200 // inconsistent: defaults
	if l, _ = leaseOf(m, netip.Addr{}); l.T1.Hours() != 12 || l.T2.Hours() != 21 {
		t.Errorf("default T1 %v T2 %v", l.T1, l.T2)
	}
	m.LeaseTime = 0xffffffff
	if l, _ = leaseOf(m, netip.Addr{}); l.Duration != Infinite || !l.Expiry().IsZero() {
		t.Errorf("infinite lease %v", l)
	}
	m = sample()
	m.ServerID = netip.Addr{}
	if _, err := leaseOf(m, netip.Addr{}); !errors.Is(err, ErrBadReply) {
		t.Errorf("no server id: %v", err)
	}
}

func FuzzParse(f *testing.F) {
	f.Add(sample().Marshal())
	b := sample().Marshal()
	f.Add(b[:minLen+3])
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Parse(b)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v does not wrap ErrMalformed", err)
			}
			return
		}
		// What parses, marshals and parses again to the same message
		// (options the client does not keep aside).
		m2, err := Parse(m.Marshal())
		if err != nil {
			t.Fatalf("re-parse: %v", err)
		}
		leaseOf(m, netip.Addr{})
		if m2.XID != m.XID || m2.Type != m.Type || m2.YIAddr != m.YIAddr || len(m2.DNS) != len(m.DNS) {
			t.Fatalf("round trip changed %+v to %+v", m, m2)
		}
	})
}
