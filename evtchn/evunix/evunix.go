// Package evunix implements [evtchn.Events] between Linux processes, without
// Xen: each process plays one domain, and notifications travel over Unix
// domain stream sockets.
//
// # Rendezvous directory
//
// The domains of one "machine" share a rendezvous directory. Domain id
// listens on the socket
//
//	<dir>/evtchn.<id>.sock
//
// (id in decimal). The whole path must fit in a sockaddr_un, about 100
// bytes, so keep the directory short (os.MkdirTemp("", "x") is fine). Open
// replaces a stale socket left by a dead process, but refuses to take over
// one that still accepts connections.
//
// # Wire protocol
//
// To talk to domain R, a domain connects to R's socket and sends a stream
// of fixed 20-byte messages, all fields little-endian:
//
//	offset size field
//	0      4    magic 0x76457a47 ("GzEv")
//	4      1    op
//	5      1    reserved, 0
//	6      2    from: the sender's domain id
//	8      4    dst: a port of the receiver
//	12     4    src: a port of the sender
//	16     4    seq: request number (bind and its reply), else 0
//
// The first message on a connection is HELLO (op 1, ports and seq 0),
// naming the sender; every later message must carry the same from. The
// connection is one-way: replies travel on the receiver's own connection to
// the sender. Operations:
//
//   - BIND (2): the sender has allocated its port src for the binding and
//     asks to bind it to dst, which must be an unbound port of the receiver
//     allocated for the sender. The receiver answers BIND_OK (3) or
//     BIND_FAIL (4) with dst and src swapped and the same seq.
//   - NOTIFY (5): increments the generation of dst, if dst is bound to
//     (from, src); otherwise it is dropped.
//   - CLOSE (6): the sender closed src; if dst is bound to (from, src), it
//     becomes "remote closed": its waiters get ErrClosed.
//
// AllocUnbound sends nothing: it only records which domain may bind.
// Notifications are counted on the receiving side; none is lost as long as
// both processes live, since stream sockets are reliable and ordered. A
// Notify blocks while the peer's socket buffer is full (back-pressure) and
// fails after [SendTimeout].
//
// # Trust
//
// Everything read from a socket is untrusted: a message of the wrong magic,
// op, reserved byte or sender closes that connection, and a message naming
// ports that do not match our port table is dropped; nothing read from a
// peer can make this package panic. The sender's id is taken from HELLO:
// without a hypervisor, identity is only as strong as the permissions of
// the rendezvous directory.
//
// Semantics otherwise follow package evheap (and Xen): ports from 1, lowest
// free reused, notifications on an unbound port dropped, domid.Self names
// the calling domain.
package evunix

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/gozen-dev/gozen/domid"
	"github.com/gozen-dev/gozen/evtchn"
)

// MaxPorts bounds the port numbers of one domain; port 0 is never used.
const MaxPorts = 4096

// SendTimeout bounds how long a send may block on a peer that does not
// read, and how long BindInterdomain waits for the peer's answer.
const SendTimeout = 10 * time.Second

// Message layout.
const (
	msgSize  = 20
	msgMagic = 0x76457a47
)

// Message ops.
const (
	opHello    = 1
	opBind     = 2
	opBindOK   = 3
	opBindFail = 4
	opNotify   = 5
	opClose    = 6
)

// ErrProtocol means a peer sent a malformed message.
var ErrProtocol = errors.New("evunix: protocol violation")

// message is one decoded wire message.
type message struct {
	op   uint8
	from domid.ID
	dst  evtchn.Port
	src  evtchn.Port
	seq  uint32
}

func (m message) encode(b *[msgSize]byte) {
	binary.LittleEndian.PutUint32(b[0:], msgMagic)
	b[4] = m.op
	b[5] = 0
	binary.LittleEndian.PutUint16(b[6:], uint16(m.from))
	binary.LittleEndian.PutUint32(b[8:], uint32(m.dst))
	binary.LittleEndian.PutUint32(b[12:], uint32(m.src))
	binary.LittleEndian.PutUint32(b[16:], m.seq)
}

