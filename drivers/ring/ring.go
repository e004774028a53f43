// Package ring implements the shared request/response ring of Xen's
// io/ring.h, the transport of the split drivers (netif, blkif, and the
// others built with DEFINE_RING_TYPES), in portable Go over a []byte of
// shared memory: the guest's grant-mapped pages, or ordinary memory in
// host tests.
//
// The layout is ring.h's struct <name>_sring: four uint32 indices
// (req_prod, req_event, rsp_prod, rsp_event), padding to 64 bytes, then
// the entries, each a union of one request and one response. A ring of
// 2^order pages holds the largest power of two of entries that fits.
//
// A [Front] produces requests and consumes responses (netfront, blkfront);
// a [Back] consumes requests and produces responses (netback, blkback).
// Each keeps its private indices (ring.h's req_prod_pvt and rsp_cons, or
// rsp_prod_pvt and req_cons) and publishes them with the memory ordering
// of ring.h: entries are written before the producer index is stored, an
// index is loaded before the entries it covers are read, and the
// producer's store is ordered before its load of the event index (Go's
// sync/atomic operations are sequentially consistent, which gives
// ring.h's wmb, rmb and mb).
//
// The peer is not trusted. Its producer index is loaded once per batch,
// checked, and only then used; an index that claims more unconsumed
// entries than can exist (Linux's RING_RESPONSE_PROD_OVERFLOW and
// RING_REQUEST_PROD_OVERFLOW, and, for a Front, more responses than
// requests pushed) yields an error wrapping [ErrCorrupt], after which the
// end is dead and every call fails with the same error. Entries are copied
// out of the shared memory before the caller decodes them, so the peer
// cannot change a request or response while it is being looked at.
//
// A Front or Back is for one goroutine at a time, like a ring.h ring under
// its driver's lock; Err may be called concurrently.
package ring

import (
	"errors"
	"fmt"
	"sync/atomic"
	"unsafe"
)

// PageSize is the size of the pages a ring is made of.
const PageSize = 4096

// HeaderSize is the size of the sring header: the four indices and the
// padding before the first entry.
const HeaderSize = 64

// MaxOrder is the largest ring order accepted: rings of up to 2^MaxOrder
// pages (Linux's xenbus allows order 4; netif and blkif negotiate less).
const MaxOrder = 8

// Byte offsets of the header fields.
const (
	OffReqProd  = 0  // RING_IDX req_prod
	OffReqEvent = 4  // RING_IDX req_event
	OffRspProd  = 8  // RING_IDX rsp_prod
	OffRspEvent = 12 // RING_IDX rsp_event
)

// Errors of this package; they are wrapped with context.
var (
	// ErrCorrupt means the peer broke the ring protocol: its producer
	// index claims entries that cannot exist. The end is then dead.
	ErrCorrupt = errors.New("ring: corrupt")
	// ErrFull means there is no slot for the entry: no free request slot
	// for a Front, no consumed request left to answer for a Back.
	ErrFull = errors.New("ring: full")
)

// Layout describes a ring's entries: the sizes of the request and
// response structures (C's sizeof, so including their tail padding) and
// the alignment of their union (the largest alignment of their members).
type Layout struct {
	ReqSize, RspSize int
	// Align is the union's alignment, a power of two; 0 means 1.
	Align int
}

// EntrySize returns the size of one entry, the union of a request and a
// response: the larger of the two rounded up to the alignment, as a C
// compiler lays out ring.h's union <name>_sring_entry.
func (l Layout) EntrySize() int {
	a := max(l.Align, 1)
	return (max(l.ReqSize, l.RspSize) + a - 1) &^ (a - 1)
}

func (l Layout) check() error {
	switch {
	case l.ReqSize <= 0 || l.RspSize <= 0:
		return fmt.Errorf("ring: request size %d, response size %d", l.ReqSize, l.RspSize)
	case l.Align < 0 || l.Align&(l.Align-1) != 0 || l.Align > PageSize:
		return fmt.Errorf("ring: alignment %d is not a power of two", l.Align)
	case l.EntrySize() > PageSize-HeaderSize:
		return fmt.Errorf("ring: entries of %d bytes do not fit a page", l.EntrySize())
	}
	return nil
}

