package netstack_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gozen-dev/gozen/netstack"
)

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

// echoRoundTrip writes n random bytes on c (closing nothing) while reading
// the echo, and compares SHA-256 sums.
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

var offloadCases = []struct {
	name string
	off  netstack.Offloads
}{
	{"nooffload", offNone},
	{"csum", offCsum},
	{"gso", offGSO},
}

func TestTCPEchoBothWays(t *testing.T) {
	for _, tc := range offloadCases {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, tc.off)
			go echoServer(listen(t, r.a, 7))
			go echoServer(listen(t, r.b, 7))
			for i, p := range []struct {
				from *netstack.Stack
				to   *net.TCPAddr
			}{{r.b, tcpAddr(ipA, 7)}, {r.a, tcpAddr(ipB, 7)}} {
				c := dial(t, p.from, p.to)
				echoRoundTrip(t, c, 8<<20, uint64(i))
				echoRoundTrip(t, c, 1, 99)
				c.Close()
			}
			sa, sb := r.a.Stats(), r.b.Stats()
			if sa.TCPChecksumErrors+sb.TCPChecksumErrors != 0 || sa.Link.RXBadChecksum+sb.Link.RXBadChecksum != 0 {
				t.Errorf("checksum errors: a %+v b %+v", sa, sb)
			}
			ns := r.nicA.Stats()
			switch tc.name {
			case "nooffload":
				if ns.CsumBlank != 0 || ns.GSOFrames != 0 || sb.Link.RXTrusted != 0 {
					t.Errorf("without offloads: %d csum_blank, %d GSO frames sent, %d trusted received", ns.CsumBlank, ns.GSOFrames, sb.Link.RXTrusted)
				}
			case "csum":
				if ns.CsumBlank == 0 || ns.GSOFrames != 0 || sb.Link.RXTrusted == 0 {
					t.Errorf("with TX checksum offload: %d csum_blank, %d GSO frames sent, %d trusted received", ns.CsumBlank, ns.GSOFrames, sb.Link.RXTrusted)
				}
			case "gso":
				if ns.GSOFrames == 0 || ns.MaxFrame <= 1514 || sb.Link.RXGSOFrames == 0 {
					t.Errorf("with GSO: %d GSO frames sent, largest %d bytes, %d received", ns.GSOFrames, ns.MaxFrame, sb.Link.RXGSOFrames)
				}
			}
			if ns.OversizeFrames != 0 {
				t.Errorf("%d frames over the MTU without GSO", ns.OversizeFrames)
			}
			t.Logf("nic a sent %+v", ns)
		})
	}
}

func TestManyConnections(t *testing.T) {
	r := newRig(t, offCsum)
	go echoServer(listen(t, r.a, 80))
	var wg sync.WaitGroup
	for i := 0; i < 100; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c := dial(t, r.b, tcpAddr(ipA, 80))
			defer c.Close()
			echoRoundTrip(t, c, 64<<10, uint64(i))
		}()
	}
	wg.Wait()
	if got := r.a.Stats().TCPPassiveOpens; got < 100 {
		t.Errorf("a accepted %d connections, want 100", got)
	}
}

func TestListenerAcceptAddrs(t *testing.T) {
	r := newRig(t, offNone)
	l := listen(t, r.a, 0)
	la := l.Addr().(*net.TCPAddr)
	if la.Port == 0 {
		t.Fatalf("listener on port 0 reports %v", la)
	}
	done := make(chan net.Conn, 1)
	go func() {
		c, err := l.Accept()
		if err != nil {
			t.Error(err)
		}
		done <- c
	}()
	c := dial(t, r.b, tcpAddr(ipA, la.Port))
	defer c.Close()
	s := <-done
	if s == nil {
		return
	}
	defer s.Close()
	if got := s.RemoteAddr().(*net.TCPAddr); !got.IP.Equal(ipB.AsSlice()) || got.Port != c.LocalAddr().(*net.TCPAddr).Port {
		t.Errorf("accepted conn from %v, dialer is %v", got, c.LocalAddr())
	}
	if got := c.RemoteAddr().(*net.TCPAddr); !got.IP.Equal(ipA.AsSlice()) || got.Port != la.Port {
		t.Errorf("dialed conn to %v, want %v:%d", got, ipA, la.Port)
	}
}