// decode parses an untrusted message.
func decode(b []byte) (message, error) {
	if len(b) != msgSize {
		return message{}, fmt.Errorf("%d-byte message: %w", len(b), ErrProtocol)
	}
	if mg := binary.LittleEndian.Uint32(b[0:]); mg != msgMagic {
		return message{}, fmt.Errorf("bad magic %#x: %w", mg, ErrProtocol)
	}
	m := message{
		op:   b[4],
		from: domid.ID(binary.LittleEndian.Uint16(b[6:])),
		dst:  evtchn.Port(binary.LittleEndian.Uint32(b[8:])),
		src:  evtchn.Port(binary.LittleEndian.Uint32(b[12:])),
		seq:  binary.LittleEndian.Uint32(b[16:]),
	}
	if m.op < opHello || m.op > opClose {
		return message{}, fmt.Errorf("bad op %d: %w", m.op, ErrProtocol)
	}
	if b[5] != 0 {
		return message{}, fmt.Errorf("reserved byte %#x: %w", b[5], ErrProtocol)
	}
	if m.from == domid.Self {
		return message{}, fmt.Errorf("sender domid.Self: %w", ErrProtocol)
	}
	return m, nil
}

// SocketPath returns the socket of domain id in the rendezvous directory.
func SocketPath(dir string, id domid.ID) string {
	return filepath.Join(dir, "evtchn."+strconv.Itoa(int(id))+".sock")
}

// Domain is one process's event-channel service. It implements
// [evtchn.Events]; its methods are safe for concurrent use.
type Domain struct {
	dir string
	id  domid.ID
	ln  *net.UnixListener

	mu      sync.Mutex
	ports   []*port // indexed by port number; nil means free
	nports  int
	seq     uint32
	pending map[uint32]*bindCall
	out     map[domid.ID]*peerConn // our connections to peers
	in      map[net.Conn]bool      // accepted connections
	closed  bool
	wg      sync.WaitGroup
}

var _ evtchn.Events = (*Domain)(nil)

type portState int

const (
	stateUnbound      portState = iota // allocated for remote, not bound yet
	stateInterdomain                   // bound to (remote, remotePort)
	stateRemoteClosed                  // was bound, the remote end closed
)

type port struct {
	state      portState
	remote     domid.ID
	remotePort evtchn.Port
	gen        evtchn.Generation
	closed     bool
	wake       chan struct{} // closed and replaced on every change
}

func newPort(s portState, remote domid.ID, rp evtchn.Port) *port {
	return &port{state: s, remote: remote, remotePort: rp, wake: make(chan struct{})}
}

func (p *port) wakeAll() {
	close(p.wake)
	p.wake = make(chan struct{})
}

type bindCall struct {
	remote domid.ID
	port   evtchn.Port // our new port
	reply  chan bool
}

type peerConn struct {
	mu sync.Mutex
	c  *net.UnixConn
}

// Open creates domain id in the rendezvous directory dir and starts
// serving its socket. Shutdown releases it.
func Open(dir string, id domid.ID) (*Domain, error) {
	if id == domid.Self {
		return nil, fmt.Errorf("evunix: open domain %#x: domid.Self is not a domain id: %w", id, evtchn.ErrNoPeer)
	}
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("evunix: open domain %d: %w", id, err)
	}
	path := SocketPath(abs, id)
	ln, err := listen(path)
	if err != nil {
		return nil, fmt.Errorf("evunix: open domain %d: %w", id, err)
	}
	d := &Domain{
		dir:     abs,
		id:      id,
		ln:      ln,
		ports:   make([]*port, 1),
		pending: make(map[uint32]*bindCall),
		out:     make(map[domid.ID]*peerConn),
		in:      make(map[net.Conn]bool),
	}
	d.wg.Add(1)
	go d.accept()
	return d, nil
}

// listen listens on path, replacing a stale socket.
func listen(path string) (*net.UnixListener, error) {
	addr := &net.UnixAddr{Name: path, Net: "unix"}
	ln, err := net.ListenUnix("unix", addr)
	if err == nil || !errors.Is(err, syscall.EADDRINUSE) {
		return ln, err
	}
	c, derr := net.DialUnix("unix", nil, addr)
	if derr == nil {
		c.Close()
		return nil, fmt.Errorf("%s is in use by a live domain: %w", path, err)
	}
	if !errors.Is(derr, syscall.ECONNREFUSED) {
		return nil, err
	}
	if rerr := os.Remove(path); rerr != nil {
		return nil, fmt.Errorf("removing stale socket: %w", rerr)
	}
	return net.ListenUnix("unix", addr)
}

// ID returns the domain's id.
func (d *Domain) ID() domid.ID { return d.id }

