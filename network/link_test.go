package network_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gozen-dev/gozen/drivers/netback"
	"github.com/gozen-dev/gozen/drivers/netfront"
	"github.com/gozen-dev/gozen/evtchn/evheap"
	"github.com/gozen-dev/gozen/gnttab/gntheap"
	"github.com/gozen-dev/gozen/netstack"
	"github.com/gozen-dev/gozen/network"
	"github.com/gozen-dev/gozen/xenbus"
	"github.com/gozen-dev/gozen/xenbus/device"
	"github.com/gozen-dev/gozen/xenbus/memstore"
)

// lifeRig is a guest whose vifs come and go: its device.Bus with
// netfront connects them, a network.Link following the bus carries the
// guest's stack (10.0.0.2/24); in dom0 each vif is served by a netback
// (ServeBackend) and another Link carries the backend's stack
// (10.0.0.1/24) over the current one. attach and detach play the
// toolstack's xl network-attach and network-detach.
type lifeRig struct {
	t     *testing.T
	ctx   context.Context
	s     *memstore.Store
	ev    *evheap.Hub
	gnt   *gntheap.Hub
	dom0  *xenbus.Client
	opts  netback.Options
	bus   *device.Bus
	fl    *network.Link // the guest's
	bl    *network.Link // the backend's
	front *netstack.Stack
	back  *netstack.Stack
	vifs  map[string]*lifeVIF

	stopFollow context.CancelFunc
	followed   chan struct{}

	mu   sync.Mutex
	errs []*device.DeviceError
}

type lifeVIF struct {
	front, back string
	bnic        *network.BackendNIC
}

func vifMAC(n int) net.HardwareAddr {
	return net.HardwareAddr{0x00, 0x16, 0x3e, 0, byte(n >> 8), byte(n)}
}

func newLifeRig(t *testing.T) *lifeRig {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	t.Cleanup(cancel)
	r := &lifeRig{t: t, ctx: ctx, s: memstore.New(), ev: evheap.NewHub(), gnt: gntheap.NewHub(), vifs: map[string]*lifeVIF{}}
	var err error
	if r.dom0, err = r.s.Connect(backDom); err != nil {
		t.Fatal(err)
	}
	g, err := r.s.Connect(guest)
	if err != nil {
		t.Fatal(err)
	}
	gev, _ := r.ev.Domain(guest)
	bev, _ := r.ev.Domain(backDom)
	ggnt, _ := r.gnt.Domain(guest)
	bgnt, _ := r.gnt.Domain(backDom)
	r.opts = netback.Options{Events: bev, Grants: bgnt, SG: true, GSOTCPv4: true, GSOTCPv6: true}
	r.bus = device.NewBus(g)
	r.bus.Timeout, r.bus.CloseTimeout = 5*time.Second, time.Second
	r.bus.OnError = func(e *device.DeviceError) {
		r.mu.Lock()
		r.errs = append(r.errs, e)
		r.mu.Unlock()
	}
	if err := r.bus.Register(netfront.Driver{Config: netfront.Config{Events: gev, Grants: ggnt}}); err != nil {
		t.Fatal(err)
	}
	r.addVIF("0", 0)
	if err := r.bus.Start(ctx); err != nil {
		t.Fatal(err)
	}
	if r.fl, err = network.BusLink(r.bus); err != nil {
		t.Fatal(err)
	}
	if r.back, err = netstack.New(r.bl, netstack.Config{Addr: netip.PrefixFrom(ipBack, 24)}); err != nil {
		t.Fatal(err)
	}
	if r.front, err = netstack.New(r.fl, netstack.Config{Addr: netip.PrefixFrom(ipFront, 24)}); err != nil {
		t.Fatal(err)
	}
	fctx, stop := context.WithCancel(ctx)
	r.stopFollow, r.followed = stop, make(chan struct{})
	go func() {
		defer close(r.followed)
		r.fl.Follow(fctx, r.bus, r.front.LinkChanged)
	}()
	if err := r.vifs["0"].bnic.VIF().WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.close)
	return r
}

