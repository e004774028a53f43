//go:build linux

package evlinux

import (
	"os"
	"sync"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/gozen-dev/gozen/domid"
)

// fakeXen stands in for Xen and the kernel's evtchn driver: domains with
// port tables, and one fakeDev per domain with the driver's queue and
// masking (a port is masked when queued, and an event arriving while it
// is masked stays pending until the port is written back).
type fakeXen struct {
	mu   sync.Mutex
	doms map[domid.ID]*fakeDev
}

type fakeEnd struct {
	bound  bool // interdomain; else unbound, offered to remote
	remote domid.ID
	rport  uint32
}

type fakeDev struct {
	x       *fakeXen
	id      domid.ID
	ports   map[uint32]*fakeEnd
	queue   []uint32
	masked  map[uint32]bool
	pending map[uint32]bool
	cond    *sync.Cond
	closed  bool
	efbig   bool  // the next read fails with EFBIG
	readErr error // reads fail with this
	resets  int
}

func newFakeXen() *fakeXen { return &fakeXen{doms: map[domid.ID]*fakeDev{}} }

func (x *fakeXen) dev(id domid.ID) *fakeDev {
	x.mu.Lock()
	defer x.mu.Unlock()
	d := &fakeDev{x: x, id: id, ports: map[uint32]*fakeEnd{}, masked: map[uint32]bool{},
		pending: map[uint32]bool{}, cond: sync.NewCond(&x.mu)}
	x.doms[id] = d
	return d
}

// raise queues port, or leaves it pending while masked; x.mu is held.
func (d *fakeDev) raise(p uint32) {
	if d.masked[p] {
		d.pending[p] = true
		return
	}
	d.masked[p] = true
	d.queue = append(d.queue, p)
	d.cond.Broadcast()
}

func (d *fakeDev) Read(b []byte) (int, error) {
	d.x.mu.Lock()
	defer d.x.mu.Unlock()
	for len(d.queue) == 0 && !d.closed && !d.efbig && d.readErr == nil {
		d.cond.Wait()
	}
	switch {
	case d.closed:
		return 0, os.ErrClosed
	case d.readErr != nil:
		return 0, d.readErr
	case d.efbig:
		d.efbig = false
		d.queue = nil
		return 0, unix.EFBIG
	}
	n := 0
	for n+4 <= len(b) && len(d.queue) > 0 {
		*(*uint32)(unsafe.Pointer(&b[n])) = d.queue[0]
		d.queue = d.queue[1:]
		n += 4
	}
	return n, nil
}

func (d *fakeDev) Write(b []byte) (int, error) {
	d.x.mu.Lock()
	defer d.x.mu.Unlock()
	n := 0
	for ; n+4 <= len(b); n += 4 {
		p := *(*uint32)(unsafe.Pointer(&b[n]))
		if d.ports[p] == nil {
			continue
		}
		d.masked[p] = false
		if d.pending[p] {
			d.pending[p] = false
			d.raise(p)
		}
	}
	return n, nil
}

func (d *fakeDev) Close() error {
	d.x.mu.Lock()
	defer d.x.mu.Unlock()
	d.closed = true
	for p := range d.ports {
		d.unbind(p)
	}
	d.cond.Broadcast()
	return nil
}

// alloc returns the lowest free port; x.mu is held.
func (d *fakeDev) alloc(e *fakeEnd) uint32 {
	p := uint32(1)
	for d.ports[p] != nil {
		p++
	}
	d.ports[p] = e
	return p
}

// unbind closes port p, reverting a bound remote end to unbound; x.mu
// is held.
func (d *fakeDev) unbind(p uint32) {
	e := d.ports[p]
	if e.bound {
		if r := d.x.doms[e.remote]; r != nil {
			if re := r.ports[e.rport]; re != nil && re.bound && re.remote == d.id && re.rport == p {
				re.bound, re.rport = false, 0
			}
		}
	}
	delete(d.ports, p)
	delete(d.masked, p)
	delete(d.pending, p)
}

func (d *fakeDev) resolve(r uint32) domid.ID {
	if domid.ID(r) == domid.Self {
		return d.id
	}
	return domid.ID(r)
}

func (d *fakeDev) ioctl(req uintptr, arg unsafe.Pointer) (uintptr, error) {
	d.x.mu.Lock()
	defer d.x.mu.Unlock()
	if d.closed {
		return 0, unix.EBADF
	}
	switch req {
	case ioctlBindUnboundPort:
		a := (*bindUnboundArg)(arg)
		return uintptr(d.alloc(&fakeEnd{remote: d.resolve(a.RemoteDomain)})), nil
	case ioctlBindInterdomain:
		a := (*bindInterdomainArg)(arg)
		rid := d.resolve(a.RemoteDomain)
		r := d.x.doms[rid]
		if r == nil || r.closed {
			return 0, unix.ESRCH
		}
		re := r.ports[a.RemotePort]
		if re == nil || re.bound || re.remote != d.id {
			return 0, unix.EINVAL
		}
		p := d.alloc(&fakeEnd{bound: true, remote: rid, rport: a.RemotePort})
		re.bound, re.rport = true, p
		// as Xen does (and Linux passes on): the new port is notified
		// "in case notifications were lost on the remote unbound port"
		d.raise(p)
		return uintptr(p), nil
	case ioctlNotify:
		a := (*portArg)(arg)
		e := d.ports[a.Port]
		if e == nil {
			return 0, unix.ENOTCONN
		}
		if e.bound {
			if r := d.x.doms[e.remote]; r != nil && r.ports[e.rport] != nil {
				r.raise(e.rport)
			}
		}
		return 0, nil
	case ioctlUnbind:
		a := (*portArg)(arg)
		if d.ports[a.Port] == nil {
			return 0, unix.ENOTCONN
		}
		d.unbind(a.Port)
		return 0, nil
	case ioctlReset:
		d.resets++
		d.queue = nil
		return 0, nil
	}
	return 0, unix.ENOTTY
}

// nports counts the ports the fake kernel holds for d.
func (d *fakeDev) nports() int {
	d.x.mu.Lock()
	defer d.x.mu.Unlock()
	return len(d.ports)
}
