package network_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/gozen-dev/gozen/domid"
	"github.com/gozen-dev/gozen/drivers/netback"
	"github.com/gozen-dev/gozen/drivers/netfront"
	"github.com/gozen-dev/gozen/evtchn/evheap"
	"github.com/gozen-dev/gozen/gnttab/gntheap"
	"github.com/gozen-dev/gozen/netstack"
	"github.com/gozen-dev/gozen/netstack/pipenic"
	"github.com/gozen-dev/gozen/network"
	"github.com/gozen-dev/gozen/xenbus/device"
	"github.com/gozen-dev/gozen/xenbus/memstore"
)

const (
	guest   domid.ID = 5
	backDom domid.ID = 0
)

var (
	guestMAC = net.HardwareAddr{0x00, 0x16, 0x3e, 0x01, 0x02, 0x03}
	backMAC  = net.HardwareAddr{0x02, 0, 0, 0, 0, 0x01}
	ipBack   = netip.MustParseAddr("10.0.0.1")
	ipFront  = netip.MustParseAddr("10.0.0.2")
)

// variant is a set of features of the backend: what netback offers the
// guest's netfront (scatter-gather, GSO) and what the backend's stack may
// send to the guest (checksum-blank and GSO frames), and the queues
// offered and used (0: one, without multi-queue-max-queues).
type variant struct {
	name    string
	sg, gso bool
	backOff netstack.Offloads
	queues  int
}

var variants = []variant{
	{"gso", true, true, netstack.Offloads{TXChecksum: true, GSOTCPv4: true, GSOTCPv6: true}, 0},
	{"sg", true, false, netstack.Offloads{TXChecksum: true}, 0},
	{"nooffload", false, false, netstack.Offloads{}, 0},
	{"gso-4queues", true, true, netstack.Offloads{TXChecksum: true, GSOTCPv4: true, GSOTCPv6: true}, 4},
}

// rig is a guest's stack over netfront connected to netback in dom0,
// whose BackendNIC carries a second stack, all in one process over
// memstore, evheap and gntheap: back at 10.0.0.1/24, front at
// 10.0.0.2/24 (or what newRigConfig's frontCfg says).
type rig struct {
	t     testing.TB
	ctx   context.Context
	s     *memstore.Store
	ev    *evheap.Hub
	gnt   *gntheap.Hub
	f     *device.Frontend
	nf    *netfront.NIC
	bnic  *network.BackendNIC
	back  *netstack.Stack
	front *netstack.Stack

	closed bool
}

// newRig is the rig of variant v with static addresses.
func newRig(t testing.TB, v variant) *rig {
	return newRigConfig(t, v, netstack.Config{Addr: netip.PrefixFrom(ipFront, 24)}, nil)
}

// newRigConfig is newRig with the guest's stack configured by frontCfg;
// setup, when not nil, runs once the backend's stack is up and before the
// guest's starts (a DHCP server).
func newRigConfig(t testing.TB, v variant, frontCfg netstack.Config, setup func(*rig)) *rig {
	t.Helper()
	r := newDevices(t, v, network.BackendConfig{MAC: backMAC, Offloads: v.backOff}, true)
	var err error
	if r.back, err = netstack.New(r.bnic, netstack.Config{Addr: netip.PrefixFrom(ipBack, 24)}); err != nil {
		t.Fatal(err)
	}
	if setup != nil {
		setup(r)
	}
	if r.front, err = netstack.New(network.NewNIC(r.nf), frontCfg); err != nil {
		t.Fatal(err)
	}
	return r
}