// addVIF creates vif id with MAC vifMAC(n) in xenstore and serves its
// backend, on which the backend's link is switched.
func (r *lifeRig) addVIF(id string, n int) {
	r.t.Helper()
	front, back, err := r.s.AddDevice(memstore.Device{Frontend: guest, Backend: backDom, Class: "vif", ID: id,
		FrontendKeys: map[string]string{"mac": vifMAC(n).String()}})
	if err != nil {
		r.t.Fatal(err)
	}
	b, err := device.OpenBackend(r.ctx, r.dom0, "vif", guest, id)
	if err != nil {
		r.t.Fatal(err)
	}
	bnic, err := network.ServeBackend(r.ctx, b, r.opts, network.BackendConfig{MAC: backMAC, Offloads: variants[0].backOff})
	if err != nil {
		r.t.Fatal(err)
	}
	r.vifs[id] = &lifeVIF{front: front, back: back, bnic: bnic}
	if r.bl == nil {
		r.bl = network.NewLink(bnic)
	} else {
		r.bl.Switch(bnic)
	}
}

// attach is xl network-attach: a new vif, which the guest's link takes.
func (r *lifeRig) attach(id string, n int) {
	r.t.Helper()
	r.addVIF(id, n)
	if err := r.vifs[id].bnic.VIF().WaitConnected(r.ctx); err != nil {
		r.t.Fatal(err)
	}
	r.eventually("link up on vif/"+id, func() bool {
		s := r.fl.Stats()
		return s.Up && s.VIF == "vif/"+id
	})
}

// detach is xl network-detach (libxl's device removal): the backend goes
// Closing, the frontend follows to Closed, the backend is closed and
// both directories are removed. No grant, mapping or port may remain.
func (r *lifeRig) detach(id string) {
	r.t.Helper()
	v := r.vifs[id]
	delete(r.vifs, id)
	r.s.Write(v.back+"/online", "0")
	r.s.Write(v.back+"/state", "5")
	r.eventually("frontend Closed", func() bool { st, _ := r.s.Read(v.front + "/state"); return st == "6" })
	v.bnic.Close()
	r.s.Rm(v.front)
	r.s.Rm(v.back)
	r.eventually("link down", func() bool { return !r.fl.Stats().Up })
	r.eventually("no grants, mappings or ports", func() bool {
		return r.gnt.Stats().String() == "" && r.ev.Stats().Ports == 0
	})
}

func (r *lifeRig) eventually(what string, cond func() bool) {
	r.t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(time.Millisecond) {
		if time.Now().After(deadline) {
			r.t.Fatalf("timed out waiting for %s (link %+v, grants %v, ports %d, reported %v)",
				what, r.fl.Stats(), r.gnt.Stats(), r.ev.Stats().Ports, r.reported())
		}
	}
}

func (r *lifeRig) reported() []*device.DeviceError {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*device.DeviceError(nil), r.errs...)
}

func (r *lifeRig) close() {
	r.stopFollow()
	<-r.followed
	r.front.Close()
	r.back.Close()
	if err := r.bus.Close(); err != nil {
		r.t.Errorf("bus Close: %v", err)
	}
	for _, v := range r.vifs {
		v.bnic.Close()
	}
	if s := r.gnt.Stats(); s.String() != "" {
		r.t.Errorf("grant leftovers: %v", s)
	}
	if s := r.ev.Stats(); s.Ports != 0 {
		r.t.Errorf("port leftovers: %d", s.Ports)
	}
	// Only the removals the toolstack caused may be reported.
	for _, e := range r.reported() {
		if !errors.Is(e, device.ErrBackendClosed) && !errors.Is(e, device.ErrRemoved) {
			r.t.Errorf("reported %v", e)
		}
	}
	r.s.Close()
}

