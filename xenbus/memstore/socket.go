package memstore

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"syscall"

	"github.com/gozen-dev/gozen/domid"
	"github.com/gozen-dev/gozen/xenbus/xssock"
)

// ErrClosed is returned when serving on a closed store or listener.
var ErrClosed = errors.New("memstore: closed")

// ServeConn serves domain d (0 for a privileged dom0 client) on the
// stream nc with the xenstore wire protocol as xenstored speaks it on its
// socket (package xenbus/xssock: header and payload, back to back), until
// the Conn or the store is closed, the client hangs up (Done is closed,
// Err stays nil) or breaks the framing (Err wraps xssock.ErrCorrupt). The
// Conn owns nc. For d != 0 the domain is added first (see AddDomain).
func (s *Store) ServeConn(nc net.Conn, d domid.ID) (*Conn, error) {
	if err := s.AddDomain(d); err != nil {
		nc.Close()
		return nil, err
	}
	return s.serve(xssock.New(nc), d)
}

// Listener serves the connections made to one Unix socket, all as one
// domain: a process dials it (xenbus.DialUnix) to act as that domain,
// with no Xen. See ListenUnix.
type Listener struct {
	s    *Store
	dom  domid.ID
	path string
	ln   *net.UnixListener

	mu     sync.Mutex
	conns  map[*Conn]bool
	closed bool
}

// ListenUnix listens on the Unix socket at path (replacing a stale
// socket no process listens on any more, refusing a live one) and serves
// every connection Accept returns as domain d, added to the store if
// needed. Whoever can connect to path acts as domain d: protect it with
// the permissions of its directory.
func (s *Store) ListenUnix(path string, d domid.ID) (*Listener, error) {
	if err := s.AddDomain(d); err != nil {
		return nil, err
	}
	addr := &net.UnixAddr{Name: path, Net: "unix"}
	ln, err := net.ListenUnix("unix", addr)
	if errors.Is(err, syscall.EADDRINUSE) {
		c, derr := net.DialUnix("unix", nil, addr)
		if derr == nil {
			c.Close()
			return nil, fmt.Errorf("memstore: listen %s: in use by a live process: %w", path, err)
		}
		if errors.Is(derr, syscall.ECONNREFUSED) && os.Remove(path) == nil {
			ln, err = net.ListenUnix("unix", addr)
		}
	}
	if err != nil {
		return nil, fmt.Errorf("memstore: listen: %w", err)
	}
	ln.SetUnlinkOnClose(true)
	return &Listener{s: s, dom: d, path: path, ln: ln, conns: map[*Conn]bool{}}, nil
}

// Path returns the socket's path.
func (l *Listener) Path() string { return l.path }

// Domain returns the domain the listener's connections act as.
func (l *Listener) Domain() domid.ID { return l.dom }

// Accept waits for the next connection and returns it, already served
// (watch its Done channel to learn when the client goes away). It fails
// when ctx ends or the listener is closed (an error wrapping ErrClosed).
func (l *Listener) Accept(ctx context.Context) (*Conn, error) {
	stop := context.AfterFunc(ctx, func() { l.ln.Close() })
	nc, err := l.ln.AcceptUnix()
	interrupted := !stop()
	if err != nil {
		if interrupted && ctx.Err() != nil {
			// The listener was closed to interrupt Accept; it cannot be
			// reopened, so the listener is done.
			l.Close()
			return nil, fmt.Errorf("memstore: accept: %w (listener closed: %w)", ctx.Err(), ErrClosed)
		}
		l.mu.Lock()
		closed := l.closed
		l.mu.Unlock()
		if closed || errors.Is(err, net.ErrClosed) {
			return nil, fmt.Errorf("memstore: accept: %w", ErrClosed)
		}
		return nil, fmt.Errorf("memstore: accept: %w", err)
	}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		nc.Close()
		return nil, fmt.Errorf("memstore: accept: %w", ErrClosed)
	}
	l.mu.Unlock()
	c, err := l.s.serve(xssock.New(nc), l.dom)
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	l.conns[c] = true
	l.mu.Unlock()
	go func() {
		<-c.Done()
		l.mu.Lock()
		delete(l.conns, c)
		l.mu.Unlock()
	}()
	return c, nil
}

// Close stops listening, removes the socket and closes the connections
// Accept returned.
func (l *Listener) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	conns := make([]*Conn, 0, len(l.conns))
	for c := range l.conns {
		conns = append(conns, c)
	}
	l.mu.Unlock()
	err := l.ln.Close()
	for _, c := range conns {
		c.Close()
	}
	if err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("memstore: closing listener %s: %w", l.path, err)
	}
	return nil
}
