package v4v_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/gozen-dev/gozen/domid"
	"github.com/gozen-dev/gozen/drivers/v4v"
	"github.com/gozen-dev/gozen/drivers/v4v/v4vheap"
)

var benchSizes = []int{16, 256, 4096, 32 << 10}

// BenchmarkStream sends b.N messages from one domain's goroutine to
// another's through a 64 KiB ring with blocking sends and reads, as a
// pipeline: the reported MB/s counts payload bytes.
func BenchmarkStream(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(fmt.Sprintf("%dB", size), func(b *testing.B) {
			br := v4vheap.New(v4vheap.Options{})
			rx := listen(b, br.Domain(1), 10, domid.Any, 64<<10)
			tx := listen(b, br.Domain(2), 20, domid.Any, 0)
			msg := make([]byte, size)
			buf := make([]byte, size)
			dst := v4v.Addr{Domain: 1, Port: 10}
			b.SetBytes(int64(size))
			b.ResetTimer()
			done := make(chan error, 1)
			go func() {
				for range b.N {
					if _, err := tx.Send(context.Background(), dst, 0, msg); err != nil {
						done <- err
						return
					}
				}
				done <- nil
			}()
			for range b.N {
				if _, _, err := rx.ReadMsg(buf); err != nil {
					b.Fatal(err)
				}
			}
			if err := <-done; err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}

// BenchmarkSendCopyOut is one goroutine sending a message and consuming
// it: the cost of the ring protocol itself, with no scheduling.
func BenchmarkSendCopyOut(b *testing.B) {
	for _, size := range benchSizes {
		b.Run(fmt.Sprintf("%dB", size), func(b *testing.B) {
			br := v4vheap.New(v4vheap.Options{})
			rx := listen(b, br.Domain(1), 10, domid.Any, 64<<10)
			tx := listen(b, br.Domain(2), 20, domid.Any, 0)
			msg := make([]byte, size)
			buf := make([]byte, size)
			dst := v4v.Addr{Domain: 1, Port: 10}
			b.SetBytes(int64(size))
			b.ResetTimer()
			for range b.N {
				if _, err := tx.TrySend(dst, 0, msg); err != nil {
					b.Fatal(err)
				}
				if _, _, err := rx.CopyOut(buf, true); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}
