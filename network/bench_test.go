package network_test

import (
	"io"
	"testing"

	"github.com/gozen-dev/gozen/netstack"
)

// benchPath is a way to build the pair of stacks (back at 10.0.0.1,
// front at 10.0.0.2): through netfront/netback over the in-process Xen
// services, or over a pipenic pair for comparison.
type benchPath struct {
	name string
	make func(b *testing.B) (back, front *netstack.Stack)
}

func xenPath(v variant) benchPath {
	return benchPath{"xen-" + v.name, func(b *testing.B) (*netstack.Stack, *netstack.Stack) {
		r := newRig(b, v)
		return r.back, r.front
	}}
}

func pipePath(name string, off netstack.Offloads) benchPath {
	return benchPath{"pipe-" + name, func(b *testing.B) (*netstack.Stack, *netstack.Stack) {
		return pipeRig(b, off)
	}}
}

var benchPaths = []benchPath{
	xenPath(variants[0]),
	xenPath(variants[1]),
	pipePath("gso", netstack.Offloads{TXChecksum: true, GSOTCPv4: true, GSOTCPv6: true}),
	pipePath("csum", netstack.Offloads{TXChecksum: true}),
}

// BenchmarkTCPBulk measures TCP throughput (MB/s of payload) from the
// guest's stack to the backend's (tx) and back (rx).
func BenchmarkTCPBulk(b *testing.B) {
	for _, p := range benchPaths {
		for _, dir := range []string{"tx", "rx"} {
			b.Run(p.name+"/"+dir, func(b *testing.B) {
				back, front := p.make(b)
				from, to, toIP := front, back, ipBack
				if dir == "rx" {
					from, to, toIP = back, front, ipFront
				}
				l := listen(b, to, 5001)
				done := make(chan int64, 1)
				go func() {
					c, err := l.Accept()
					if err != nil {
						done <- 0
						return
					}
					n, _ := io.Copy(io.Discard, c)
					c.Close()
					done <- n
				}()
				c := dial(b, from, tcpAddr(toIP, 5001))
				buf := make([]byte, 256<<10)
				b.SetBytes(int64(len(buf)))
				b.ResetTimer()
				for range b.N {
					if _, err := c.Write(buf); err != nil {
						b.Fatal(err)
					}
				}
				c.Close()
				if n := <-done; n != int64(b.N*len(buf)) {
					b.Fatalf("received %d bytes, sent %d", n, b.N*len(buf))
				}
			})
		}
	}
}

// BenchmarkTCPRequestResponse measures the round trip of a 64-byte
// request from the guest and its echo by the backend's stack.
func BenchmarkTCPRequestResponse(b *testing.B) {
	for _, p := range benchPaths {
		b.Run(p.name, func(b *testing.B) {
			back, front := p.make(b)
			go echoServer(listen(b, back, 7))
			c := dial(b, front, tcpAddr(ipBack, 7))
			defer c.Close()
			buf := make([]byte, 64)
			b.ResetTimer()
			for range b.N {
				if _, err := c.Write(buf); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(c, buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