// Stats returns the resources held by the domain.
func (d *Domain) Stats() evtchn.Stats {
	d.mu.Lock()
	defer d.mu.Unlock()
	return evtchn.Stats{Ports: d.nports}
}

// Shutdown closes every port (telling their peers), stops serving and
// removes the socket. Waiters are woken with ErrClosed.
func (d *Domain) Shutdown() error {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return fmt.Errorf("evunix: shut down domain %d: %w", d.id, evtchn.ErrClosed)
	}
	var open []evtchn.Port
	for i, p := range d.ports {
		if p != nil {
			open = append(open, evtchn.Port(i))
		}
	}
	d.mu.Unlock()
	for _, p := range open {
		_ = d.closePort(p)
	}
	d.mu.Lock()
	d.closed = true
	for _, pc := range d.out {
		pc.c.Close()
	}
	for c := range d.in {
		c.Close()
	}
	for _, b := range d.pending {
		close(b.reply)
	}
	d.pending = nil
	d.mu.Unlock()
	err := d.ln.Close()
	d.wg.Wait()
	if err != nil {
		return fmt.Errorf("evunix: shut down domain %d: %w", d.id, err)
	}
	return nil
}

func (d *Domain) resolve(id domid.ID) domid.ID {
	if id == domid.Self {
		return d.id
	}
	return id
}

// alloc allocates the lowest free port; d.mu is held.
func (d *Domain) alloc(p *port) (evtchn.Port, error) {
	if d.closed {
		return 0, fmt.Errorf("domain closed: %w", evtchn.ErrClosed)
	}
	for i := 1; i < len(d.ports); i++ {
		if d.ports[i] == nil {
			d.ports[i] = p
			d.nports++
			return evtchn.Port(i), nil
		}
	}
	if len(d.ports) >= MaxPorts {
		return 0, fmt.Errorf("%d ports in use: %w", d.nports, evtchn.ErrNoSpace)
	}
	d.ports = append(d.ports, p)
	d.nports++
	return evtchn.Port(len(d.ports) - 1), nil
}

// free releases port n; d.mu is held.
func (d *Domain) free(n evtchn.Port) {
	d.ports[n] = nil
	d.nports--
}

// lookup returns port n or nil; d.mu is held.
func (d *Domain) lookup(n evtchn.Port) *port {
	if n == 0 || uint64(n) >= uint64(len(d.ports)) {
		return nil
	}
	return d.ports[n]
}

// AllocUnbound allocates a port that remote may bind to.
func (d *Domain) AllocUnbound(remote domid.ID) (evtchn.Port, error) {
	remote = d.resolve(remote)
	d.mu.Lock()
	defer d.mu.Unlock()
	p, err := d.alloc(newPort(stateUnbound, remote, 0))
	if err != nil {
		return 0, fmt.Errorf("evunix: domain %d: alloc unbound for domain %d: %w", d.id, remote, err)
	}
	return p, nil
}

// BindInterdomain binds a fresh port to remotePort of remote, asking the
// remote process over its socket.
func (d *Domain) BindInterdomain(remote domid.ID, remotePort evtchn.Port) (evtchn.Port, error) {
	remote = d.resolve(remote)
	fail := func(err error) (evtchn.Port, error) {
		return 0, fmt.Errorf("evunix: domain %d: bind to domain %d port %d: %w", d.id, remote, remotePort, err)
	}
	if remotePort == 0 || remotePort >= MaxPorts {
		return fail(evtchn.ErrNoPeer)
	}
	d.mu.Lock()
	// The port is bound before asking, so that a notification the peer
	// sends as soon as it has bound its end is not dropped.
	p := newPort(stateInterdomain, remote, remotePort)
	n, err := d.alloc(p)
	if err != nil {
		d.mu.Unlock()
		return fail(err)
	}
	d.seq++
	call := &bindCall{remote: remote, port: n, reply: make(chan bool, 1)}
	seq := d.seq
	d.pending[seq] = call
	d.mu.Unlock()

	undo := func() {
		d.mu.Lock()
		delete(d.pending, seq)
		if d.ports[n] == p {
			d.free(n)
		}
		d.mu.Unlock()
	}
	err = d.send(remote, message{op: opBind, dst: remotePort, src: n, seq: seq})
	if err != nil {
		undo()
		return fail(fmt.Errorf("%w: %w", evtchn.ErrNoPeer, err))
	}
	timer := time.NewTimer(SendTimeout)
	defer timer.Stop()
	select {
	case ok := <-call.reply:
		if ok {
			return n, nil
		}
		undo()
		return fail(evtchn.ErrNoPeer)
	case <-timer.C:
		undo()
		return fail(fmt.Errorf("no answer after %v: %w", SendTimeout, evtchn.ErrNoPeer))
	}
}

