package vchan

import (
	"io"
	"os"
	"testing"
)

const benchChunk = 64 << 10

// BenchmarkThroughput64K writes 64 KiB chunks from client to server over
// the in-heap transports; the server drains with io.Copy to io.Discard.
func BenchmarkThroughput64K(b *testing.B) {
	for _, rs := range []struct {
		name   string
		rd, wr int
	}{
		{"ring=1KiB", 0, 0},
		{"ring=4KiB", 4096, 4096},
		{"ring=64KiB", 1 << 16, 1 << 16},
		{"ring=1MiB", 1 << 20, 1 << 20},
	} {
		b.Run(rs.name, func(b *testing.B) {
			r := newRig(b, rs.rd, rs.wr)
			srv, cli := r.pair(b)
			done := make(chan error, 1)
			var got int64
			go func() {
				var err error
				got, err = io.Copy(io.Discard, srv)
				done <- err
			}()
			buf := make([]byte, benchChunk)
			b.SetBytes(benchChunk)
			b.ResetTimer()
			var sent int64
			for b.Loop() {
				n, err := cli.Write(buf)
				if err != nil {
					b.Fatal(err)
				}
				sent += int64(n)
			}
			cli.CloseWrite()
			if err := <-done; err != nil {
				b.Fatal(err)
			}
			if got != sent {
				b.Fatalf("server read %d bytes, client wrote %d", got, sent)
			}
			b.StopTimer()
			closeBoth(b, srv, cli)
		})
	}
}

// BenchmarkPipe64K is the same transfer over an os.Pipe, for comparison.
func BenchmarkPipe64K(b *testing.B) {
	pr, pw, err := os.Pipe()
	if err != nil {
		b.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := io.Copy(io.Discard, pr)
		done <- err
	}()
	buf := make([]byte, benchChunk)
	b.SetBytes(benchChunk)
	b.ResetTimer()
	for b.Loop() {
		if _, err := pw.Write(buf); err != nil {
			b.Fatal(err)
		}
	}
	pw.Close()
	if err := <-done; err != nil {
		b.Fatal(err)
	}
	pr.Close()
}

// BenchmarkMemcpy64K is one copy() of 64 KiB: the ceiling for a transport
// that copies data once in and once out.
func BenchmarkMemcpy64K(b *testing.B) {
	src, dst := make([]byte, benchChunk), make([]byte, benchChunk)
	b.SetBytes(benchChunk)
	for b.Loop() {
		copy(dst, src)
	}
}
