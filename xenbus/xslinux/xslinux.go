//go:build linux

// Package xslinux connects the xenstore client of package xenbus to the
// store from a Linux domain, as a [xenbus.Transport]:
//
//   - over xenstored's Unix socket (SocketPath, in dom0 where xenstored
//     runs): a plain stream of xsd_sockmsg messages, watches and
//     transactions handled by xenstored;
//   - over the kernel's xenbus device (DevicePath, in any Linux domain):
//     each request is written whole in one write; the kernel forwards it
//     over its own connection and queues the reply for reading, and it
//     handles XS_WATCH and XS_UNWATCH itself, queueing watch events as
//     XS_WATCH_EVENT messages.
//
// The device has two quirks this package hides from the client. Linux
// synthesizes the "OK" reply to XS_WATCH and XS_UNWATCH with req_id 0 (and
// tx_id 0): since it does so within the write, in order, the reply is
// given the req_id of the oldest watch request still unanswered. And the
// kernel reports some failures (a watch xenstored refused, an unknown
// transaction, an oversized message) as the write's errno instead of an
// XS_ERROR reply: such an errno becomes an XS_ERROR reply carrying its
// name ("EINVAL"), so the caller sees a xenstore error as usual.
//
// Everything read is untrusted: a header announcing more than
// wire.PayloadMax bytes breaks the connection (the stream cannot be
// resynchronised); it never panics.
package xslinux

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"

	"github.com/gozen-dev/gozen/xenbus"
	"github.com/gozen-dev/gozen/xenbus/wire"
	"github.com/gozen-dev/gozen/xenbus/xsring"
)

// Paths of the store's endpoints in a Linux domain.
const (
	// SocketPath is xenstored's socket (dom0, or a stub domain's host).
	SocketPath = "/run/xenstored/socket"
	// DevicePath is the kernel's xenbus device.
	DevicePath = "/dev/xen/xenbus"
)

// queueLen is how many received messages wait for ReadMsg.
const queueLen = 64

// Conn is a connection to the store. It implements xenbus.Transport.
type Conn struct {
	rw     io.ReadWriteCloser
	kernel bool // the kernel's device: fix its quirks
	name   string

	wmu sync.Mutex // one message written at a time

	mu      sync.Mutex
	watches []wire.Header // WATCH/UNWATCH requests written, not answered
	err     error         // why the reader stopped
	closed  bool

	in   chan wire.Msg
	dead chan struct{} // closed when the reader stopped or Close ran
	once sync.Once
}

var _ xenbus.Transport = (*Conn)(nil)

// newConn starts a connection over rw; kernel selects the device's quirks.
func newConn(rw io.ReadWriteCloser, kernel bool, name string) *Conn {
	c := &Conn{rw: rw, kernel: kernel, name: name, in: make(chan wire.Msg, queueLen), dead: make(chan struct{})}
	go c.readLoop()
	return c
}

// OpenDevice opens the kernel's xenbus device at path (DevicePath).
func OpenDevice(path string) (*Conn, error) {
	f, err := os.OpenFile(path, os.O_RDWR|syscall.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("xslinux: %w", err)
	}
	return newConn(f, true, path), nil
}

// DialSocket connects to xenstored's socket at path (SocketPath).
func DialSocket(path string) (*Conn, error) {
	c, err := net.DialTimeout("unix", path, 10*time.Second)
	if err != nil {
		return nil, fmt.Errorf("xslinux: %w", err)
	}
	return newConn(c, false, path), nil
}

// Open connects to xenstored's socket if it exists, else opens the
// kernel's device.
func Open() (*Conn, error) {
	if _, err := os.Stat(SocketPath); err == nil {
		if c, err := DialSocket(SocketPath); err == nil {
			return c, nil
		}
	}
	return OpenDevice(DevicePath)
}

// Connect opens the store (see Open) and starts a client on it, learning
// this domain's id from the store ("domid" in its home).
func Connect(ctx context.Context) (*xenbus.Client, error) {
	c, err := Open()
	if err != nil {
		return nil, err
	}
	return xenbus.DialTransport(ctx, c)
}

// String names the endpoint.
func (c *Conn) String() string { return c.name }

// closedErr is the error of calls after Close.
func (c *Conn) closedErr() error {
	return fmt.Errorf("xslinux: %s: %w", c.name, xsring.ErrClosed)
}

