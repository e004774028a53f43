//go:build tamago

// Command nettest is the tier-B network test guest: netfront against
// Linux's netback on dom0's bridge, under gVisor's stack and Go's net
// package. It prints one line per case:
//
//	NETTEST PASS name detail
//	NETTEST FAIL name: reason
//	NETTEST DONE pass=N fail=M
//
// and, between its client cases and the end, "NETTEST SERVING" while it
// serves /blob (the test stream of -serve-seed) and /quit over HTTP for
// dom0 to fetch.
package main

import (
	"context"
	"crypto/rand"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"slices"
	"strconv"
	"time"

	"github.com/gozen-dev/gozen/internal/teststream"
	"github.com/gozen-dev/gozen/network"
	"github.com/gozen-dev/gozen/platform"
	"github.com/gozen-dev/gozen/qemu/guests/internal/report"
)

var rep = report.New("NETTEST")

func main() {
	peer := flag.String("peer", "10.0.0.1", "dom0's address on the bridge")
	expect := flag.String("expect", "", "the address DHCP must give (empty: any)")
	name := flag.String("name", "gozen.test", "a name dom0's DNS server maps to -peer")
	size := flag.Int64("blob", 4<<20, "size of the blobs fetched and served")
	seed := flag.Uint64("seed", 7, "test-stream seed of dom0's /blob")
	serveSeed := flag.Uint64("serve-seed", 8, "test-stream seed of our /blob")
	serveOnly := flag.Bool("serve-only", false, "run only up and dhcp, then serve (a peer for another guest)")
	peerBlob := flag.String("peer-blob", "", "URL of another guest's /blob (the test stream of seed -peer-seed) to fetch over the bridge")
	peerSeed := flag.Uint64("peer-seed", 8, "test-stream seed of -peer-blob")
	serveFor := flag.Duration("serve-for", 5*time.Minute, "how long to serve before giving up on dom0's /quit")
	flag.Parse()

	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	n, err := network.Up(ctx)
	cancel()
	rep.Check("up", err, "vif connected, stack installed")
	if err != nil {
		done()
	}
	fmt.Printf("NETTEST queues %d\n", n.NIC.Features().Queues)
	a := n.Stack.Addressing()
	gw := netip.MustParseAddr(*peer)
	rep.Check("dhcp", func() error {
		switch {
		case a.Source != "dhcp":
			return fmt.Errorf("addressing %s, want dhcp", a)
		case *expect != "" && a.Addr.Addr().String() != *expect:
			return fmt.Errorf("got %s, want %s", a.Addr, *expect)
		case a.Gateway != gw:
			return fmt.Errorf("gateway %s, want %s", a.Gateway, gw)
		}
		return nil
	}(), a.String())
	if *serveOnly {
		serve(*size, *serveSeed, *serveFor, leaks(n))
		done()
	}
	rep.Check("ping", func() error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		rtt, err := n.Stack.Ping(ctx, gw)
		if err == nil {
			fmt.Printf("NETTEST ping rtt %v\n", rtt)
		}
		return err
	}(), "")
	rep.Check("dns", func() error {
		addrs, err := net.LookupHost(*name)
		if err != nil {
			return err
		}
		if !slices.Contains(addrs, *peer) {
			return fmt.Errorf("%s resolved to %v, want %s", *name, addrs, *peer)
		}
		return nil
	}(), *name+" -> "+*peer)
	var mbs float64
	rep.Check("http-get", func() (err error) {
		mbs, err = fetch("http://"+*name+"/blob", *size, *seed)
		return err
	}(), fmt.Sprintf("%d bytes of the test stream from dom0's httpd", *size))
	fmt.Printf("NETTEST BENCH http-get %.2f MB/s\n", mbs)
	rep.Check("udp", udpEcho(net.JoinHostPort(*peer, "7")), "datagrams of 1 to 8000 bytes echoed by dom0")
	if *peerBlob != "" {
		rep.Check("peer-get", func() (err error) {
			mbs, err = fetch(*peerBlob, *size, *peerSeed)
			return err
		}(), fmt.Sprintf("%d bytes of the test stream from another Gozen domU across the bridge", *size))
		fmt.Printf("NETTEST BENCH peer-get %.2f MB/s\n", mbs)
	}
	serve(*size, *serveSeed, *serveFor, leaks(n))
	s := n.NIC.Stats()
	fmt.Printf("NETTEST nic tx=%d/%dB rx=%d/%dB txerr=%d rxerr=%d\n", s.TXFrames, s.TXBytes, s.RXFrames, s.RXBytes, s.TXErrors, s.RXErrors)
	for i, q := range s.Queues {
		fmt.Printf("NETTEST queue %d tx=%d rx=%d\n", i, q.TXFrames, q.RXFrames)
	}
	done()
}