// TestLinkReattach: a connection works, the vif is detached (the app's
// writes stall and time out, new connections fail), a vif with another
// id is attached, with the same MAC or another, and new connections work
// both ways, and the stalled connection resumes where it stopped.
func TestLinkReattach(t *testing.T) {
	for _, newMAC := range []bool{false, true} {
		t.Run(map[bool]string{false: "same MAC", true: "new MAC"}[newMAC], func(t *testing.T) {
			testReattach(t, newMAC)
		})
	}
}

func testReattach(t *testing.T, newMAC bool) {
	r := newLifeRig(t)
	go echoServer(listen(t, r.back, 7))
	go echoServer(listen(t, r.front, 8))
	c := dial(t, r.front, tcpAddr(ipBack, 7))
	defer c.Close()
	echoRoundTrip(t, c, 1<<20, 1)
	c2 := dial(t, r.front, tcpAddr(ipBack, 7))
	defer c2.Close()
	echoRoundTrip(t, c2, 1<<16, 1)

	r.detach("0")
	// A write that fits in the send buffer is taken (and its segments
	// dropped); a larger one stalls and times out.
	small := bytes.Repeat([]byte("zen"), 1<<16/3)
	if _, err := c.Write(small); err != nil {
		t.Fatal(err)
	}
	big := bytes.Repeat([]byte("gozen"), 4<<20/5)
	c2.SetWriteDeadline(time.Now().Add(300 * time.Millisecond))
	n, err := c2.Write(big)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() || n == len(big) {
		t.Fatalf("write on a detached vif: %d bytes, %v", n, err)
	}
	c2.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	_, err = r.front.Socket(ctx, "tcp", syscall.AF_INET, syscall.SOCK_STREAM, nil, tcpAddr(ipBack, 7))
	cancel()
	if err == nil {
		t.Fatal("dial on a detached vif succeeded")
	}
	if s := r.fl.Stats(); s.Up || s.TXDown == 0 || s.Downs != 1 {
		t.Errorf("while detached: %+v", s)
	}

	mac := 0
	if newMAC {
		mac = 1
	}
	r.attach("1", mac)
	if got := r.fl.MAC(); !bytes.Equal(got, vifMAC(mac)) {
		t.Errorf("link MAC %v, want the new vif's %v", got, vifMAC(mac))
	}
	for i, st := range []*netstack.Stack{r.front, r.back} {
		peer := []netip.Addr{ipBack, ipFront}[i]
		nc := dial(t, st, tcpAddr(peer, 7+i))
		echoRoundTrip(t, nc, 1<<20, uint64(2+i))
		nc.Close()
	}
	if s := r.fl.Stats(); !s.Up || s.VIF != "vif/1" || s.Switches != 2 || s.Downs != 1 || s.NIC.RXFrames == 0 {
		t.Errorf("after re-attach: %+v", s)
	}
	// The stalled connection goes on: the echo of the small write.
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	got := make([]byte, len(small))
	if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, small) {
		t.Fatalf("old connection after re-attach: %v", err)
	}
	echoRoundTrip(t, c, 1<<20, 4)
}

// TestLinkCycles: 100 detach/attach cycles, each with a TCP round trip
// over the new vif, leave no grant, mapping, port (checked after every
// detach and at the end) or goroutine behind.
func TestLinkCycles(t *testing.T) {
	cycles := 100
	if testing.Short() {
		cycles = 10
	}
	before := runtime.NumGoroutine()
	func() {
		r := newLifeRig(t)
		go echoServer(listen(t, r.back, 7))
		id := "0"
		for i := 1; i <= cycles; i++ {
			r.detach(id)
			id = fmt.Sprint(i % 3) // xl reuses free device ids
			r.attach(id, i)
			c := dial(t, r.front, tcpAddr(ipBack, 7))
			echoRoundTrip(t, c, 4096, uint64(i))
			c.Close()
		}
		if s := r.fl.Stats(); s.Switches != uint64(cycles+1) || s.Downs != uint64(cycles) {
			t.Errorf("link stats %+v", s)
		}
		r.close()
	}()
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines left over %d:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(20 * time.Millisecond)
	}
}
