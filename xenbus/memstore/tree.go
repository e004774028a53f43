package memstore

import (
	"slices"
	"strings"

	"github.com/gozen-dev/gozen/domid"
	"github.com/gozen-dev/gozen/xenbus/wire"
)

// node is one store node. value and perms are replaced, never mutated, so
// clones may share them; children is copied on clone.
type node struct {
	value    []byte
	perms    []wire.Perm
	children map[string]bool
	gen      uint64 // store generation of the last change of value, perms or existence
	cgen     uint64 // store generation of the last change of the children list
}

// tree maps absolute paths to nodes.
type tree map[string]*node

func (t tree) clone() tree {
	c := make(tree, len(t))
	for p, n := range t {
		m := *n
		m.children = make(map[string]bool, len(n.children))
		for k := range n.children {
			m.children[k] = true
		}
		c[p] = &m
	}
	return c
}

func parentOf(p string) string {
	i := strings.LastIndexByte(p, '/')
	if i <= 0 {
		return "/"
	}
	return p[:i]
}

func baseOf(p string) string { return p[strings.LastIndexByte(p, '/')+1:] }

// isChild reports whether p is wp or below it.
func isChild(p, wp string) bool {
	return p == wp || wp == "/" || strings.HasPrefix(p, wp+"/")
}

// access returns what dom may do with a node of the given permissions.
func access(perms []wire.Perm, dom domid.ID) wire.Access {
	if dom == 0 || len(perms) == 0 || perms[0].Dom == dom {
		return wire.AccessBoth
	}
	for _, p := range perms[1:] {
		if p.Dom == dom {
			return p.Access
		}
	}
	return perms[0].Access
}

// op is a mutation, kept in transactions for replay at commit.
type op struct {
	kind  wire.Type // Write, Mkdir, Rm or SetPerms
	path  string
	value []byte
	perms []wire.Perm
}

// event is a change to report to watches.
type event struct {
	path    string
	perms   []wire.Perm // of the changed node, for the read check
	removal bool
	special bool // @introduceDomain and friends: no read check
}

// env runs operations on a tree: the store's, or a transaction's copy.
type env struct {
	t     tree
	stamp uint64                       // generation given to changed nodes
	touch func(p string, what dep)     // records what an operation depends on
	tomb  func(p string, stamp uint64) // records removed paths
}

// dep says what part of a node an operation depends on.
type dep uint8

const (
	depNode     dep = 1 << iota // existence, value and permissions
	depChildren                 // the list of children
)

func (e *env) record(p string, what dep) {
	if e.touch != nil {
		e.touch(p, what)
	}
}

func (e *env) changed(n *node) { n.gen = e.stamp }

// lookup returns the node at p, recording the dependency.
func (e *env) lookup(p string) *node {
	e.record(p, depNode)
	return e.t[p]
}

// readable returns the node at p if dom may read it. For a missing node it
// answers as xenstored does: ENOENT if dom may read the nearest existing
// ancestor, else EACCES (so a domain learns nothing of what exists where
// it may not look).
func (e *env) readable(dom domid.ID, p string) (*node, error) {
	n := e.lookup(p)
	if n == nil {
		anc := parentOf(p)
		for e.t[anc] == nil {
			anc = parentOf(anc)
		}
		if !access(e.t[anc].perms, dom).CanRead() {
			return nil, wire.ErrAccess
		}
		return nil, wire.ErrNotExist
	}
	if !access(n.perms, dom).CanRead() {
		return nil, wire.ErrAccess
	}
	return n, nil
}

func (e *env) read(dom domid.ID, p string) ([]byte, error) {
	n, err := e.readable(dom, p)
	if err != nil {
		return nil, err
	}
	return n.value, nil
}

func (e *env) directory(dom domid.ID, p string) ([]string, error) {
	n, err := e.readable(dom, p)
	if err != nil {
		return nil, err
	}
	e.record(p, depChildren)
	names := make([]string, 0, len(n.children))
	for k := range n.children {
		names = append(names, k)
	}
	slices.Sort(names)
	return names, nil
}

func (e *env) getPerms(dom domid.ID, p string) ([]wire.Perm, error) {
	n, err := e.readable(dom, p)
	if err != nil {
		return nil, err
	}
	return n.perms, nil
}

// create makes p and its missing parents, checking that dom may write the
// nearest existing ancestor. New nodes inherit the parent's permissions,
// owned by dom unless dom is 0.
func (e *env) create(dom domid.ID, p string) (*node, bool, error) {
	if n := e.lookup(p); n != nil {
		if !access(n.perms, dom).CanWrite() {
			return nil, false, wire.ErrAccess
		}
		return n, false, nil
	}
	var missing []string
	anc := p
	for e.lookup(anc) == nil {
		missing = append(missing, anc)
		anc = parentOf(anc)
	}
	pn := e.t[anc]
	if !access(pn.perms, dom).CanWrite() {
		return nil, false, wire.ErrAccess
	}
	for i := len(missing) - 1; i >= 0; i-- {
		q := missing[i]
		perms := slices.Clone(pn.perms)
		if dom != 0 {
			perms[0].Dom = dom
		}
		n := &node{perms: perms, children: map[string]bool{}}
		e.changed(n)
		e.t[q] = n
		pn.children[baseOf(q)] = true
		pn.cgen = e.stamp
		pn = n
	}
	return pn, true, nil
}

// apply performs a mutation and returns the watch events it causes.
func (e *env) apply(dom domid.ID, o op) ([]event, error) {
	switch o.kind {
	case wire.Write:
		n, _, err := e.create(dom, o.path)
		if err != nil {
			return nil, err
		}
		n.value = o.value
		e.changed(n)
		return []event{{path: o.path, perms: n.perms}}, nil
	case wire.Mkdir:
		n, created, err := e.create(dom, o.path)
		if err != nil || !created {
			return nil, err
		}
		return []event{{path: o.path, perms: n.perms}}, nil
	case wire.SetPerms:
		n := e.lookup(o.path)
		if n == nil {
			return nil, wire.ErrNotExist
		}
		if dom != 0 && (n.perms[0].Dom != dom || o.perms[0].Dom != dom) {
			// Only the owner may change permissions, and not the owner.
			return nil, wire.ErrAccess
		}
		n.perms = o.perms
		e.changed(n)
		return []event{{path: o.path, perms: n.perms}}, nil
	case wire.Rm:
		if o.path == "/" {
			return nil, wire.ErrInvalid
		}
		n := e.lookup(o.path)
		if n == nil {
			if e.lookup(parentOf(o.path)) == nil {
				return nil, wire.ErrNotExist
			}
			return nil, nil
		}
		if !access(n.perms, dom).CanWrite() {
			return nil, wire.ErrAccess
		}
		e.remove(o.path, n)
		pn := e.t[parentOf(o.path)]
		delete(pn.children, baseOf(o.path))
		pn.cgen = e.stamp
		return []event{{path: o.path, perms: n.perms, removal: true}}, nil
	}
	return nil, wire.ErrInvalid
}

func (e *env) remove(p string, n *node) {
	for c := range n.children {
		cp := p + "/" + c
		if p == "/" {
			cp = "/" + c
		}
		if cn := e.lookup(cp); cn != nil {
			e.remove(cp, cn)
		}
	}
	e.record(p, depChildren)
	delete(e.t, p)
	if e.tomb != nil {
		e.tomb(p, e.stamp)
	}
}
