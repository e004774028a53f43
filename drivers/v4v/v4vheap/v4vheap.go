// Package v4vheap implements [v4v.Hypervisor] between goroutines of one
// process: a [Broker] plays Xen's Argo, for host tests and for running
// v4v code without Xen.
//
// The broker follows xen/common/argo.c: it writes the 16-byte message
// header and the data into the destination ring exactly as Xen does
// (padding to 16-byte slots, wrapping data but never a header, always
// leaving one slot free), reads the receiver's rx_ptr atomically and
// sanitizes it, matches a send to the ring whose partner is the sender
// before the ring whose partner is ANY, queues a space notification for a
// sender that finds the ring full, and delivers it when the receiver calls
// Notify. Errors carry the errno Xen would return, through
// [v4v.ErrnoError].
//
// Domains are created with [Broker.Domain]; a ring's partner, and a send's
// destination, must be a domain that exists (ESRCH otherwise), as in Xen.
package v4vheap

import (
	"context"
	"fmt"
	"sync"

	"github.com/gozen-dev/gozen/domid"
	"github.com/gozen-dev/gozen/drivers/v4v"
	"github.com/gozen-dev/gozen/hypercall"
)

// Options configure a Broker.
type Options struct {
	// DenyAny refuses rings whose partner is ANY with EPERM, as Xen does
	// when booted with argo=1 but without mac-permissive=1. The zero value
	// permits them (the rig boots with mac-permissive=1).
	DenyAny bool
}

// Broker is the in-heap "hypervisor": every domain's rings and pending
// space notifications. The zero value is not usable; call New.
type Broker struct {
	opts Options
	mu   sync.Mutex
	doms map[domid.ID]*Domain
}

// New returns a broker with no domains.
func New(opts Options) *Broker {
	return &Broker{opts: opts, doms: make(map[domid.ID]*Domain)}
}

// ringID identifies a ring: owner, port and partner (struct argo_ring_id).
type ringID struct {
	dom     domid.ID
	port    v4v.Port
	partner domid.ID
}

// pending is a sender waiting for space on a ring.
type pending struct {
	dom domid.ID
	len uint32
}

// ringInfo is the broker's record of a registered ring.
type ringInfo struct {
	id      ringID
	ring    *v4v.Ring
	size    uint32
	tx      uint32 // private copy of tx_ptr, as Xen keeps
	pending []pending
}

// Domain is one domain's view of the broker; it implements
// [v4v.Hypervisor].
type Domain struct {
	b     *Broker
	id    domid.ID
	rings map[ringID]*ringInfo // under b.mu

	sigMu sync.Mutex
	gen   uint64
	sig   chan struct{} // closed and replaced at every signal
}

var _ v4v.Hypervisor = (*Domain)(nil)