// Entries returns the number of entries of a ring of 2^order pages with
// layout l: ring.h's __CONST_RING_SIZE, the largest power of two of
// entries that fits after the header. It is 0 for a bad layout or order.
func (l Layout) Entries(order int) int {
	if l.check() != nil || order < 0 || order > MaxOrder {
		return 0
	}
	n := (PageSize<<order - HeaderSize) / l.EntrySize()
	p := 1
	for p*2 <= n {
		p *= 2
	}
	return p
}

// MemSize returns the size in bytes of a ring of 2^order pages.
func MemSize(order int) int { return PageSize << order }

// shared is the view of the shared memory both ends have.
type shared struct {
	mem     []byte
	l       Layout
	entSize uint32
	mask    uint32 // entries - 1

	dead atomic.Pointer[error]
}

func (s *shared) init(mem []byte, l Layout) error {
	if err := l.check(); err != nil {
		return err
	}
	order := -1
	for o := 0; o <= MaxOrder; o++ {
		if len(mem) == MemSize(o) {
			order = o
		}
	}
	if order < 0 {
		return fmt.Errorf("ring: %d bytes of shared memory, want %d << order for order 0..%d", len(mem), PageSize, MaxOrder)
	}
	if uintptr(unsafe.Pointer(&mem[0]))%4 != 0 {
		return fmt.Errorf("ring: shared memory is not 4-byte aligned")
	}
	s.mem, s.l = mem, l
	s.entSize = uint32(l.EntrySize())
	s.mask = uint32(l.Entries(order) - 1)
	return nil
}

func (s *shared) word(off int) *uint32 { return (*uint32)(unsafe.Pointer(&s.mem[off])) }

func (s *shared) load(off int) uint32 { return atomic.LoadUint32(s.word(off)) }

func (s *shared) store(off int, v uint32) { atomic.StoreUint32(s.word(off), v) }

// slot returns the entry of index i.
func (s *shared) slot(i uint32) []byte {
	off := HeaderSize + int(i&s.mask)*int(s.entSize)
	return s.mem[off : off+int(s.entSize) : off+int(s.entSize)]
}

// put copies b into the entry of index i, zeroing the rest of size bytes
// so that no stale data reaches the peer.
func (s *shared) put(i uint32, b []byte, size int) {
	e := s.slot(i)[:size]
	clear(e[copy(e, b):])
}

func (s *shared) size() int { return int(s.mask + 1) }

// kill marks the end dead with err and returns the error it died of.
func (s *shared) kill(err error) error {
	s.dead.CompareAndSwap(nil, &err)
	return *s.dead.Load()
}

func (s *shared) err() error {
	if p := s.dead.Load(); p != nil {
		return *p
	}
	if s.mem == nil {
		return errUninit
	}
	return nil
}

var errUninit = errors.New("ring: not initialised")

// notify is ring.h's check after publishing a producer index moved from
// old to next: the peer asked to be woken when the index reaches event.
func notify(old, next, event uint32) bool { return next-event < next-old }

// Front is the frontend end of a ring: it produces requests and consumes
// responses.
type Front struct {
	s          shared
	reqProdPvt uint32 // next request slot (req_prod_pvt)
	reqPushed  uint32 // req_prod as last published
	rspCons    uint32 // next response to consume (rsp_cons)
	rspProd    uint32 // rsp_prod as last loaded and checked
}

