package memstore

import (
	"bytes"
	"errors"
	"strconv"

	"github.com/gozen-dev/gozen/domid"
	"github.com/gozen-dev/gozen/xenbus/wire"
)

// reply queues a successful reply to m.
func (c *Conn) reply(m wire.Msg, payload []byte) {
	c.send(wire.Msg{Header: wire.Header{Type: m.Type, ReqID: m.ReqID, TxID: m.TxID}, Payload: payload})
}

// fail queues an ERROR reply to m.
func (c *Conn) fail(m wire.Msg, err error) {
	var xe *wire.XSError
	if !errors.As(err, &xe) {
		xe = wire.ErrInvalid
	}
	c.send(wire.Msg{Header: wire.Header{Type: wire.Error, ReqID: m.ReqID, TxID: m.TxID}, Payload: wire.Strings(xe.Name)})
}

var ok = wire.Strings("OK")

// path resolves a request path, relative to the connection's home unless
// absolute.
func (c *Conn) path(p string) (string, error) {
	if err := wire.CheckPath(p, true); err != nil {
		return "", wire.ErrInvalid
	}
	if p[0] != '/' {
		p = c.home + "/" + p
		if len(p) > wire.AbsPathMax {
			return "", wire.ErrInvalid
		}
	}
	return p, nil
}

// args splits a payload into nul-terminated strings; want is the minimum
// count.
func args(p []byte, want int) ([]string, error) {
	s, err := wire.SplitStrings(p)
	if err != nil || len(s) < want {
		return nil, wire.ErrInvalid
	}
	return s, nil
}

// handle serves one request. Called with s.mu held.
func (c *Conn) handle(m wire.Msg) {
	if err := c.serve(m); err != nil {
		c.fail(m, err)
	}
}