func TestDialRefusedAndTimeout(t *testing.T) {
	r := newRig(t, offNone)
	ctx := context.Background()
	if _, err := r.b.Socket(ctx, "tcp", syscall.AF_INET, syscall.SOCK_STREAM, nil, tcpAddr(ipA, 9)); err == nil {
		t.Fatal("dial to a closed port succeeded")
	}
	// Nobody answers ARP for 10.0.0.3: the dial ends with its context.
	ctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	defer cancel()
	if _, err := r.b.Socket(ctx, "tcp", syscall.AF_INET, syscall.SOCK_STREAM, nil, tcpAddr(ipA.Next().Next(), 9)); err == nil {
		t.Fatal("dial to an absent host succeeded")
	}
}

func TestSocketBadRequests(t *testing.T) {
	r := newRig(t, offNone)
	ctx := context.Background()
	cases := []struct {
		name         string
		network      string
		family, typ  int
		laddr, raddr net.Addr
	}{
		{"raw", "ip4:icmp", syscall.AF_INET, syscall.SOCK_RAW, nil, &net.IPAddr{IP: net.IP(ipA.AsSlice())}},
		{"tcp dgram", "tcp", syscall.AF_INET, syscall.SOCK_DGRAM, nil, tcpAddr(ipA, 1)},
		{"unix", "unix", syscall.AF_UNIX, syscall.SOCK_STREAM, nil, &net.UnixAddr{Name: "x"}},
		{"tcp4 to v6", "tcp4", syscall.AF_INET, syscall.SOCK_STREAM, nil, &net.TCPAddr{IP: net.ParseIP("fe80::1"), Port: 1}},
		{"bad port", "tcp", syscall.AF_INET, syscall.SOCK_STREAM, nil, &net.TCPAddr{IP: net.IP(ipA.AsSlice()), Port: 70000}},
		{"addr type", "udp", syscall.AF_INET, syscall.SOCK_DGRAM, nil, &net.IPAddr{IP: net.IP(ipA.AsSlice())}},
	}
	for _, tc := range cases {
		if c, err := r.b.Socket(ctx, tc.network, tc.family, tc.typ, tc.laddr, tc.raddr); err == nil {
			t.Errorf("%s: Socket returned %T, want an error", tc.name, c)
		}
	}
}

func TestUDPRoundTrip(t *testing.T) {
	r := newRig(t, offCsum)
	ctx := context.Background()
	// Server: net.ListenPacket("udp", ":53").
	sc, err := r.a.Socket(ctx, "udp", syscall.AF_INET6, syscall.SOCK_DGRAM, &net.UDPAddr{Port: 53}, nil)
	if err != nil {
		t.Fatal(err)
	}
	srv := sc.(net.PacketConn)
	defer srv.Close()
	go func() {
		buf := make([]byte, 65536)
		for {
			n, from, err := srv.ReadFrom(buf)
			if err != nil {
				return
			}
			if _, ok := from.(*net.UDPAddr); !ok {
				t.Errorf("ReadFrom address %T, tamago's net wants *net.UDPAddr", from)
			}
			srv.WriteTo(bytes.ToUpper(buf[:n]), from)
		}
	}()
	// Client: net.Dial("udp", "10.0.0.1:53").
	cc, err := r.b.Socket(ctx, "udp", syscall.AF_INET, syscall.SOCK_DGRAM, nil, udpAddr(ipA, 53))
	if err != nil {
		t.Fatal(err)
	}
	c := cc.(net.Conn)
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	for _, size := range []int{1, 1000, 1472, 8000, 60000} {
		msg := bytes.Repeat([]byte("q"), size)
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
	if s := r.a.Stats(); s.UDPChecksumErrors != 0 || s.Link.RXBadChecksum != 0 {
		t.Errorf("checksum errors %+v", s)
	}
}

func TestClosedStack(t *testing.T) {
	r := newRig(t, offNone)
	l := listen(t, r.a, 80)
	r.a.Close()
	if _, err := l.Accept(); err == nil {
		t.Error("Accept on a closed stack succeeded")
	}
	if _, err := r.a.Socket(context.Background(), "tcp", syscall.AF_INET, syscall.SOCK_STREAM, nil, tcpAddr(ipB, 80)); !errors.Is(err, netstack.ErrClosed) {
		t.Errorf("Socket on a closed stack: %v, want ErrClosed", err)
	}
}
