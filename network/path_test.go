package network_test

import (
	"bytes"
	"context"
	"errors"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gozen-dev/gozen/netstack"
	"github.com/gozen-dev/gozen/netstack/dhcp"
	"github.com/gozen-dev/gozen/network"
	"golang.org/x/net/nettest"
)

// checkClean fails t if a stack counted checksum errors or malformed
// frames.
func checkClean(t *testing.T, r *rig) {
	t.Helper()
	for name, st := range map[string]*netstack.Stack{"back": r.back, "front": r.front} {
		s := st.Stats()
		if s.TCPChecksumErrors+s.UDPChecksumErrors != 0 || s.Link.RXBadChecksum != 0 || s.Link.RXMalformed != 0 || s.Link.RXErrors != 0 {
			t.Errorf("%s stack: errors in %+v", name, s)
		}
	}
	if st := r.nf.Stats(); st.RXErrors != 0 || st.TXErrors != 0 {
		t.Errorf("netfront errors: %+v", st)
	}
	if st := r.bnic.VIF().Stats(); st.TXErrors != 0 {
		t.Errorf("netback errors: %+v", st)
	}
}

func TestTCPEchoBothWays(t *testing.T) {
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			r := newRig(t, v)
			go echoServer(listen(t, r.back, 7))
			go echoServer(listen(t, r.front, 7))
			for i, p := range []struct {
				from *netstack.Stack
				to   *net.TCPAddr
			}{{r.front, tcpAddr(ipBack, 7)}, {r.back, tcpAddr(ipFront, 7)}} {
				c := dial(t, p.from, p.to)
				echoRoundTrip(t, c, 8<<20, uint64(i))
				echoRoundTrip(t, c, 1, 99)
				c.Close()
			}
			checkClean(t, r)
			fs, bs := r.front.Stats().Link, r.back.Stats().Link
			t.Logf("front link %+v", fs)
			t.Logf("back link %+v", bs)
			// The features asked for were used, and only those.
			switch {
			case v.gso && (fs.TXGSOFrames == 0 || bs.RXGSOFrames == 0 || bs.TXGSOFrames == 0 || fs.RXGSOFrames == 0):
				t.Errorf("GSO on, but GSO frames: front sent %d, back got %d; back sent %d, front got %d",
					fs.TXGSOFrames, bs.RXGSOFrames, bs.TXGSOFrames, fs.RXGSOFrames)
			case !v.gso && (fs.TXGSOFrames != 0 || bs.TXGSOFrames != 0 || fs.RXGSOFrames+bs.RXGSOFrames != 0):
				t.Errorf("GSO off, but GSO frames: %+v / %+v", fs, bs)
			}
			if fs.TXCsumBlank == 0 || bs.RXTrusted == 0 {
				t.Errorf("front sends checksum-blank frames always: %d sent, back trusted %d", fs.TXCsumBlank, bs.RXTrusted)
			}
			if v.backOff.TXChecksum != (bs.TXCsumBlank != 0) || v.backOff.TXChecksum != (fs.RXTrusted != 0) {
				t.Errorf("back TX checksum offload %v: %d blank frames sent, front trusted %d", v.backOff.TXChecksum, bs.TXCsumBlank, fs.RXTrusted)
			}
			r.close()
		})
	}
}

func TestManyConnections(t *testing.T) {
	for _, v := range []variant{variants[0], variants[3]} {
		t.Run(v.name, func(t *testing.T) {
			r := newRig(t, v)
			go echoServer(listen(t, r.back, 80))
			var wg sync.WaitGroup
			for i := range 50 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					c := dial(t, r.front, tcpAddr(ipBack, 80))
					defer c.Close()
					echoRoundTrip(t, c, 64<<10, uint64(i))
				}()
			}
			wg.Wait()
			checkClean(t, r)
			// With queues, the connections' frames went over all of them.
			if st := r.nf.Stats(); v.queues > 1 {
				if len(st.Queues) != v.queues {
					t.Fatalf("%d queues", len(st.Queues))
				}
				for i, q := range st.Queues {
					if q.TXFrames == 0 || q.RXFrames == 0 {
						t.Errorf("queue %d idle: %+v", i, q)
					}
				}
			}
			r.close()
		})
	}
}