// NewFront initialises the ring in mem (2^order pages, order 0..MaxOrder,
// 4-byte aligned) for layout l and returns its front end: ring.h's
// SHARED_RING_INIT then FRONT_RING_INIT. The header is reset (indices 0,
// event indices 1, padding zeroed); the entries are left as they are.
func NewFront(mem []byte, l Layout) (*Front, error) {
	f := new(Front)
	if err := f.s.init(mem, l); err != nil {
		return nil, err
	}
	clear(mem[:HeaderSize])
	f.s.store(OffReqEvent, 1)
	f.s.store(OffRspEvent, 1)
	return f, nil
}

// AttachFront returns a front end for a ring in mem that is already in
// use, resuming at index idx with no request outstanding: ring.h's
// FRONT_RING_ATTACH. The shared memory is not written.
func AttachFront(mem []byte, l Layout, idx uint32) (*Front, error) {
	f := new(Front)
	if err := f.s.init(mem, l); err != nil {
		return nil, err
	}
	f.reqProdPvt, f.reqPushed, f.rspCons, f.rspProd = idx, idx, idx, idx
	return f, nil
}

// Size returns the number of entries (RING_SIZE).
func (f *Front) Size() int { return f.s.size() }

// Layout returns the ring's layout.
func (f *Front) Layout() Layout { return f.s.l }

// Err returns the error that killed the ring, or nil while it is usable.
func (f *Front) Err() error { return f.s.err() }

// FreeRequests returns how many requests can be put now
// (RING_FREE_REQUESTS): slots not holding a request still unanswered.
func (f *Front) FreeRequests() int { return f.s.size() - int(f.reqProdPvt-f.rspCons) }

// Full reports whether no request can be put (RING_FULL).
func (f *Front) Full() bool { return f.FreeRequests() == 0 }

// ReqProdPvt returns the index the next request will take.
func (f *Front) ReqProdPvt() uint32 { return f.reqProdPvt }

// RspCons returns the index of the next response to consume.
func (f *Front) RspCons() uint32 { return f.rspCons }

// PutRequest copies req (at most Layout.ReqSize bytes; the rest of the
// request is zeroed) into the next free slot. The peer sees it after the
// next PushRequests. It fails with ErrFull when no slot is free.
func (f *Front) PutRequest(req []byte) error {
	if err := f.s.err(); err != nil {
		return err
	}
	if len(req) > f.s.l.ReqSize {
		return fmt.Errorf("ring: request of %d bytes, max %d", len(req), f.s.l.ReqSize)
	}
	if f.Full() {
		return fmt.Errorf("%w: %d requests outstanding", ErrFull, f.reqProdPvt-f.rspCons)
	}
	f.s.put(f.reqProdPvt, req, f.s.l.ReqSize)
	f.reqProdPvt++
	return nil
}

// PushRequests publishes the requests put so far (RING_PUSH_REQUESTS).
func (f *Front) PushRequests() {
	f.s.store(OffReqProd, f.reqProdPvt)
	f.reqPushed = f.reqProdPvt
}

// PushRequestsAndCheckNotify publishes the requests put so far and
// reports whether the backend must be notified: whether req_prod passed
// the req_event it set (RING_PUSH_REQUESTS_AND_CHECK_NOTIFY).
func (f *Front) PushRequestsAndCheckNotify() bool {
	old, next := f.reqPushed, f.reqProdPvt
	f.PushRequests()
	return notify(old, next, f.s.load(OffReqEvent))
}

// UnconsumedResponses loads and checks rsp_prod and returns how many
// responses wait (RING_HAS_UNCONSUMED_RESPONSES).
func (f *Front) UnconsumedResponses() (int, error) {
	if err := f.s.err(); err != nil {
		return 0, err
	}
	prod := f.s.load(OffRspProd)
	// Responses can only answer pushed requests that were not answered
	// yet; this implies Linux's bound, at most the ring's size.
	n, out := prod-f.rspCons, f.reqPushed-f.rspCons
	if n > out {
		return 0, f.s.kill(fmt.Errorf("%w: rsp_prod %d with rsp_cons %d: %d responses for %d requests outstanding (ring of %d)",
			ErrCorrupt, prod, f.rspCons, n, out, f.s.size()))
	}
	f.rspProd = prod
	return int(n), nil
}

