// Package memstore is a small, honest in-process xenstore server for host
// tests. It serves the real wire protocol over the real ring layout (the
// server side of package xenbus/xsring), so the xenbus client code is
// exercised end to end, and drivers' tests (vchan, netfront...) can use it
// as their xenstore.
//
// Implemented: the node tree with permissions (owner domid, default and
// per-domain access, inheritance on creation, dom0 privileged), READ,
// WRITE, MKDIR, RM, DIRECTORY, GET_PERMS, SET_PERMS, WATCH (with the
// initial event), UNWATCH, WATCH_EVENT delivery filtered by read access,
// RESET_WATCHES, TRANSACTION_START/END with conflict detection (EAGAIN when
// a node the transaction read or wrote changed since it started),
// GET_DOMAIN_PATH and IS_DOMAIN_INTRODUCED, relative paths, and the
// @introduceDomain/@releaseDomain special watches. Not implemented
// (ENOSYS): quota, DIRECTORY_PART, CONTROL, features, INTRODUCE and friends.
//
// Typical test:
//
//	s := memstore.New()
//	defer s.Close()
//	dom0, _ := s.Connect(0)       // a *xenbus.Client acting as dom0
//	guest, _ := s.Connect(5)      // home /local/domain/5, owned by domain 5
//
// Between processes, the store also serves the wire protocol on Unix
// sockets, as xenstored does (package xenbus/xssock's framing): a
// Listener made by ListenUnix serves every connection as one domain, and
// the other process connects with xenbus.DialUnix, running the same
// client code as over a ring:
//
//	l, _ := s.ListenUnix("/tmp/x/xenstore.5.sock", 5)
//	conn, _ := l.Accept(ctx)      // served; <-conn.Done() when it hangs up
//	// in the other process:
//	guest, _ := xenbus.DialUnix(ctx, "/tmp/x/xenstore.5.sock")
package memstore

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"sync"

	"github.com/gozen-dev/gozen/domid"
	"github.com/gozen-dev/gozen/xenbus"
	"github.com/gozen-dev/gozen/xenbus/wire"
	"github.com/gozen-dev/gozen/xenbus/xsring"
	"github.com/gozen-dev/gozen/xenbus/xssock"
)

// maxTxPerConn bounds open transactions per connection (EBUSY beyond).
const maxTxPerConn = 64

// Store is an in-process xenstore. Methods are safe for concurrent use.
type Store struct {
	mu      sync.Mutex
	t       tree
	gen     uint64
	tombs   map[string]uint64 // removed path -> generation of removal
	conns   map[*Conn]bool
	domains map[domid.ID]bool
	nextTx  uint32
	closed  bool
	extra   []func() // cleanups of Connect
}

// New returns a store holding "/", "/local" and "/local/domain", owned by
// dom0 and unreadable by other domains ("n0"), like a fresh xenstored.
func New() *Store {
	s := &Store{
		t:       tree{},
		tombs:   map[string]uint64{},
		conns:   map[*Conn]bool{},
		domains: map[domid.ID]bool{0: true},
	}
	s.t["/"] = &node{perms: []wire.Perm{{Dom: 0, Access: wire.AccessNone}}, children: map[string]bool{}}
	e := s.env()
	e.apply(0, op{kind: wire.Mkdir, path: "/local/domain"})
	return s
}

// env returns the environment of the store's own tree for one mutation.
// Called with s.mu held.
func (s *Store) env() *env {
	s.gen++
	return &env{t: s.t, stamp: s.gen, tomb: func(p string, g uint64) { s.tombs[p] = g }}
}

// Close stops serving every connection and closes the clients made by
// Connect.
func (s *Store) Close() error {
	s.mu.Lock()
	s.closed = true
	conns := make([]*Conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	extra := s.extra
	s.extra = nil
	s.mu.Unlock()
	for _, f := range extra {
		f()
	}
	for _, c := range conns {
		c.Close()
	}
	return nil
}

// AddDomain creates /local/domain/<d> owned by d with no access for other
// domains, writes its "domid" key, and fires @introduceDomain, as the
// toolstack does when it creates a domain. It is a no-op for a known
// domain.
func (s *Store) AddDomain(d domid.ID) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if d == 0 || s.domains[d] {
		s.domains[d] = true
		return nil
	}
	home := wire.DomainPath(d)
	for _, o := range []op{
		{kind: wire.Mkdir, path: home},
		{kind: wire.SetPerms, path: home, perms: []wire.Perm{{Dom: d, Access: wire.AccessNone}}},
		{kind: wire.Write, path: home + "/domid", value: []byte(strconv.Itoa(int(d)))},
	} {
		if err := s.applyLocked(0, o); err != nil {
			return fmt.Errorf("memstore: adding domain %d: %w", d, err)
		}
	}
	s.domains[d] = true
	s.fireLocked([]event{{path: "@introduceDomain", special: true}})
	return nil
}

