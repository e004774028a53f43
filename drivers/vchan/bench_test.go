//go:build !tamago

package vchan

import (
	"context"
	"io"
	"os"
	"testing"
	"time"

	"github.com/gozen-dev/gozen/domid"
	"github.com/gozen-dev/gozen/evtchn/evunix"
	"github.com/gozen-dev/gozen/gnttab/gntunix"
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

// BenchmarkUnixThroughput64K is BenchmarkThroughput64K over the unix
// transports (shared-memory files and socket notifications, as between two
// vchancat processes), both ends in this process.
func BenchmarkUnixThroughput64K(b *testing.B) {
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
			dir := b.TempDir()
			open := func(id uint16) (*evunix.Domain, *gntunix.Domain) {
				ev, err := evunix.Open(dir, evtchnDom(id))
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { ev.Shutdown() })
				mem, err := gntunix.Open(dir, evtchnDom(id), 0)
				if err != nil {
					b.Fatal(err)
				}
				b.Cleanup(func() { mem.Shutdown() })
				return ev, mem
			}
			sev, smem := open(1)
			cev, cmem := open(2)
			store := &MemStore{}
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			l, err := Listen(ctx, Config{Events: sev, Memory: smem, Store: store, Remote: 2, Path: Path(1, 2, "7"),
				ReadMin: rs.rd, WriteMin: rs.wr})
			if err != nil {
				b.Fatal(err)
			}
			cli, err := Dial(ctx, Config{Events: cev, Memory: cmem, Store: store, Remote: 1, Path: Path(1, 2, "7")})
			if err != nil {
				b.Fatal(err)
			}
			srv, err := l.Accept(ctx)
			if err != nil {
				b.Fatal(err)
			}
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
			b.StopTimer()
			if got != sent {
				b.Fatalf("server read %d bytes, client wrote %d", got, sent)
			}
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

func evtchnDom(id uint16) domid.ID { return domid.ID(id) }