// TakeResponse copies the next response (Layout.RspSize bytes) into dst
// and consumes it; it reports false, with dst untouched, when no response
// waits. dst must hold RspSize bytes. rsp_prod is loaded and checked only
// when the responses seen by the last load are used up.
func (f *Front) TakeResponse(dst []byte) (bool, error) {
	if err := f.s.err(); err != nil {
		return false, err
	}
	if len(dst) < f.s.l.RspSize {
		return false, fmt.Errorf("ring: response buffer of %d bytes, need %d", len(dst), f.s.l.RspSize)
	}
	if f.rspCons == f.rspProd {
		if n, err := f.UnconsumedResponses(); n == 0 || err != nil {
			return false, err
		}
	}
	copy(dst, f.s.slot(f.rspCons)[:f.s.l.RspSize])
	f.rspCons++
	return true, nil
}

// FinalCheckForResponses reports whether responses wait; if none do, it
// first asks the backend to notify on the next one by setting rsp_event,
// then checks again, so that a response pushed meanwhile is not missed
// (RING_FINAL_CHECK_FOR_RESPONSES). After false, wait for a notification.
func (f *Front) FinalCheckForResponses() (bool, error) {
	if n, err := f.UnconsumedResponses(); n > 0 || err != nil {
		return n > 0, err
	}
	f.s.store(OffRspEvent, f.rspCons+1)
	n, err := f.UnconsumedResponses()
	return n > 0, err
}

// Back is the backend end of a ring: it consumes requests and produces
// responses.
type Back struct {
	s          shared
	rspProdPvt uint32 // next response slot (rsp_prod_pvt)
	rspPushed  uint32 // rsp_prod as last published
	reqCons    uint32 // next request to consume (req_cons)
	reqProd    uint32 // req_prod as last loaded and checked
}

// NewBack returns the back end of the ring in mem (2^order pages, order
// 0..MaxOrder, 4-byte aligned), which the frontend initialised, for layout
// l: ring.h's BACK_RING_INIT. The shared memory is not written.
func NewBack(mem []byte, l Layout) (*Back, error) {
	return AttachBack(mem, l, 0)
}

// AttachBack returns a back end for a ring in mem that is already in use,
// resuming at index idx with no request consumed and unanswered: ring.h's
// BACK_RING_ATTACH. The shared memory is not written.
func AttachBack(mem []byte, l Layout, idx uint32) (*Back, error) {
	b := new(Back)
	if err := b.s.init(mem, l); err != nil {
		return nil, err
	}
	b.rspProdPvt, b.rspPushed, b.reqCons, b.reqProd = idx, idx, idx, idx
	return b, nil
}

// Size returns the number of entries (RING_SIZE).
func (b *Back) Size() int { return b.s.size() }

// Layout returns the ring's layout.
func (b *Back) Layout() Layout { return b.s.l }

// Err returns the error that killed the ring, or nil while it is usable.
func (b *Back) Err() error { return b.s.err() }

// ReqCons returns the index of the next request to consume.
func (b *Back) ReqCons() uint32 { return b.reqCons }

// RspProdPvt returns the index the next response will take.
func (b *Back) RspProdPvt() uint32 { return b.rspProdPvt }

// UnconsumedRequests loads and checks req_prod and returns how many
// requests wait (RING_HAS_UNCONSUMED_REQUESTS).
func (b *Back) UnconsumedRequests() (int, error) {
	if err := b.s.err(); err != nil {
		return 0, err
	}
	prod := b.s.load(OffReqProd)
	// RING_REQUEST_PROD_OVERFLOW: the requests not answered yet cannot
	// exceed the ring; and req_prod cannot be behind what we consumed.
	unanswered, taken := prod-b.rspProdPvt, b.reqCons-b.rspProdPvt
	if unanswered > uint32(b.s.size()) || unanswered < taken {
		return 0, b.s.kill(fmt.Errorf("%w: req_prod %d with req_cons %d, rsp_prod_pvt %d (ring of %d)",
			ErrCorrupt, prod, b.reqCons, b.rspProdPvt, b.s.size()))
	}
	b.reqProd = prod
	return int(prod - b.reqCons), nil
}