func TestNettestConn(t *testing.T) {
	for _, v := range variants {
		t.Run(v.name, func(t *testing.T) {
			r := newRig(t, v)
			for _, dir := range []struct {
				name           string
				server, client *netstack.Stack
				serverIP       netip.Addr
			}{{"front-to-back", r.back, r.front, ipBack}, {"back-to-front", r.front, r.back, ipFront}} {
				t.Run(dir.name, func(t *testing.T) {
					l := listen(t, dir.server, 0)
					port := l.Addr().(*net.TCPAddr).Port
					nettest.TestConn(t, func() (c1, c2 net.Conn, stop func(), err error) {
						done := make(chan net.Conn, 1)
						go func() {
							c, err := l.Accept()
							if err != nil {
								done <- nil
								return
							}
							done <- c
						}()
						c1 = dial(t, dir.client, tcpAddr(dir.serverIP, port))
						c2 = <-done
						if c2 == nil {
							c1.Close()
							return nil, nil, nil, errors.New("accept failed")
						}
						return c1, c2, func() { c1.Close(); c2.Close() }, nil
					})
				})
			}
		})
	}
}

// udpUpper serves on pc: every datagram comes back upper-cased.
func udpUpper(pc net.PacketConn) {
	buf := make([]byte, 65536)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		pc.WriteTo(bytes.ToUpper(buf[:n]), from)
	}
}

func TestUDPRoundTrip(t *testing.T) {
	for _, v := range []variant{variants[0], variants[2]} {
		t.Run(v.name, func(t *testing.T) {
			r := newRig(t, v)
			ctx := context.Background()
			for _, dir := range []struct {
				name           string
				server, client *netstack.Stack
				serverIP       netip.Addr
			}{{"front-to-back", r.back, r.front, ipBack}, {"back-to-front", r.front, r.back, ipFront}} {
				t.Run(dir.name, func(t *testing.T) {
					sc, err := dir.server.Socket(ctx, "udp", syscall.AF_INET, syscall.SOCK_DGRAM, &net.UDPAddr{Port: 53}, nil)
					if err != nil {
						t.Fatal(err)
					}
					srv := sc.(net.PacketConn)
					defer srv.Close()
					go udpUpper(srv)
					cc, err := dir.client.Socket(ctx, "udp", syscall.AF_INET, syscall.SOCK_DGRAM, nil, udpAddr(dir.serverIP, 53))
					if err != nil {
						t.Fatal(err)
					}
					c := cc.(net.Conn)
					defer c.Close()
					c.SetDeadline(time.Now().Add(20 * time.Second))
					// 1473 bytes and more are fragmented (MTU 1500).
					for i, size := range []int{1, 100, 1472, 1473, 2961, 8000, 30000, 65507} {
						msg := bytes.Repeat([]byte{'a' + byte(i)}, size)
						if _, err := c.Write(msg); err != nil {
							t.Fatal(err)
						}
						buf := make([]byte, 65536)
						n, err := c.Read(buf)
						if err != nil {
							t.Fatalf("%d bytes: %v", size, err)
						}
						if !bytes.Equal(buf[:n], bytes.ToUpper(msg)) {
							t.Fatalf("%d bytes: reply of %d bytes differs", size, n)
						}
					}
				})
			}
			checkClean(t, r)
			r.close()
		})
	}
}

func TestPing(t *testing.T) {
	r := newRig(t, variants[0])
	for _, p := range []struct {
		from *netstack.Stack
		to   netip.Addr
	}{{r.front, ipBack}, {r.back, ipFront}} {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		if _, err := p.from.Ping(ctx, p.to); err != nil {
			t.Fatalf("ping %v: %v", p.to, err)
		}
		cancel()
	}
	if s := r.front.Stats(); s.ICMPEchoRepliesSent == 0 {
		t.Errorf("the guest sent no echo replies: %+v", s)
	}
	if s := r.back.Stats(); s.ICMPEchoRepliesSent == 0 {
		t.Errorf("the backend sent no echo replies: %+v", s)
	}
	r.close()
}

// dhcpServer is a tiny DHCP server on the backend's stack: it offers
// leaseIP/24 with router and DNS 10.0.0.1, for an hour.
type dhcpServer struct {
	conn net.PacketConn
	mu   sync.Mutex
	seen []dhcp.MessageType
}

var leaseIP = netip.MustParseAddr("10.0.0.50")

func startDHCPServer(t testing.TB, st *netstack.Stack) *dhcpServer {
	t.Helper()
	c, err := st.Socket(context.Background(), "udp", syscall.AF_INET, syscall.SOCK_DGRAM, &net.UDPAddr{Port: dhcp.ServerPort}, nil)
	if err != nil {
		t.Fatal(err)
	}
	s := &dhcpServer{conn: c.(net.PacketConn)}
	t.Cleanup(func() { s.conn.Close() })
	go s.serve()
	return s
}