// Domain returns domain id's view, creating the domain on first use.
// DomIDAny is not a domain id and panics.
func (b *Broker) Domain(id domid.ID) *Domain {
	if id == domid.Any {
		panic("v4vheap: DomIDAny is not a domain id")
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	d := b.doms[id]
	if d == nil {
		d = &Domain{b: b, id: id, rings: make(map[ringID]*ringInfo), sig: make(chan struct{})}
		b.doms[id] = d
	}
	return d
}

// Destroy removes the domain and its rings, as when Xen destroys a domain:
// later sends to it fail with ErrNoDomain, and senders waiting for space
// in its rings are signalled.
func (d *Domain) Destroy() {
	b := d.b
	b.mu.Lock()
	var wake []domid.ID
	for _, ri := range d.rings {
		for _, p := range ri.pending {
			wake = append(wake, p.dom)
		}
	}
	d.rings = make(map[ringID]*ringInfo)
	delete(b.doms, d.id)
	b.mu.Unlock()
	b.signalAll(wake)
}

// Domain returns the domain's id.
func (d *Domain) Domain() domid.ID { return d.id }

// Signals returns how often VIRQ_ARGO has been signalled to the domain.
func (d *Domain) Signals() uint64 {
	d.sigMu.Lock()
	defer d.sigMu.Unlock()
	return d.gen
}

func (d *Domain) signal() {
	d.sigMu.Lock()
	d.gen++
	close(d.sig)
	d.sig = make(chan struct{})
	d.sigMu.Unlock()
}

func (b *Broker) signalAll(doms []domid.ID) {
	for _, id := range doms {
		b.mu.Lock()
		d := b.doms[id]
		b.mu.Unlock()
		if d != nil {
			d.signal()
		}
	}
}

// Wait blocks until the domain's signal count passes seen.
func (d *Domain) Wait(ctx context.Context, seen uint64) (uint64, error) {
	for {
		d.sigMu.Lock()
		g, ch := d.gen, d.sig
		d.sigMu.Unlock()
		if g > seen {
			return g, nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return 0, ctx.Err()
		}
	}
}

// NewRing allocates an empty ring from the Go heap.
func (d *Domain) NewRing(size int) (*v4v.Ring, error) {
	if err := v4v.CheckRingSize(size); err != nil {
		return nil, err
	}
	// Page-sized allocation, as a guest would give; []uint64 for alignment.
	words := make([]uint64, v4v.RingPages(size)*v4v.PageSize/8)
	mem := unsafeBytes(words)
	return v4v.NewRing(mem, size)
}

func errno(op string, e hypercall.Errno) error { return v4v.ErrnoError(op, e) }

// RegisterRing registers r as Xen's register_ring does.
func (d *Domain) RegisterRing(r *v4v.Ring, port v4v.Port, partner domid.ID, flags v4v.RegisterFlags) error {
	op := fmt.Sprintf("register_ring %d:%d partner %s", d.id, port, domName(partner))
	if r == nil || flags&^v4v.RegisterFailExist != 0 {
		return errno(op, hypercall.EINVAL)
	}
	size := uint32(r.Size())
	b := d.b
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.doms[d.id] != d {
		return errno(op, hypercall.ENODEV)
	}
	if partner == domid.Any {
		if b.opts.DenyAny {
			return errno(op, hypercall.EPERM)
		}
	} else if b.doms[partner] == nil {
		return errno(op, hypercall.ESRCH)
	}
	id := ringID{dom: d.id, port: port, partner: partner}
	ri := d.rings[id]
	if ri == nil {
		if len(d.rings) >= v4v.MaxRingsPerDomain {
			return errno(op, hypercall.ENOSPC)
		}
		ri = &ringInfo{id: id}
	} else {
		if flags&v4v.RegisterFailExist != 0 || ri.size != size {
			return errno(op, hypercall.EEXIST)
		}
	}
	// Keep the tx_ptr found in the (new) memory if it is valid; otherwise
	// restart at the next slot past rx_ptr, flushing the ring.
	tx := r.Tx()
	if tx >= size || tx%v4v.SlotSize != 0 {
		tx = v4v.RoundUp(r.Rx())
		if tx >= size {
			tx = 0
		}
		r.SetTx(tx)
	}
	ri.ring, ri.size, ri.tx = r, size, tx
	d.rings[id] = ri
	return nil
}

// UnregisterRing removes a ring as Xen's unregister_ring does.
func (d *Domain) UnregisterRing(port v4v.Port, partner domid.ID) error {
	op := fmt.Sprintf("unregister_ring %d:%d partner %s", d.id, port, domName(partner))
	b := d.b
	b.mu.Lock()
	id := ringID{dom: d.id, port: port, partner: partner}
	ri := d.rings[id]
	if ri == nil {
		b.mu.Unlock()
		return errno(op, hypercall.ENOENT)
	}
	delete(d.rings, id)
	b.mu.Unlock()
	return nil
}

// findRing returns the ring of dst at port for sender, the ring with
// sender as partner first, else the ANY ring (find_ring_info_by_match).
func (dst *Domain) findRing(port v4v.Port, sender domid.ID) *ringInfo {
	if ri := dst.rings[ringID{dom: dst.id, port: port, partner: sender}]; ri != nil {
		return ri
	}
	return dst.rings[ringID{dom: dst.id, port: port, partner: domid.Any}]
}

// Sendv copies iov into dst's ring as Xen's sendv does.
func (d *Domain) Sendv(src, dst v4v.Addr, iov [][]byte, msgType uint32) (int, error) {
	op := func() string { return fmt.Sprintf("sendv %s->%s", v4v.Addr{Domain: d.id, Port: src.Port}, dst) }
	if len(iov) > v4v.MaxIOV {
		return 0, errno(op(), hypercall.EINVAL)
	}
	if src.Domain != domid.Any && src.Domain != d.id {
		return 0, errno(op(), hypercall.EPERM)
	}
	var total uint64
	for _, v := range iov {
		if len(v) > v4v.MaxMessage {
			return 0, errno(op(), hypercall.EINVAL)
		}
		total += uint64(len(v))
		if total > v4v.MaxMessage {
			return 0, errno(op(), hypercall.EMSGSIZE)
		}
	}
	b := d.b
	b.mu.Lock()
	dd := b.doms[dst.Domain]
	if dd == nil {
		b.mu.Unlock()
		return 0, errno(op(), hypercall.ESRCH)
	}
	ri := dd.findRing(dst.Port, d.id)
	if ri == nil {
		b.mu.Unlock()
		return 0, errno(op(), hypercall.ECONNREFUSED)
	}
	n := uint32(total)
	err := ri.insert(v4v.Addr{Domain: d.id, Port: src.Port}, iov, msgType, n)
	if err == hypercall.EAGAIN {
		if rerr := ri.requeue(d.id, n); rerr != 0 {
			err = rerr
		}
	}
	b.mu.Unlock()
	if err != 0 {
		return 0, errno(op(), err)
	}
	dd.signal()
	return int(n), nil
}

// sanitizedRx reads the owner's rx_ptr and makes it usable: aligned up,
// wrapped to 0 past the end (get_sanitized_ring).
func (ri *ringInfo) sanitizedRx() uint32 {
	rx := v4v.RoundUp(ri.ring.Rx())
	if rx >= ri.size {
		rx = 0
	}
	return rx
}

// payloadSpace is the largest payload that fits now
// (ringbuf_payload_space).
func (ri *ringInfo) payloadSpace() uint32 {
	sp := int64(ri.sanitizedRx()) - int64(ri.tx)
	if sp <= 0 {
		sp += int64(ri.size)
	}
	sp -= v4v.MessageHeaderSize + v4v.SlotSize
	if sp < 0 {
		return 0
	}
	return uint32(sp)
}

// insert writes one message as ringbuf_insert does.
func (ri *ringInfo) insert(src v4v.Addr, iov [][]byte, msgType, n uint32) hypercall.Errno {
	if uint64(ri.size) <= v4v.MessageHeaderSize+uint64(v4v.RoundUp(n)) {
		return hypercall.EMSGSIZE
	}
	rx, tx := ri.sanitizedRx(), ri.tx
	sp := ri.size
	if rx != tx {
		sp = rx - tx
		if rx < tx {
			sp = ri.size - tx + rx
		}
	}
	if uint64(v4v.RoundUp(n))+v4v.MessageHeaderSize >= uint64(sp) {
		return hypercall.EAGAIN
	}
	data := ri.ring.Data()
	h := data[tx : tx+v4v.MessageHeaderSize]
	putLE32(h[0:], n+v4v.MessageHeaderSize)
	putLE32(h[4:], uint32(src.Port))
	putLE16(h[8:], uint16(src.Domain))
	putLE16(h[10:], 0)
	putLE32(h[12:], msgType)
	tx += v4v.MessageHeaderSize
	if tx == ri.size {
		tx = 0
	}
	for _, v := range iov {
		c := copy(data[tx:], v)
		tx += uint32(c)
		if tx == ri.size {
			tx = 0
		}
		if c < len(v) {
			c2 := copy(data, v[c:])
			tx = uint32(c2)
		}
	}
	tx = v4v.RoundUp(tx)
	if tx >= ri.size {
		tx -= ri.size
	}
	ri.tx = tx
	ri.ring.SetTx(tx)
	return 0
}

// requeue records that sender waits for n bytes of space
// (pending_requeue).
func (ri *ringInfo) requeue(sender domid.ID, n uint32) hypercall.Errno {
	for i := range ri.pending {
		if ri.pending[i].dom == sender {
			ri.pending[i].len = max(ri.pending[i].len, n)
			return 0
		}
	}
	if len(ri.pending) >= v4v.MaxPendingPerRing {
		return hypercall.EBUSY
	}
	ri.pending = append(ri.pending, pending{dom: sender, len: n})
	return 0
}

// cancel forgets sender's pending notification (pending_cancel).
func (ri *ringInfo) cancel(sender domid.ID) {
	for i := range ri.pending {
		if ri.pending[i].dom == sender {
			ri.pending = append(ri.pending[:i], ri.pending[i+1:]...)
			return
		}
	}
}

// Notify signals senders waiting for space that the domain's rings now
// have, then answers q, as Xen's notify does.
func (d *Domain) Notify(q []v4v.RingQuery) error {
	op := "notify from " + domName(d.id)
	if len(q) > v4v.MaxNotify {
		return errno(op, hypercall.EACCES)
	}
	b := d.b
	b.mu.Lock()
	if b.doms[d.id] != d {
		b.mu.Unlock()
		return errno(op, hypercall.ENODEV)
	}
	var wake []domid.ID
	for _, ri := range d.rings {
		space := ri.payloadSpace()
		if space == 0 {
			continue
		}
		kept := ri.pending[:0]
		for _, p := range ri.pending {
			if p.len <= space {
				wake = append(wake, p.dom)
			} else {
				kept = append(kept, p)
			}
		}
		ri.pending = kept
	}
	for i := range q {
		e := &q[i]
		e.Flags = 0
		dd := b.doms[e.Addr.Domain]
		if dd == nil {
			continue
		}
		ri := dd.findRing(e.Addr.Port, d.id)
		if ri == nil {
			continue
		}
		e.Flags |= v4v.RingExists
		e.MaxMessageSize = ri.size - v4v.MessageHeaderSize - v4v.SlotSize
		if ri.id.partner == domid.Any {
			e.Flags |= v4v.RingShared
		}
		space := ri.payloadSpace()
		switch {
		case e.SpaceRequired > e.MaxMessageSize:
			e.Flags |= v4v.RingMsgSize
		case space >= e.SpaceRequired:
			ri.cancel(d.id)
			e.Flags |= v4v.RingSufficient
		default:
			if ri.requeue(d.id, e.SpaceRequired) == hypercall.EBUSY {
				e.Flags |= v4v.RingBusy
			}
		}
		if space == e.MaxMessageSize {
			e.Flags |= v4v.RingEmpty
		}
	}
	b.mu.Unlock()
	b.signalAll(wake)
	return nil
}

func domName(id domid.ID) string {
	if id == domid.Any {
		return "any"
	}
	return fmt.Sprint(uint16(id))
}

func putLE32(b []byte, v uint32) {
	_ = b[3]
	b[0], b[1], b[2], b[3] = byte(v), byte(v>>8), byte(v>>16), byte(v>>24)
}
func putLE16(b []byte, v uint16) { _ = b[1]; b[0], b[1] = byte(v), byte(v>>8) }