// RemoveDomain removes /local/domain/<d> and fires @releaseDomain, as when
// a domain is destroyed. Its connections are not closed.
func (s *Store) RemoveDomain(d domid.ID) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.domains, d)
	if err := s.applyLocked(0, op{kind: wire.Rm, path: wire.DomainPath(d)}); err != nil {
		return fmt.Errorf("memstore: removing domain %d: %w", d, err)
	}
	s.fireLocked([]event{{path: "@releaseDomain", special: true}})
	return nil
}

// applyLocked performs a mutation on the store and fires the watches.
func (s *Store) applyLocked(dom domid.ID, o op) error {
	evs, err := s.env().apply(dom, o)
	if err != nil {
		return err
	}
	s.fireLocked(evs)
	if len(s.tombs) > maxTombs {
		s.pruneTombsLocked()
	}
	return nil
}

// maxTombs is the number of tombstones above which old ones are pruned.
const maxTombs = 1024

// pruneTombsLocked forgets removals older than every open transaction:
// no commit can conflict with them any more.
func (s *Store) pruneTombsLocked() {
	oldest := s.gen
	for c := range s.conns {
		for _, tx := range c.txs {
			oldest = min(oldest, tx.start)
		}
	}
	for p, g := range s.tombs {
		if g <= oldest {
			delete(s.tombs, p)
		}
	}
}

// fireLocked sends watch events for evs to every matching watch whose
// domain may read the changed node.
func (s *Store) fireLocked(evs []event) {
	for _, ev := range evs {
		for c := range s.conns {
			for _, w := range c.watches {
				epath := ""
				switch {
				case isChild(ev.path, w.path):
					epath = ev.path
				case ev.removal && isChild(w.path, ev.path):
					epath = w.path
				default:
					continue
				}
				if !ev.special && !access(ev.perms, c.dom).CanRead() {
					continue
				}
				c.sendEvent(w, epath)
			}
		}
	}
}

// Direct operations, acting as dom0 without a ring: handy to set up tests.

// Write sets the value of the node at the absolute path p as dom0.
func (s *Store) Write(p, value string) error {
	return s.direct(op{kind: wire.Write, path: p, value: []byte(value)})
}

// Mkdir creates the node at the absolute path p as dom0.
func (s *Store) Mkdir(p string) error { return s.direct(op{kind: wire.Mkdir, path: p}) }

// Rm removes the node at the absolute path p as dom0.
func (s *Store) Rm(p string) error { return s.direct(op{kind: wire.Rm, path: p}) }

// SetPerms sets the permissions of the node at the absolute path p as
// dom0; perms[0] is the owner and default access.
func (s *Store) SetPerms(p string, perms ...wire.Perm) error {
	if len(perms) == 0 {
		return fmt.Errorf("memstore: SET_PERMS %s: %w", p, wire.ErrInvalid)
	}
	return s.direct(op{kind: wire.SetPerms, path: p, perms: perms})
}

