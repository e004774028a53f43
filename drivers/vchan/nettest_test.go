package vchan

import (
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"golang.org/x/net/nettest"
)

// TestNetConn runs golang.org/x/net/nettest.TestConn, the standard
// conformance test of net.Conn (basic I/O, ping-pong, racing reads and
// writes, concurrent method calls, deadlines that fire, move and are
// cleared, Close unblocking pending calls), over the in-heap transports:
// with in-page and with granted rings, and with each end as the first
// connection. After each case both ends are closed together and nothing
// may be left over once background revocation is done.
func TestNetConn(t *testing.T) {
	tests := []struct {
		name           string
		readMin, write int
		serverFirst    bool
	}{
		{"in-page rings, server first", 0, 0, true},
		{"in-page rings, client first", 0, 0, false},
		{"one-page rings, server first", 4096, 4096, true},
		{"64 KiB rings, client first", 1 << 16, 1 << 16, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var mu sync.Mutex
			var rigs []*rig
			nettest.TestConn(t, func() (c1, c2 net.Conn, stop func(), err error) {
				r := newRig(t, tt.readMin, tt.write)
				// CloseTimeout closes the server first while the client
				// keeps the pages mapped until stop: do not wait 2 s
				r.srvCfg.CloseTimeout = 250 * time.Millisecond
				mu.Lock()
				rigs = append(rigs, r)
				mu.Unlock()
				srv, cli := r.pair(t)
				stop = func() {
					var wg sync.WaitGroup
					wg.Add(1)
					go func() { defer wg.Done(); srv.Close() }()
					cli.Close()
					wg.Wait()
				}
				if tt.serverFirst {
					return srv, cli, stop, nil
				}
				return cli, srv, stop, nil
			})
			// A server closed first waits CloseTimeout for the client to
			// unmap, then revokes in the background (CloseTimeout does
			// that: its client closes only in stop); give that time.
			deadline := time.Now().Add(5 * time.Second)
			for _, r := range rigs {
				for r.gn.Stats().String() != "" && time.Now().Before(deadline) {
					time.Sleep(10 * time.Millisecond)
				}
				r.leftovers(t)
			}
		})
	}
}

// TestMethodsAfterClose checks what every net.Conn does once closed: each
// I/O and deadline method fails with an error wrapping net.ErrClosed (a
// *net.OpError), on either end, and a second Close is harmless.
func TestMethodsAfterClose(t *testing.T) {
	calls := []struct {
		name string
		call func(c net.Conn) error
	}{
		{"Read", func(c net.Conn) error { _, err := c.Read(make([]byte, 1)); return err }},
		{"Write", func(c net.Conn) error { _, err := c.Write([]byte("x")); return err }},
		{"SetDeadline", func(c net.Conn) error { return c.SetDeadline(time.Now().Add(time.Second)) }},
		{"SetReadDeadline", func(c net.Conn) error { return c.SetReadDeadline(time.Time{}) }},
		{"SetWriteDeadline", func(c net.Conn) error { return c.SetWriteDeadline(time.Now()) }},
	}
	for _, end := range []string{"server", "client"} {
		t.Run(end, func(t *testing.T) {
			r := newRig(t, 0, 0)
			srv, cli := r.pair(t)
			closeBoth(t, srv, cli)
			c := net.Conn(srv)
			if end == "client" {
				c = cli
			}
			for _, tc := range calls {
				err := tc.call(c)
				var op *net.OpError
				if !errors.Is(err, net.ErrClosed) || !errors.As(err, &op) {
					t.Errorf("%s after Close: %v, want a *net.OpError wrapping net.ErrClosed", tc.name, err)
				}
			}
			if err := c.Close(); err != nil {
				t.Errorf("second Close: %v", err)
			}
			r.leftovers(t)
		})
	}
}
