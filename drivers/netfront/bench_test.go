package netfront_test

import (
	"testing"

	"github.com/gozen-dev/gozen/drivers/netback"
	"github.com/gozen-dev/gozen/drivers/netfront"
	"github.com/gozen-dev/gozen/drivers/netif"
)

var benchCases = []struct {
	name string
	size int
	gso  netfront.GSO
}{
	{"1500", 1514, netfront.GSO{}},
	{"64KiB-GSO", 65535, netfront.GSO{Type: netif.GSOTCPv4, Size: 1448}},
}

// BenchmarkNetfrontTX sends frames from the guest to netback over inheap
// (the backend copies them out and drops them).
func BenchmarkNetfrontTX(b *testing.B) {
	for _, bc := range benchCases {
		b.Run(bc.name, func(b *testing.B) {
			r := newRig(b, rigOpts{discard: true})
			batch := make([]netfront.Frame, 32)
			data := payload(bc.size, 1)
			for i := range batch {
				batch[i] = netfront.Frame{Data: data, GSO: bc.gso}
			}
			b.SetBytes(int64(bc.size))
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i += len(batch) {
				if err := r.nic.Send(r.ctx, batch[:min(len(batch), b.N-i)]...); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "frames/s")
		})
	}
}

// BenchmarkNetfrontRX receives frames netback sends to the guest.
func BenchmarkNetfrontRX(b *testing.B) {
	for _, bc := range benchCases {
		b.Run(bc.name, func(b *testing.B) {
			r := newRig(b, rigOpts{})
			data := payload(bc.size, 1)
			errc := make(chan error, 1)
			b.SetBytes(int64(bc.size))
			b.ReportAllocs()
			b.ResetTimer()
			go func() {
				for range b.N {
					if err := r.vif.Send(r.ctx, netback.Frame{Data: data, GSOType: bc.gso.Type, GSOSize: bc.gso.Size}); err != nil {
						errc <- err
						return
					}
				}
				errc <- nil
			}()
			got := 0
			for got < b.N {
				n, err := r.nic.Receive(r.ctx, 0, func(f netfront.Frame) error { return nil })
				if err != nil {
					b.Fatal(err)
				}
				got += n
			}
			if err := <-errc; err != nil {
				b.Fatal(err)
			}
			b.StopTimer()
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "frames/s")
		})
	}
}