// newDevices makes the rig's vif without stacks: the BackendNIC and, if
// connect, the connected netfront.
func newDevices(t testing.TB, v variant, cfg network.BackendConfig, connect bool) *rig {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	r := &rig{t: t, ctx: ctx, s: memstore.New(), ev: evheap.NewHub(), gnt: gntheap.NewHub()}
	t.Cleanup(r.close)
	if _, _, err := r.s.AddDevice(memstore.Device{Frontend: guest, Backend: backDom, Class: "vif", ID: "0",
		FrontendKeys: map[string]string{"mac": guestMAC.String()}}); err != nil {
		t.Fatal(err)
	}
	g, err := r.s.Connect(guest)
	if err != nil {
		t.Fatal(err)
	}
	dom0, err := r.s.Connect(backDom)
	if err != nil {
		t.Fatal(err)
	}
	gev, _ := r.ev.Domain(guest)
	bev, _ := r.ev.Domain(backDom)
	ggnt, _ := r.gnt.Domain(guest)
	bgnt, _ := r.gnt.Domain(backDom)
	b, err := device.OpenBackend(ctx, dom0, "vif", guest, "0")
	if err != nil {
		t.Fatal(err)
	}
	r.bnic, err = network.ServeBackend(ctx, b,
		netback.Options{Events: bev, Grants: bgnt, SG: v.sg, GSOTCPv4: v.gso, GSOTCPv6: v.gso, MaxQueues: v.queues},
		cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !connect {
		return r
	}
	if r.f, err = device.Open(ctx, g, "vif", "0"); err != nil {
		t.Fatal(err)
	}
	if r.nf, err = netfront.Connect(ctx, r.f, netfront.Config{Events: gev, Grants: ggnt, MaxQueues: v.queues}); err != nil {
		t.Fatal(err)
	}
	if err := r.bnic.VIF().WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	return r
}

// close stops both stacks, runs the vif's close handshake, closes both
// ends and checks that no grant, mapping or port is left.
func (r *rig) close() {
	if r.closed {
		return
	}
	r.closed = true
	if r.front != nil {
		r.front.Close()
	}
	if r.back != nil {
		r.back.Close()
	}
	if r.f != nil && r.nf != nil {
		if err := r.f.Disconnect(r.ctx, 5*time.Second); err != nil {
			r.t.Errorf("Disconnect: %v", err)
		}
		if err := r.nf.Close(); err != nil {
			r.t.Errorf("netfront Close: %v", err)
		}
	}
	if r.bnic != nil {
		r.bnic.Close()
		if errs := r.bnic.VIF().Errors(); len(errs) != 0 {
			r.t.Errorf("netback errors: %v", errs)
		}
	}
	if s := r.gnt.Stats(); s.String() != "" {
		r.t.Errorf("grant leftovers: %v", s)
	}
	if s := r.ev.Stats(); s.Ports != 0 {
		r.t.Errorf("port leftovers: %d", s.Ports)
	}
	r.s.Close()
}

// pipeRig is the same pair of stacks over a pipenic pair (no Xen path),
// for comparison in benchmarks.
func pipeRig(t testing.TB, off netstack.Offloads) (back, front *netstack.Stack) {
	t.Helper()
	nb, nf := pipenic.Pair(1500, off)
	back, err := netstack.New(nb, netstack.Config{Addr: netip.PrefixFrom(ipBack, 24)})
	if err != nil {
		t.Fatal(err)
	}
	front, err = netstack.New(nf, netstack.Config{Addr: netip.PrefixFrom(ipFront, 24)})
	if err != nil {
		back.Close()
		t.Fatal(err)
	}
	t.Cleanup(func() { front.Close(); back.Close(); nb.Close(); nf.Close() })
	return back, front
}

func tcpAddr(a netip.Addr, port int) *net.TCPAddr {
	return &net.TCPAddr{IP: net.IP(a.AsSlice()), Port: port}
}

func udpAddr(a netip.Addr, port int) *net.UDPAddr {
	return &net.UDPAddr{IP: net.IP(a.AsSlice()), Port: port}
}

// listen opens a TCP listener on st as net.Listen("tcp4", ":port") would.
func listen(t testing.TB, st *netstack.Stack, port int) net.Listener {
	t.Helper()
	c, err := st.Socket(context.Background(), "tcp", syscall.AF_INET, syscall.SOCK_STREAM, &net.TCPAddr{Port: port}, nil)
	if err != nil {
		t.Fatal(err)
	}
	l, ok := c.(net.Listener)
	if !ok {
		t.Fatalf("Socket listen returned %T, want net.Listener", c)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

// dial connects from st to addr as net.Dial("tcp", addr) would.
func dial(t testing.TB, st *netstack.Stack, addr *net.TCPAddr) net.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	c, err := st.Socket(ctx, "tcp", syscall.AF_INET, syscall.SOCK_STREAM, nil, addr)
	if err != nil {
		t.Fatal(err)
	}
	conn, ok := c.(net.Conn)
	if !ok {
		t.Fatalf("Socket dial returned %T, want net.Conn", c)
	}
	return conn
}

// echoServer accepts on l and echoes every connection until l closes.
func echoServer(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			io.Copy(c, c)
		}()
	}
}

// echoRoundTrip writes n random bytes on c while reading the echo, and
// compares SHA-256 sums.
func echoRoundTrip(t testing.TB, c net.Conn, n int, seed uint64) {
	t.Helper()
	src := make([]byte, n)
	rng := rand.New(rand.NewPCG(seed, seed))
	for i := range src {
		src[i] = byte(rng.Uint32())
	}
	want := sha256.Sum256(src)
	errc := make(chan error, 1)
	go func() {
		_, err := c.Write(src)
		errc <- err
	}()
	h := sha256.New()
	if _, err := io.CopyN(h, c, int64(n)); err != nil {
		t.Fatalf("read echo: %v", err)
	}
	if err := <-errc; err != nil {
		t.Fatalf("write: %v", err)
	}
	if got := h.Sum(nil); !bytes.Equal(got, want[:]) {
		t.Fatalf("echo of %d bytes differs", n)
	}
}