// WriteMsg writes m whole. ctx is checked before writing; the write itself
// is not interrupted (the kernel device may block in it until xenstored
// answered).
func (c *Conn) WriteMsg(ctx context.Context, m wire.Msg) error {
	b, err := m.Marshal()
	if err != nil {
		return fmt.Errorf("xslinux: %w", err)
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if err := c.state(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("xslinux: write %s: %w", m.Type, err)
	}
	watch := c.kernel && (m.Type == wire.Watch || m.Type == wire.Unwatch)
	if watch {
		c.mu.Lock()
		c.watches = append(c.watches, m.Header)
		c.mu.Unlock()
	}
	n, err := writeAll(c.rw, b)
	if err == nil {
		return nil
	}
	if watch {
		c.answered(m.ReqID)
	}
	var errno syscall.Errno
	if c.kernel && errors.As(err, &errno) && n == 0 {
		// The kernel refused this message: answer it as xenstored would.
		return c.push(errorReply(m.Header, errno))
	}
	err = fmt.Errorf("xslinux: write to %s: %w (%d of %d bytes written)", c.name, err, n, len(b))
	c.stop(err)
	return err
}

// writeAll writes b, continuing after short writes.
func writeAll(w io.Writer, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		k, err := w.Write(b[n:])
		n += k
		if err != nil {
			return n, err
		}
		if k == 0 {
			return n, io.ErrShortWrite
		}
	}
	return n, nil
}

// errorReply is the XS_ERROR reply to request h for errno.
func errorReply(h wire.Header, errno syscall.Errno) wire.Msg {
	name := unix.ErrnoName(errno)
	if name == "" {
		name = "EIO"
	}
	return wire.Msg{Header: wire.Header{Type: wire.Error, ReqID: h.ReqID, TxID: h.TxID},
		Payload: append([]byte(name), 0)}
}

// answered drops the watch request id from the unanswered list and
// returns its header.
func (c *Conn) answered(id uint32) (wire.Header, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, h := range c.watches {
		if h.ReqID == id {
			c.watches = append(c.watches[:i], c.watches[i+1:]...)
			return h, true
		}
	}
	return wire.Header{}, false
}

// fixWatchReply gives a synthesized watch reply (req_id 0) the ids of the
// oldest unanswered watch request.
func (c *Conn) fixWatchReply(m *wire.Msg) {
	if m.Type != wire.Watch && m.Type != wire.Unwatch {
		return
	}
	if m.ReqID != 0 {
		c.answered(m.ReqID)
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, h := range c.watches {
		if h.Type == m.Type {
			m.ReqID, m.TxID = h.ReqID, h.TxID
			c.watches = append(c.watches[:i], c.watches[i+1:]...)
			return
		}
	}
}

// push queues a message for ReadMsg.
func (c *Conn) push(m wire.Msg) error {
	select {
	case c.in <- m:
		return nil
	case <-c.dead:
		return c.state()
	}
}

// readLoop frames the incoming stream into messages.
func (c *Conn) readLoop() {
	r := bufio.NewReaderSize(c.rw, wire.HeaderSize+wire.PayloadMax)
	var hdr [wire.HeaderSize]byte
	for {
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			c.stop(fmt.Errorf("xslinux: reading %s: %w", c.name, err))
			return
		}
		h, _ := wire.ParseHeader(hdr[:])
		if err := h.Check(); err != nil {
			c.stop(fmt.Errorf("xslinux: %s: %w", c.name, err))
			return
		}
		m := wire.Msg{Header: h, Payload: make([]byte, h.Len)}
		if _, err := io.ReadFull(r, m.Payload); err != nil {
			c.stop(fmt.Errorf("xslinux: reading %s: %w", c.name, err))
			return
		}
		if c.kernel {
			c.fixWatchReply(&m)
		}
		if c.push(m) != nil {
			return
		}
	}
}

// stop records the first fatal error and wakes everyone.
func (c *Conn) stop(err error) {
	c.mu.Lock()
	if c.err == nil && !c.closed {
		c.err = err
	}
	c.mu.Unlock()
	c.once.Do(func() { close(c.dead) })
}

// state returns nil while the connection works.
func (c *Conn) state() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	switch {
	case c.closed:
		return c.closedErr()
	case c.err != nil:
		return c.err
	}
	return nil
}

// ReadMsg returns the next reply or watch event.
func (c *Conn) ReadMsg(ctx context.Context) (wire.Msg, error) {
	select {
	case m := <-c.in:
		return m, nil
	default:
	}
	select {
	case m := <-c.in:
		return m, nil
	case <-c.dead:
		select {
		case m := <-c.in:
			return m, nil
		default:
		}
		return wire.Msg{}, c.state()
	case <-ctx.Done():
		return wire.Msg{}, fmt.Errorf("xslinux: read: %w", ctx.Err())
	}
}

// Close closes the connection; pending and later calls fail with an error
// wrapping xsring.ErrClosed. The kernel drops this connection's watches
// and aborts its transactions.
func (c *Conn) Close() error {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil
	}
	c.closed = true
	c.mu.Unlock()
	err := c.rw.Close()
	c.once.Do(func() { close(c.dead) })
	if err != nil {
		return fmt.Errorf("xslinux: closing %s: %w", c.name, err)
	}
	return nil
}