// Notify sends a notification to the remote end of port.
func (d *Domain) Notify(n evtchn.Port) error {
	d.mu.Lock()
	p := d.lookup(n)
	if p == nil {
		d.mu.Unlock()
		return fmt.Errorf("evunix: domain %d: notify port %d: %w", d.id, n, evtchn.ErrBadPort)
	}
	state, remote, rp := p.state, p.remote, p.remotePort
	d.mu.Unlock()
	switch state {
	case stateUnbound:
		return nil // like Xen: dropped
	case stateRemoteClosed:
		return fmt.Errorf("evunix: domain %d: notify port %d: remote end: %w", d.id, n, evtchn.ErrClosed)
	}
	if err := d.send(remote, message{op: opNotify, dst: rp, src: n}); err != nil {
		if peerGone(err) {
			// its close message may still be on the way: a bound
			// port whose domain cannot be reached is closed
			return fmt.Errorf("evunix: domain %d: notify port %d: domain %d is gone: %w (%w)", d.id, n, remote, evtchn.ErrClosed, err)
		}
		return fmt.Errorf("evunix: domain %d: notify port %d: %w", d.id, n, err)
	}
	return nil
}

// peerGone reports whether err says the remote domain's process is gone:
// its socket removed or refusing, or the connection broken.
func peerGone(err error) bool {
	return errors.Is(err, syscall.ENOENT) || errors.Is(err, syscall.ECONNREFUSED) ||
		errors.Is(err, syscall.EPIPE) || errors.Is(err, syscall.ECONNRESET)
}

// Wait blocks until the generation of port exceeds seen.
func (d *Domain) Wait(ctx context.Context, n evtchn.Port, seen evtchn.Generation) (evtchn.Generation, error) {
	d.mu.Lock()
	p := d.lookup(n)
	if p == nil {
		d.mu.Unlock()
		return 0, fmt.Errorf("evunix: domain %d: wait port %d: %w", d.id, n, evtchn.ErrBadPort)
	}
	for {
		switch {
		case p.closed:
			d.mu.Unlock()
			return 0, fmt.Errorf("evunix: domain %d: wait port %d: %w", d.id, n, evtchn.ErrClosed)
		case p.gen > seen:
			g := p.gen
			d.mu.Unlock()
			return g, nil
		case p.state == stateRemoteClosed:
			d.mu.Unlock()
			return 0, fmt.Errorf("evunix: domain %d: wait port %d: remote end: %w", d.id, n, evtchn.ErrClosed)
		}
		wake := p.wake
		d.mu.Unlock()
		select {
		case <-wake:
		case <-ctx.Done():
			return 0, fmt.Errorf("evunix: domain %d: wait port %d: %w", d.id, n, ctx.Err())
		}
		d.mu.Lock()
	}
}

// Close frees port, waking its waiters with ErrClosed, and tells the remote
// end of an interdomain channel.
func (d *Domain) Close(n evtchn.Port) error {
	return d.closePort(n)
}

func (d *Domain) closePort(n evtchn.Port) error {
	d.mu.Lock()
	p := d.lookup(n)
	if p == nil {
		d.mu.Unlock()
		return fmt.Errorf("evunix: domain %d: close port %d: %w", d.id, n, evtchn.ErrBadPort)
	}
	d.free(n)
	p.closed = true
	p.wakeAll()
	tell := p.state == stateInterdomain
	d.mu.Unlock()
	if tell {
		// Best effort: the peer may be gone already.
		_ = d.send(p.remote, message{op: opClose, dst: p.remotePort, src: n})
	}
	return nil
}

// send sends m to domain remote, connecting first if needed. A broken
// cached connection is replaced once.
func (d *Domain) send(remote domid.ID, m message) error {
	m.from = d.id
	var b [msgSize]byte
	m.encode(&b)
	for attempt := 0; ; attempt++ {
		pc, fresh, err := d.conn(remote)
		if err != nil {
			return err
		}
		pc.mu.Lock()
		pc.c.SetWriteDeadline(time.Now().Add(SendTimeout))
		_, err = pc.c.Write(b[:])
		pc.mu.Unlock()
		if err == nil {
			return nil
		}
		d.dropConn(remote, pc)
		if fresh || attempt > 0 {
			return fmt.Errorf("send to domain %d: %w", remote, err)
		}
	}
}