func (s *Store) direct(o op) error {
	if err := wire.CheckPath(o.path, false); err != nil {
		return fmt.Errorf("memstore: %s %s: %w", o.kind, o.path, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.applyLocked(0, o); err != nil {
		return fmt.Errorf("memstore: %s %s: %w", o.kind, o.path, err)
	}
	return nil
}

// Read returns the value of the node at the absolute path p, as dom0.
func (s *Store) Read(p string) (string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, err := (&env{t: s.t}).read(0, p)
	if err != nil {
		return "", fmt.Errorf("memstore: READ %s: %w", p, err)
	}
	return string(v), nil
}

// Directory lists the children of the node at the absolute path p.
func (s *Store) Directory(p string) ([]string, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	d, err := (&env{t: s.t}).directory(0, p)
	if err != nil {
		return nil, fmt.Errorf("memstore: DIRECTORY %s: %w", p, err)
	}
	return d, nil
}

// GetPerms returns the permissions of the node at the absolute path p.
func (s *Store) GetPerms(p string) ([]wire.Perm, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	perms, err := (&env{t: s.t}).getPerms(0, p)
	if err != nil {
		return nil, fmt.Errorf("memstore: GET_PERMS %s: %w", p, err)
	}
	return slices.Clone(perms), nil
}

// Connect creates a client for domain d (0 for a privileged dom0 client)
// connected to the store through a fresh ring page and an in-process
// notifier pair. For d != 0 the domain is added first (see AddDomain).
// The client is closed with the store; closing it earlier is fine.
func (s *Store) Connect(d domid.ID) (*xenbus.Client, error) {
	if err := s.AddDomain(d); err != nil {
		return nil, err
	}
	page := make([]byte, xsring.PageSize)
	cn, sn := xsring.NewLocalPair()
	conn, err := s.Serve(page, sn, d)
	if err != nil {
		return nil, err
	}
	c, err := xenbus.New(page, cn, d)
	if err != nil {
		conn.Close()
		return nil, err
	}
	s.mu.Lock()
	s.extra = append(s.extra, func() { c.Close(); cn.Close() })
	s.mu.Unlock()
	return c, nil
}

// Conn is the server side of one connection.
type Conn struct {
	s    *Store
	dom  domid.ID
	home string
	r    transport

	// Under s.mu:
	watches []*watch
	txs     map[uint32]*txn

	qmu   sync.Mutex
	queue []wire.Msg
	wake  chan struct{} // cap 1
	done  chan struct{}
	once  sync.Once
	wg    sync.WaitGroup
	errMu sync.Mutex
	err   error
}

type watch struct {
	path     string // absolute or special
	token    string
	relative bool // strip the home from event paths
}

type txn struct {
	start    uint64
	t        tree
	accessed map[string]dep
	ops      []op
}

// transport moves whole messages to and from one client: an
// *xsring.Ring (the server side of a page) or an *xssock.Conn (a socket).
type transport interface {
	ReadMsg(ctx context.Context) (wire.Msg, error)
	WriteMsg(ctx context.Context, m wire.Msg) error
	Close() error
}

var (
	_ transport = (*xsring.Ring)(nil)
	_ transport = (*xssock.Conn)(nil)
)

// Serve serves domain d on the server side of the xenstore page, with
// notifier n, until the Conn or the store is closed, or the client breaks
// the protocol (see Conn.Err). The caller keeps ownership of page and n.
func (s *Store) Serve(page []byte, n xsring.Notifier, d domid.ID) (*Conn, error) {
	r, err := xsring.New(page, xsring.Server, n)
	if err != nil {
		return nil, fmt.Errorf("memstore: %w", err)
	}
	return s.serve(r, d)
}

// serve serves domain d on the transport r.
func (s *Store) serve(r transport, d domid.ID) (*Conn, error) {
	c := &Conn{
		s: s, dom: d, home: wire.DomainPath(d), r: r,
		txs:  map[uint32]*txn{},
		wake: make(chan struct{}, 1),
		done: make(chan struct{}),
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		r.Close()
		return nil, fmt.Errorf("memstore: %w", ErrClosed)
	}
	s.conns[c] = true
	s.mu.Unlock()
	c.wg.Add(2)
	go c.readLoop()
	go c.writeLoop()
	return c, nil
}

// Close stops serving the connection and drops its watches and
// transactions.
func (c *Conn) Close() error {
	c.shutdown(nil)
	c.wg.Wait()
	return nil
}

// Done returns a channel that is closed when the connection ends: Close,
// the store closed, the client hung up or broke the protocol.
func (c *Conn) Done() <-chan struct{} { return c.done }

// Domain returns the domain the connection serves.
func (c *Conn) Domain() domid.ID { return c.dom }

// Err returns the protocol error that ended the connection, if any.
func (c *Conn) Err() error {
	c.errMu.Lock()
	defer c.errMu.Unlock()
	return c.err
}

func (c *Conn) shutdown(err error) {
	c.once.Do(func() {
		c.errMu.Lock()
		c.err = err
		c.errMu.Unlock()
		c.s.mu.Lock()
		delete(c.s.conns, c)
		c.watches = nil
		c.txs = nil
		c.s.mu.Unlock()
		close(c.done)
		c.r.Close()
	})
}

func (c *Conn) readLoop() {
	defer c.wg.Done()
	for {
		m, err := c.r.ReadMsg(context.Background())
		if err != nil {
			if errors.Is(err, xsring.ErrClosed) || errors.Is(err, xssock.ErrClosed) || errors.Is(err, io.EOF) {
				err = nil // closed here, or the client hung up
			}
			c.shutdown(err)
			return
		}
		c.s.mu.Lock()
		c.handle(m)
		c.s.mu.Unlock()
	}
}

func (c *Conn) writeLoop() {
	defer c.wg.Done()
	for {
		c.qmu.Lock()
		q := c.queue
		c.queue = nil
		c.qmu.Unlock()
		for _, m := range q {
			if err := c.r.WriteMsg(context.Background(), m); err != nil {
				c.shutdown(nil)
				return
			}
		}
		if len(q) > 0 {
			continue
		}
		select {
		case <-c.wake:
		case <-c.done:
			return
		}
	}
}

func (c *Conn) send(m wire.Msg) {
	c.qmu.Lock()
	c.queue = append(c.queue, m)
	c.qmu.Unlock()
	select {
	case c.wake <- struct{}{}:
	default:
	}
}

func (c *Conn) sendEvent(w *watch, epath string) {
	if w.relative && isChild(epath, c.home) && epath != c.home {
		epath = epath[len(c.home)+1:]
	}
	c.send(wire.Msg{Header: wire.Header{Type: wire.WatchEvent}, Payload: wire.Strings(epath, w.token)})
}