// leaks returns what /leaks reports: the grants and event-channel ports
// the domain holds and the vifs attached and gone, for dom0 to compare
// before and after cycles of xl network-detach and network-attach.
func leaks(n *network.Network) func() string {
	return func() string {
		p := platform.Domain()
		g, err := p.Grants()
		if err != nil {
			return "error " + err.Error()
		}
		gs, es, ls := g.Stats(), p.Events().Stats(), n.Link.Stats()
		return fmt.Sprintf("grants=%d shares=%d mappings=%d ports=%d up=%t switches=%d downs=%d",
			gs.Grants, gs.Shares, gs.Mappings, es.Ports, ls.Up, ls.Switches, ls.Downs)
	}
}

// serve serves /blob (size bytes of the test stream of seed), /leaks (the
// line of report) and /quit, prints NETTEST SERVING, and returns when
// /quit is asked for, or after wait.
func serve(size int64, seed uint64, wait time.Duration, report func() string) {
	quit := make(chan struct{})
	ln, err := net.Listen("tcp", ":80")
	rep.Check("listen", err, ":80")
	if err == nil {
		mux := http.NewServeMux()
		mux.HandleFunc("/blob", func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", strconv.FormatInt(size, 10))
			s := teststream.New(seed)
			buf := make([]byte, 64<<10)
			for left := size; left > 0; {
				c := min(left, int64(len(buf)))
				s.Fill(buf[:c])
				if _, err := w.Write(buf[:c]); err != nil {
					return
				}
				left -= c
			}
		})
		mux.HandleFunc("/leaks", func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, report()+"\n")
		})
		mux.HandleFunc("/quit", func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "bye\n")
			select {
			case <-quit:
			default:
				close(quit)
			}
		})
		go http.Serve(ln, mux)
		fmt.Println("NETTEST SERVING")
		select {
		case <-quit:
			rep.Check("serve", nil, "dom0 fetched and asked us to quit")
		case <-time.After(wait):
			rep.Check("serve", fmt.Errorf("no /quit from dom0 within %v", wait), "")
		}
	}
}

func done() {
	if rep.Done() > 0 {
		os.Exit(1)
	}
	os.Exit(0)
}

// fetch GETs url and checks that the body is the first n bytes of the
// test stream of seed; it returns the rate in MB/s.
func fetch(url string, n int64, seed uint64) (float64, error) {
	c := &http.Client{Timeout: 2 * time.Minute}
	start := time.Now()
	resp, err := c.Get(url)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("status %s", resp.Status)
	}
	s := teststream.New(seed)
	buf, want := make([]byte, 64<<10), make([]byte, 64<<10)
	var got int64
	for {
		k, err := resp.Body.Read(buf)
		if k > 0 {
			s.Fill(want[:k])
			if got+int64(k) > n || string(buf[:k]) != string(want[:k]) {
				return 0, fmt.Errorf("body differs from the test stream at or after byte %d", got)
			}
			got += int64(k)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return 0, fmt.Errorf("after %d bytes: %w", got, err)
		}
	}
	if got != n {
		return 0, fmt.Errorf("%d bytes, want %d", got, n)
	}
	return float64(n) / time.Since(start).Seconds() / 1e6, nil
}

// udpEcho sends datagrams of many sizes (some fragmented) to an echo
// server and checks every answer.
func udpEcho(addr string) error {
	c, err := net.Dial("udp", addr)
	if err != nil {
		return err
	}
	defer c.Close()
	buf := make([]byte, 9000)
	for _, size := range []int{1, 64, 512, 1400, 1472, 1473, 3000, 8000} {
		msg := make([]byte, size)
		rand.Read(msg)
		var err error
		for try := 0; try < 5; try++ { // UDP: a datagram may be lost
			c.SetDeadline(time.Now().Add(2 * time.Second))
			if _, err = c.Write(msg); err != nil {
				continue
			}
			var k int
			if k, err = c.Read(buf); err == nil {
				if string(buf[:k]) != string(msg) {
					return fmt.Errorf("%d-byte datagram came back as %d different bytes", size, k)
				}
				break
			}
		}
		if err != nil {
			return fmt.Errorf("%d-byte datagram: %w", size, err)
		}
	}
	return nil
}