// conn returns the connection to remote, dialing it if needed; fresh
// reports a new connection.
func (d *Domain) conn(remote domid.ID) (*peerConn, bool, error) {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return nil, false, fmt.Errorf("domain %d closed: %w", d.id, evtchn.ErrClosed)
	}
	if pc := d.out[remote]; pc != nil {
		d.mu.Unlock()
		return pc, false, nil
	}
	d.mu.Unlock()
	c, err := net.DialUnix("unix", nil, &net.UnixAddr{Name: SocketPath(d.dir, remote), Net: "unix"})
	if err != nil {
		return nil, false, fmt.Errorf("connect to domain %d: %w", remote, err)
	}
	var b [msgSize]byte
	message{op: opHello, from: d.id}.encode(&b)
	c.SetWriteDeadline(time.Now().Add(SendTimeout))
	if _, err := c.Write(b[:]); err != nil {
		c.Close()
		return nil, false, fmt.Errorf("hello to domain %d: %w", remote, err)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		c.Close()
		return nil, false, fmt.Errorf("domain %d closed: %w", d.id, evtchn.ErrClosed)
	}
	if pc := d.out[remote]; pc != nil { // lost a race with another sender
		c.Close()
		return pc, false, nil
	}
	pc := &peerConn{c: c}
	d.out[remote] = pc
	return pc, true, nil
}

func (d *Domain) dropConn(remote domid.ID, pc *peerConn) {
	d.mu.Lock()
	if d.out[remote] == pc {
		delete(d.out, remote)
	}
	d.mu.Unlock()
	pc.c.Close()
}

// accept serves incoming connections until the listener closes.
func (d *Domain) accept() {
	defer d.wg.Done()
	for {
		c, err := d.ln.AcceptUnix()
		if err != nil {
			return
		}
		d.mu.Lock()
		if d.closed {
			d.mu.Unlock()
			c.Close()
			return
		}
		d.in[c] = true
		d.wg.Add(1)
		d.mu.Unlock()
		go d.serve(c)
	}
}

// serve reads one peer's messages; any protocol violation ends it.
func (d *Domain) serve(c *net.UnixConn) {
	defer d.wg.Done()
	defer func() {
		d.mu.Lock()
		delete(d.in, c)
		d.mu.Unlock()
		c.Close()
	}()
	r := bufio.NewReaderSize(c, 64*msgSize)
	var b [msgSize]byte
	c.SetReadDeadline(time.Now().Add(SendTimeout))
	if _, err := io.ReadFull(r, b[:]); err != nil {
		return
	}
	hello, err := decode(b[:])
	if err != nil || hello.op != opHello {
		return
	}
	c.SetReadDeadline(time.Time{})
	for {
		if _, err := io.ReadFull(r, b[:]); err != nil {
			return
		}
		m, err := decode(b[:])
		if err != nil || m.from != hello.from || m.op == opHello {
			return
		}
		d.handle(m)
	}
}

// handle applies one untrusted message from m.from.
func (d *Domain) handle(m message) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return
	}
	switch m.op {
	case opBind:
		p := d.lookup(m.dst)
		reply := message{op: opBindFail, dst: m.src, src: m.dst, seq: m.seq}
		if p != nil && p.state == stateUnbound && p.remote == m.from && m.src != 0 && m.src < MaxPorts {
			p.state = stateInterdomain
			p.remotePort = m.src
			reply.op = opBindOK
		}
		// Answer without holding the lock; the reply may block on a full
		// peer for up to SendTimeout.
		d.mu.Unlock()
		_ = d.send(m.from, reply)
		d.mu.Lock()
	case opBindOK, opBindFail:
		call := d.pending[m.seq]
		if call == nil || call.remote != m.from || call.port != m.dst {
			return
		}
		delete(d.pending, m.seq)
		call.reply <- m.op == opBindOK
	case opNotify, opClose:
		p := d.lookup(m.dst)
		if p == nil || p.state != stateInterdomain || p.remote != m.from || p.remotePort != m.src {
			return
		}
		if m.op == opNotify {
			p.gen++
		} else {
			p.state = stateRemoteClosed
		}
		p.wakeAll()
	}
}
