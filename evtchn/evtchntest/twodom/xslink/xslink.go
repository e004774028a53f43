// Package xslink is a twodom.Link between two Xen domains through
// xenstore: the side channel over which the two halves of a twodom case
// (the evtchntest and gnttabtest suites, run in two Gozen guests) exchange
// port numbers, grant references and "go ahead" signals.
//
// Each end writes only under its own home, in nodes the other domain may
// read, and reads the other end's nodes, woken by a watch:
//
//	/local/domain/<self>/data/twodom/<name>        the link's directory (permissions n<self> r<peer>)
//	/local/domain/<self>/data/twodom/<name>/<n>    the n-th value sent, in decimal, n from 0
//	/local/domain/<self>/data/twodom/<name>/done   written by Close: how many values were sent
//
// Both ends open a link with the same name (one per case: names are not
// reused while the two domains live). [Open] returns once the other end
// has opened too, and [Link.Close] once the other end has closed too (or
// gave up: its directory is gone), so the two halves of a case start and
// end together; Close then removes this end's nodes, so a long run leaves
// nothing behind in the store.
//
// The domains' data directories must exist and be writable by their
// domains, as the toolstack (xl) makes them.
package xslink

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strconv"
	"strings"
	"time"

	"github.com/gozen-dev/gozen/domid"
	"github.com/gozen-dev/gozen/xenbus"
	"github.com/gozen-dev/gozen/xenbus/wire"
)

// ErrFinished means the other end closed its link and every value it sent
// was received.
var ErrFinished = errors.New("xslink: the other half finished")

// DefaultTimeout bounds each wait of a link (Open for the other end, Recv
// for a value, Close for the other end's close) when Options.Timeout is 0.
const DefaultTimeout = 60 * time.Second

// Options are a link's optional settings.
type Options struct {
	// Timeout bounds each wait; 0 means DefaultTimeout.
	Timeout time.Duration
	// Tags tell apart two ends in one domain (two processes of a Linux
	// dom0, say), whose link directories would otherwise be the same.
	// When Tags[0] is set, this end's directory is Dir(self, name)/Tags[0]
	// and the other end's Dir(peer, name)/Tags[1]; the other end opens
	// the link with the tags swapped.
	Tags [2]string
}

// Link is one end of a link. Send and Recv may be called from different
// goroutines, but each from one goroutine at a time.
type Link struct {
	c       *xenbus.Client
	mine    string // this end's directory
	theirs  string // the other end's directory
	w       *xenbus.Watch
	timeout time.Duration
	sent    uint64
	next    uint64 // index of the next value to receive
	closed  bool
}

// Dir returns the directory of the link named name under the home of
// domain d.
func Dir(d domid.ID, name string) string {
	return wire.DomainPath(d) + "/data/twodom/" + name
}

// absent reports whether a read of one of the other end's nodes failed
// because the node is not there: xenstored answers ENOENT, or EACCES when
// the nearest existing ancestor is one this domain may not read (the other
// end's link directory was never made, or is gone).
func absent(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, fs.ErrPermission)
}

// Open opens this end (domain self) of the link named name to domain peer,
// over the xenstore client c, and waits for the other end to open it. name
// is one or more path elements (letters, digits, '-', '_', '/').
func Open(c *xenbus.Client, self, peer domid.ID, name string, o Options) (*Link, error) {
	if name == "" || strings.HasPrefix(name, "/") || strings.HasSuffix(name, "/") || strings.Contains(name, "//") {
		return nil, fmt.Errorf("xslink: bad link name %q", name)
	}
	l := &Link{c: c, mine: Dir(self, name), theirs: Dir(peer, name), timeout: o.Timeout}
	if o.Tags[0] != "" || o.Tags[1] != "" {
		if o.Tags[0] == "" || o.Tags[1] == "" || o.Tags[0] == o.Tags[1] || strings.Contains(o.Tags[0]+o.Tags[1], "/") {
			return nil, fmt.Errorf("xslink: bad tags %q", o.Tags)
		}
		l.mine += "/" + o.Tags[0]
		l.theirs += "/" + o.Tags[1]
	}
	if l.timeout <= 0 {
		l.timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(context.Background(), l.timeout)
	defer cancel()
	// Start clean: nothing of an earlier link of this name may be read.
	if err := c.Rm(ctx, l.mine); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("xslink: clearing %s: %w", l.mine, err)
	}
	if err := c.Mkdir(ctx, l.mine); err != nil {
		return nil, fmt.Errorf("xslink: creating %s: %w", l.mine, err)
	}
	perms := []wire.Perm{{Dom: self, Access: wire.AccessNone}, {Dom: peer, Access: wire.AccessRead}}
	if peer == self {
		perms = perms[:1] // the owner reads its own nodes
	}
	if err := c.SetPerms(ctx, l.mine, perms); err != nil {
		c.Rm(ctx, l.mine)
		return nil, fmt.Errorf("xslink: letting domain %d read %s: %w", peer, l.mine, err)
	}
	w, err := c.Watch(ctx, l.theirs)
	if err != nil {
		c.Rm(ctx, l.mine)
		return nil, fmt.Errorf("xslink: watching %s: %w", l.theirs, err)
	}
	l.w = w
	err = l.waitFor("the other end to open "+l.theirs, func(ctx context.Context) (bool, error) {
		_, err := c.Read(ctx, l.theirs)
		if absent(err) {
			return false, nil // not made yet, or not yet readable by us
		}
		return err == nil, err
	})
	if err != nil {
		l.release()
		return nil, err
	}
	return l, nil
}