// TakeRequest copies the next request (Layout.ReqSize bytes) into dst and
// consumes it; it reports false, with dst untouched, when no request
// waits. dst must hold ReqSize bytes. req_prod is loaded and checked only
// when the requests seen by the last load are used up.
func (b *Back) TakeRequest(dst []byte) (bool, error) {
	if err := b.s.err(); err != nil {
		return false, err
	}
	if len(dst) < b.s.l.ReqSize {
		return false, fmt.Errorf("ring: request buffer of %d bytes, need %d", len(dst), b.s.l.ReqSize)
	}
	if b.reqCons == b.reqProd {
		if n, err := b.UnconsumedRequests(); n == 0 || err != nil {
			return false, err
		}
	}
	copy(dst, b.s.slot(b.reqCons)[:b.s.l.ReqSize])
	b.reqCons++
	return true, nil
}

// PutResponse copies rsp (at most Layout.RspSize bytes; the rest of the
// response is zeroed) into the next response slot, which belongs to the
// oldest consumed request not answered yet. The peer sees it after the
// next PushResponses. It fails with ErrFull when every consumed request
// was answered.
func (b *Back) PutResponse(rsp []byte) error {
	if err := b.s.err(); err != nil {
		return err
	}
	if len(rsp) > b.s.l.RspSize {
		return fmt.Errorf("ring: response of %d bytes, max %d", len(rsp), b.s.l.RspSize)
	}
	if b.rspProdPvt == b.reqCons {
		return fmt.Errorf("%w: no consumed request left to answer", ErrFull)
	}
	b.s.put(b.rspProdPvt, rsp, b.s.l.RspSize)
	b.rspProdPvt++
	return nil
}

// PushResponses publishes the responses put so far (RING_PUSH_RESPONSES).
func (b *Back) PushResponses() {
	b.s.store(OffRspProd, b.rspProdPvt)
	b.rspPushed = b.rspProdPvt
}

// PushResponsesAndCheckNotify publishes the responses put so far and
// reports whether the frontend must be notified: whether rsp_prod passed
// the rsp_event it set (RING_PUSH_RESPONSES_AND_CHECK_NOTIFY).
func (b *Back) PushResponsesAndCheckNotify() bool {
	old, next := b.rspPushed, b.rspProdPvt
	b.PushResponses()
	return notify(old, next, b.s.load(OffRspEvent))
}

// FinalCheckForRequests reports whether requests wait; if none do, it
// first asks the frontend to notify on the next one by setting req_event,
// then checks again, so that a request pushed meanwhile is not missed
// (RING_FINAL_CHECK_FOR_REQUESTS). After false, wait for a notification.
func (b *Back) FinalCheckForRequests() (bool, error) {
	if n, err := b.UnconsumedRequests(); n > 0 || err != nil {
		return n > 0, err
	}
	b.s.store(OffReqEvent, b.reqCons+1)
	n, err := b.UnconsumedRequests()
	return n > 0, err
}

// FinalCheckForRequestsN reports whether at least n requests wait (n >=
// 1); if fewer do, it first asks the frontend to notify on its next
// request by setting req_event past the requests already produced, then
// checks again, so that a request pushed meanwhile is not missed (as
// Linux's netback waits for room for a whole packet). After false, wait
// for a notification.
func (b *Back) FinalCheckForRequestsN(n int) (bool, error) {
	if have, err := b.UnconsumedRequests(); have >= n || err != nil {
		return have >= n && err == nil, err
	}
	b.s.store(OffReqEvent, b.reqProd+1)
	have, err := b.UnconsumedRequests()
	return have >= n && err == nil, err
}