func (c *Conn) serve(m wire.Msg) error {
	s := c.s
	// Transactional context.
	var tx *txn
	e := (*env)(nil)
	switch m.Type {
	case wire.Read, wire.Write, wire.Mkdir, wire.Rm, wire.Directory, wire.GetPerms, wire.SetPerms:
		if m.TxID != 0 {
			tx = c.txs[m.TxID]
			if tx == nil {
				return wire.ErrNotExist
			}
			e = &env{t: tx.t, touch: func(p string, d dep) { tx.accessed[p] |= d }}
		} else {
			e = &env{t: s.t}
		}
	}

	switch m.Type {
	case wire.Read, wire.Directory, wire.GetPerms:
		a, err := args(m.Payload, 1)
		if err != nil {
			return err
		}
		p, err := c.path(a[0])
		if err != nil {
			return err
		}
		switch m.Type {
		case wire.Read:
			v, err := e.read(c.dom, p)
			if err != nil {
				return err
			}
			c.reply(m, bytes.Clone(v))
		case wire.Directory:
			d, err := e.directory(c.dom, p)
			if err != nil {
				return err
			}
			c.reply(m, wire.Strings(d...))
		default:
			perms, err := e.getPerms(c.dom, p)
			if err != nil {
				return err
			}
			c.reply(m, wire.Strings(wire.PermStrings(perms)...))
		}
		return nil

	case wire.Write, wire.Mkdir, wire.Rm, wire.SetPerms:
		o := op{kind: m.Type}
		var raw string
		switch m.Type {
		case wire.Write:
			i := bytes.IndexByte(m.Payload, 0)
			if i < 0 {
				return wire.ErrInvalid
			}
			raw, o.value = string(m.Payload[:i]), bytes.Clone(m.Payload[i+1:])
		case wire.SetPerms:
			a, err := args(m.Payload, 2)
			if err != nil {
				return err
			}
			raw = a[0]
			for _, ps := range a[1:] {
				pm, err := wire.ParsePerm(ps)
				if err != nil {
					return wire.ErrInvalid
				}
				o.perms = append(o.perms, pm)
			}
		default:
			a, err := args(m.Payload, 1)
			if err != nil {
				return err
			}
			raw = a[0]
		}
		p, err := c.path(raw)
		if err != nil {
			return err
		}
		o.path = p
		if tx != nil {
			if _, err := e.apply(c.dom, o); err != nil {
				return err
			}
			tx.ops = append(tx.ops, o)
		} else if err := s.applyLocked(c.dom, o); err != nil {
			return err
		}
		c.reply(m, ok)
		return nil

	case wire.Watch, wire.Unwatch:
		a, err := args(m.Payload, 2)
		if err != nil {
			return err
		}
		w := &watch{path: a[0], token: a[1]}
		if !wire.IsSpecialWatch(w.path) {
			w.relative = w.path != "" && w.path[0] != '/'
			if w.path, err = c.path(w.path); err != nil {
				return err
			}
		} else if len(w.path) > wire.AbsPathMax {
			return wire.ErrInvalid
		}
		idx := -1
		for i, x := range c.watches {
			if x.path == w.path && x.token == w.token {
				idx = i
			}
		}
		if m.Type == wire.Unwatch {
			if idx < 0 {
				return wire.ErrNotExist
			}
			c.watches = append(c.watches[:idx], c.watches[idx+1:]...)
			c.reply(m, ok)
			return nil
		}
		if idx >= 0 {
			return wire.ErrExist
		}
		c.watches = append(c.watches, w)
		c.reply(m, ok)
		c.sendEvent(w, w.path) // the initial event
		return nil

	case wire.ResetWatches:
		c.watches = nil
		c.txs = map[uint32]*txn{}
		c.reply(m, ok)
		return nil

	case wire.TransactionStart:
		if m.TxID != 0 {
			return wire.ErrInvalid
		}
		if len(c.txs) >= maxTxPerConn {
			return wire.ErrBusy
		}
		for {
			s.nextTx++
			if s.nextTx != 0 && c.txs[s.nextTx] == nil {
				break
			}
		}
		c.txs[s.nextTx] = &txn{start: s.gen, t: s.t.clone(), accessed: map[string]dep{}}
		c.reply(m, wire.Strings(strconv.FormatUint(uint64(s.nextTx), 10)))
		return nil

	case wire.TransactionEnd:
		tx := c.txs[m.TxID]
		if tx == nil || m.TxID == 0 {
			return wire.ErrNotExist
		}
		a, err := args(m.Payload, 1)
		if err != nil || (a[0] != "T" && a[0] != "F") {
			return wire.ErrInvalid
		}
		delete(c.txs, m.TxID)
		if a[0] == "T" {
			if err := c.commit(tx); err != nil {
				return err
			}
		}
		c.reply(m, ok)
		return nil

	case wire.GetDomainPath:
		a, err := args(m.Payload, 1)
		if err != nil {
			return err
		}
		d, err := strconv.ParseUint(a[0], 10, 16)
		if err != nil {
			return wire.ErrInvalid
		}
		c.reply(m, wire.Strings(wire.DomainPath(domid.ID(d))))
		return nil

	case wire.IsDomainIntroduced:
		a, err := args(m.Payload, 1)
		if err != nil {
			return err
		}
		d, err := strconv.ParseUint(a[0], 10, 16)
		if err != nil {
			return wire.ErrInvalid
		}
		if c.dom != 0 {
			return wire.ErrAccess
		}
		ans := "F"
		if s.domains[domid.ID(d)] {
			ans = "T"
		}
		c.reply(m, wire.Strings(ans))
		return nil

	case wire.Introduce, wire.Release, wire.Resume, wire.SetTarget:
		if c.dom != 0 {
			return wire.ErrAccess
		}
		return wire.ErrNoSys
	}
	return wire.ErrNoSys
}

// commit checks a transaction for conflicts and replays its operations on
// the store. Called with s.mu held.
func (c *Conn) commit(tx *txn) error {
	s := c.s
	for p, d := range tx.accessed {
		if n := s.t[p]; n != nil {
			if (d&depNode != 0 && n.gen > tx.start) || (d&depChildren != 0 && n.cgen > tx.start) {
				return wire.ErrAgain
			}
		} else if s.tombs[p] > tx.start {
			return wire.ErrAgain
		}
	}
	for _, o := range tx.ops {
		// Cannot fail: everything the operations depend on is unchanged.
		if err := s.applyLocked(c.dom, o); err != nil {
			return wire.ErrAgain
		}
	}
	return nil
}
