package xssock_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"testing"
	"time"

	"github.com/gozen-dev/gozen/xenbus/wire"
	"github.com/gozen-dev/gozen/xenbus/xssock"
)

// FuzzReadMsg feeds an arbitrary stream to a Conn: it yields whole
// messages whose payloads match their headers, then ends with io.EOF or
// ErrCorrupt; it never panics or hangs.
func FuzzReadMsg(f *testing.F) {
	m := func(t wire.Type, p string) []byte {
		b, _ := wire.Msg{Header: wire.Header{Type: t, ReqID: 3}, Payload: []byte(p)}.Marshal()
		return b
	}
	f.Add([]byte{})
	f.Add(m(wire.Read, "a\x00"))
	f.Add(append(m(wire.Write, "a\x00b"), m(wire.WatchEvent, "p\x00t\x00")...))
	f.Add(m(wire.Read, "abc")[:10])
	big := m(wire.Read, "")
	big[12], big[13] = 0x01, 0x10 // Len 4097
	f.Add(big)
	f.Fuzz(func(t *testing.T, raw []byte) {
		a, b := net.Pipe()
		c := xssock.New(b)
		defer c.Close()
		go func() { a.Write(raw); a.Close() }()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		rest := raw
		for {
			got, err := c.ReadMsg(ctx)
			if err != nil {
				if !errors.Is(err, io.EOF) && !errors.Is(err, xssock.ErrCorrupt) {
					t.Fatalf("unexpected end: %v", err)
				}
				if errors.Is(err, io.EOF) && len(rest) != 0 {
					t.Fatalf("EOF with %d bytes unread", len(rest))
				}
				return
			}
			want, err := wire.Unmarshal(rest[:wire.HeaderSize+int(got.Len)])
			if err != nil || want.Header != got.Header || !bytes.Equal(want.Payload, got.Payload) {
				t.Fatalf("message %+v does not match the stream (%v)", got.Header, err)
			}
			rest = rest[wire.HeaderSize+int(got.Len):]
		}
	})
}
