package netstack_test

import (
	"io"
	"testing"
)

// BenchmarkTCPBulk measures TCP throughput from b to a over the pipe NIC
// (b.SetBytes: MB/s is the payload rate), per offload variant.
func BenchmarkTCPBulk(b *testing.B) {
	for _, tc := range offloadCases {
		b.Run(tc.name, func(b *testing.B) {
			r := newRig(b, tc.off)
			l := listen(b, r.a, 5001)
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
			c := dial(b, r.b, tcpAddr(ipA, 5001))
			buf := make([]byte, 256<<10)
			b.SetBytes(int64(len(buf)))
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
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

// BenchmarkTCPRequestResponse measures the round trip of a 64-byte request
// and its echo on one connection.
func BenchmarkTCPRequestResponse(b *testing.B) {
	r := newRig(b, offCsum)
	go echoServer(listen(b, r.a, 7))
	c := dial(b, r.b, tcpAddr(ipA, 7))
	defer c.Close()
	buf := make([]byte, 64)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			b.Fatal(err)
		}
	}
}