func (s *dhcpServer) serve() {
	buf := make([]byte, 1500)
	for {
		n, _, err := s.conn.ReadFrom(buf)
		if err != nil {
			return
		}
		m, err := dhcp.Parse(buf[:n])
		if err != nil || m.Op != dhcp.OpRequest {
			continue
		}
		s.mu.Lock()
		s.seen = append(s.seen, m.Type)
		s.mu.Unlock()
		r := &dhcp.Message{
			Op: dhcp.OpReply, XID: m.XID, CHAddr: m.CHAddr, YIAddr: leaseIP, Broadcast: m.Broadcast,
			ServerID: ipBack, SubnetMask: netip.MustParseAddr("255.255.255.0"),
			Routers: []netip.Addr{ipBack}, DNS: []netip.Addr{ipBack}, LeaseTime: 3600,
		}
		switch m.Type {
		case dhcp.Discover:
			r.Type = dhcp.Offer
		case dhcp.Request:
			r.Type = dhcp.Ack
		default:
			continue
		}
		dst := net.Addr(&net.UDPAddr{IP: net.IPv4bcast, Port: dhcp.ClientPort})
		if !m.Broadcast && m.CIAddr.IsValid() && !m.CIAddr.IsUnspecified() {
			dst = &net.UDPAddr{IP: net.IP(m.CIAddr.AsSlice()), Port: dhcp.ClientPort}
		}
		s.conn.WriteTo(r.Marshal(), dst)
	}
}

func TestDHCP(t *testing.T) {
	var srv *dhcpServer
	r := newRigConfig(t, variants[0], netstack.Config{DHCPTimeout: 30 * time.Second, DHCPRetransmit: 200 * time.Millisecond, Hostname: "gozen"},
		func(r *rig) { srv = startDHCPServer(t, r.back) })
	if got, want := r.front.Addressing().String(), "dhcp 10.0.0.50/24 gw 10.0.0.1 dns 10.0.0.1"; got != want {
		t.Errorf("Addressing %q, want %q", got, want)
	}
	srv.mu.Lock()
	seen := append([]dhcp.MessageType(nil), srv.seen...)
	srv.mu.Unlock()
	if len(seen) < 2 || seen[0] != dhcp.Discover || seen[len(seen)-1] != dhcp.Request {
		t.Errorf("server saw %v", seen)
	}
	// The leased address works: TCP from the backend to the guest.
	go echoServer(listen(t, r.front, 7))
	c := dial(t, r.back, tcpAddr(leaseIP, 7))
	echoRoundTrip(t, c, 1<<20, 1)
	c.Close()
	// Close gives the lease back: the server sees a RELEASE.
	r.front.Close()
	deadline := time.Now().Add(20 * time.Second)
	for {
		srv.mu.Lock()
		seen = append(seen[:0], srv.seen...)
		srv.mu.Unlock()
		if seen[len(seen)-1] == dhcp.Release {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after Close the server saw %v, want a RELEASE last", seen)
		}
		time.Sleep(10 * time.Millisecond)
	}
	r.close()
}

// TestCloseLeavesNothing runs traffic, closes everything and checks that
// no grant, port (rig.close) or goroutine is left.
func TestCloseLeavesNothing(t *testing.T) {
	before := runtime.NumGoroutine()
	r := newRig(t, variants[0])
	go echoServer(listen(t, r.back, 7))
	c := dial(t, r.front, tcpAddr(ipBack, 7))
	echoRoundTrip(t, c, 1<<20, 3)
	c.Close()
	r.close()
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > before {
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<16)
			t.Fatalf("%d goroutines left over %d:\n%s", runtime.NumGoroutine(), before, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(20 * time.Millisecond)
	}
	// Closed NICs fail for good.
	if _, err := r.bnic.Receive(context.Background(), make([]netstack.Frame, 1)); !errors.Is(err, netstack.ErrNICClosed) {
		t.Errorf("backend Receive after Close: %v", err)
	}
	frame := netstack.Frame{Data: [][]byte{make([]byte, 60)}}
	if err := r.bnic.Send(context.Background(), frame); !errors.Is(err, netstack.ErrNICClosed) {
		t.Errorf("backend Send after Close: %v", err)
	}
	fnic := network.NewNIC(r.nf)
	if _, err := fnic.Receive(context.Background(), make([]netstack.Frame, 1)); !errors.Is(err, netstack.ErrNICClosed) {
		t.Errorf("frontend Receive after Close: %v", err)
	}
	if err := fnic.Send(context.Background(), frame); !errors.Is(err, netstack.ErrNICClosed) {
		t.Errorf("frontend Send after Close: %v", err)
	}
	if err := r.front.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
}