// waitFor calls check until it reports true or fails, each time the watch
// fires, for at most the link's timeout.
func (l *Link) waitFor(what string, check func(ctx context.Context) (bool, error)) error {
	ctx, cancel := context.WithTimeout(context.Background(), l.timeout)
	defer cancel()
	for {
		ok, err := check(ctx)
		if err != nil {
			return fmt.Errorf("xslink: waiting for %s: %w", what, err)
		}
		if ok {
			return nil
		}
		select {
		case _, open := <-l.w.Events():
			if !open {
				return fmt.Errorf("xslink: waiting for %s: the watch on %s ended: %v", what, l.theirs, l.c.Err())
			}
		case <-ctx.Done():
			return fmt.Errorf("xslink: waiting for %s: nothing after %v", what, l.timeout)
		}
	}
}

// Send sends v to the other end.
func (l *Link) Send(v uint64) error {
	if l.closed {
		return errors.New("xslink: send on a closed link")
	}
	ctx, cancel := context.WithTimeout(context.Background(), l.timeout)
	defer cancel()
	p := l.mine + "/" + strconv.FormatUint(l.sent, 10)
	if err := l.c.WriteString(ctx, p, strconv.FormatUint(v, 10)); err != nil {
		return fmt.Errorf("xslink: send: %w", err)
	}
	l.sent++
	return nil
}

// Recv receives the next value the other end sent. Once the other end
// closed and every value was received, it fails with ErrFinished.
func (l *Link) Recv() (uint64, error) {
	if l.closed {
		return 0, errors.New("xslink: receive on a closed link")
	}
	var v uint64
	p := l.theirs + "/" + strconv.FormatUint(l.next, 10)
	read := func(ctx context.Context) (bool, error) {
		s, err := l.c.ReadString(ctx, p)
		if err != nil {
			if absent(err) {
				err = nil
			}
			return false, err
		}
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			return false, fmt.Errorf("value %q: %w", s, err)
		}
		v = n
		return true, nil
	}
	err := l.waitFor("value "+p, func(ctx context.Context) (bool, error) {
		if ok, err := read(ctx); ok || err != nil {
			return ok, err
		}
		sent, gone, err := l.peerDone(ctx)
		switch {
		case err != nil:
			return false, err
		case gone:
			return false, ErrFinished
		case sent < 0:
			return false, nil // not sent yet
		case uint64(sent) > l.next:
			// written after our read, before the done node: read again
			if ok, err := read(ctx); ok || err != nil {
				return ok, err
			}
			return false, fmt.Errorf("the other end sent %d values but %s is missing", sent, p)
		}
		return false, ErrFinished
	})
	if err != nil {
		return 0, err
	}
	l.next++
	return v, nil
}

// peerDone reads the other end's done node: how many values it sent (-1
// if it has not closed), or gone if its directory was removed.
func (l *Link) peerDone(ctx context.Context) (sent int64, gone bool, err error) {
	s, err := l.c.ReadString(ctx, l.theirs+"/done")
	if err == nil {
		n, perr := strconv.ParseUint(s, 10, 63)
		if perr != nil {
			return 0, false, fmt.Errorf("done count %q: %w", s, perr)
		}
		return int64(n), false, nil
	}
	if !absent(err) {
		return 0, false, err
	}
	// Open saw the directory readable: absent now means removed.
	if _, err := l.c.Read(ctx, l.theirs); absent(err) {
		return 0, true, nil
	} else if err != nil {
		return 0, false, err
	}
	return -1, false, nil
}

// Close tells the other end that this half finished, waits until the
// other end closed too (or its directory is gone), and removes this end's
// nodes. It is a no-op on a closed link.
func (l *Link) Close() error {
	if l.closed {
		return nil
	}
	l.closed = true
	ctx, cancel := context.WithTimeout(context.Background(), l.timeout)
	err := l.c.WriteString(ctx, l.mine+"/done", strconv.FormatUint(l.sent, 10))
	cancel()
	if err != nil {
		err = fmt.Errorf("xslink: close: %w", err)
	} else {
		err = l.waitFor("the other end to close "+l.theirs, func(ctx context.Context) (bool, error) {
			sent, gone, err := l.peerDone(ctx)
			return gone || sent >= 0, err
		})
	}
	if rerr := l.release(); err == nil {
		err = rerr
	}
	return err
}

// release removes the watch and this end's directory.
func (l *Link) release() error {
	ctx, cancel := context.WithTimeout(context.Background(), l.timeout)
	defer cancel()
	l.w.Unwatch(ctx)
	if err := l.c.Rm(ctx, l.mine); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("xslink: removing %s: %w", l.mine, err)
	}
	return nil
}
