package vchan

import (
	"encoding/binary"
	"fmt"
	"sync/atomic"
	"unsafe"

	"github.com/gozen-dev/gozen/gnttab"
)

// Layout of struct vchan_interface (Xen's public io/libxenvchan.h), in
// native byte order, at the start of the shared control page.
const (
	offLeftCons   = 0  // left.cons: server read ring, consumed by the server
	offLeftProd   = 4  // left.prod: server read ring, produced by the client
	offRightCons  = 8  // right.cons: client read ring, consumed by the client
	offRightProd  = 12 // right.prod: client read ring, produced by the server
	offOrders     = 16 // left_order uint16, right_order uint16
	offFlags      = 20 // cli_live, srv_live, cli_notify, srv_notify: one byte each
	offGrants     = 24 // grants[]: left ring's grants, then the right ring's
	headerSize    = offGrants
	flagCliLive   = 0 // byte index within the word at offFlags
	flagSrvLive   = 1
	flagCliNotify = 2
	flagSrvNotify = 3
)

// Notification request bits of the cli_notify and srv_notify bytes.
const (
	// notifyWrite asks the peer to notify when it has written data.
	notifyWrite = 0x1
	// notifyRead asks the peer to notify when it has consumed data.
	notifyRead = 0x2
)

// Live states of the cli_live and srv_live bytes.
const (
	liveClosed  = 0
	liveOpen    = 1
	liveWaiting = 2
)

// Ring orders: a ring holds 1<<order bytes.
const (
	// MinOrder is the smallest ring order: a 1 KiB ring inside the
	// control page at offset 1024.
	MinOrder = 10
	// MaxOrder is the largest ring order libxenvchan allows (1 MiB), so
	// that the grant list of both rings fits in the control page.
	MaxOrder   = 20
	smallOrder = 10   // in-page ring at offset 1024
	largeOrder = 11   // in-page ring at offset 2048
	smallOff   = 1024 // offset of an order-10 ring in the control page
	largeOff   = 2048 // offset of an order-11 ring in the control page
	pageShift  = 12
)

// MaxRingSize is the largest ring, in bytes (1 MiB).
const MaxRingSize = 1 << MaxOrder

var littleEndian = func() bool {
	var x uint16 = 1
	return *(*byte)(unsafe.Pointer(&x)) == 1
}()

// flagShift is the bit position of flag byte k in the native-endian word
// at offFlags.
func flagShift(k int) uint32 {
	if littleEndian {
		return uint32(8 * k)
	}
	return uint32(8 * (3 - k))
}

// ringPages is the number of granted pages a ring of the given order needs
// outside the control page (0 for the in-page orders 10 and 11).
func ringPages(order int) int {
	if order < pageShift {
		return 0
	}
	return 1 << (order - pageShift)
}

// inPageOffset is the offset of an in-page ring of the given order.
func inPageOffset(order int) (int, bool) {
	switch order {
	case smallOrder:
		return smallOff, true
	case largeOrder:
		return largeOff, true
	}
	return 0, false
}

// validOrders checks a (left, right) pair of orders as libxenvchan's client
// does, and that the grant list they imply stays clear of the in-page rings.
func validOrders(left, right int) error {
	for _, o := range [2]int{left, right} {
		if o < MinOrder || o > MaxOrder {
			return fmt.Errorf("%w: ring order %d outside %d..%d", ErrProtocol, o, MinOrder, MaxOrder)
		}
	}
	if left == right && left < pageShift {
		return fmt.Errorf("%w: both rings have in-page order %d", ErrProtocol, left)
	}
	end := offGrants + 4*(ringPages(left)+ringPages(right))
	limit := gnttab.PageSize
	for _, o := range [2]int{left, right} {
		if off, ok := inPageOffset(o); ok && off < limit {
			limit = off
		}
	}
	if end > limit {
		return fmt.Errorf("%w: %d grants (orders %d, %d) overlap an in-page ring", ErrProtocol, (end-offGrants)/4, left, right)
	}
	return nil
}

// orderFor returns the smallest ring order of at least one page holding
// size bytes, as libxenvchan's min_order.
func orderFor(size int) int {
	o := pageShift
	for size > 1<<o {
		o++
	}
	return o
}

// chooseOrders picks the server's (read, write) ring orders for the given
// minimum sizes exactly as libxenvchan_server_init does: in-page rings
// when they fit, otherwise whole granted pages.
func chooseOrders(readMin, writeMin int) (rd, wr int, err error) {
	if readMin < 0 || writeMin < 0 || readMin > MaxRingSize || writeMin > MaxRingSize {
		return 0, 0, fmt.Errorf("vchan: ring sizes %d, %d outside 0..%d", readMin, writeMin, MaxRingSize)
	}
	rd, wr = orderFor(readMin), orderFor(writeMin)
	switch {
	case readMin <= 1<<smallOrder && writeMin <= 1<<largeOrder:
		rd, wr = smallOrder, largeOrder
	case readMin <= 1<<largeOrder && writeMin <= 1<<smallOrder:
		rd, wr = largeOrder, smallOrder
	case readMin <= 1<<largeOrder:
		rd = largeOrder
	case writeMin <= 1<<largeOrder:
		wr = largeOrder
	}
	return rd, wr, nil
}

// shared is a view of the control page. Every field the peer may write is
// accessed atomically; nothing read from it is trusted.
type shared struct {
	b []byte
}

// newShared checks that b can hold a control page with atomic access.
func newShared(b []byte) (shared, error) {
	if len(b) < gnttab.PageSize {
		return shared{}, fmt.Errorf("vchan: control page is %d bytes, want %d", len(b), gnttab.PageSize)
	}
	if uintptr(unsafe.Pointer(&b[0]))%8 != 0 {
		return shared{}, fmt.Errorf("vchan: control page is not 8-byte aligned")
	}
	return shared{b: b[:gnttab.PageSize]}, nil
}

func (s shared) word(off int) *uint32 {
	return (*uint32)(unsafe.Pointer(&s.b[off]))
}

func (s shared) load(off int) uint32     { return atomic.LoadUint32(s.word(off)) }
func (s shared) store(off int, v uint32) { atomic.StoreUint32(s.word(off), v) }

// orders returns (left_order, right_order), read once.
func (s shared) orders() (left, right int) {
	var b [4]byte
	binary.NativeEndian.PutUint32(b[:], s.load(offOrders))
	return int(binary.NativeEndian.Uint16(b[0:])), int(binary.NativeEndian.Uint16(b[2:]))
}

func (s shared) setOrders(left, right int) {
	var b [4]byte
	binary.NativeEndian.PutUint16(b[0:], uint16(left))
	binary.NativeEndian.PutUint16(b[2:], uint16(right))
	s.store(offOrders, binary.NativeEndian.Uint32(b[:]))
}

// flag reads flag byte k.
func (s shared) flag(k int) uint8 {
	return uint8(s.load(offFlags) >> flagShift(k))
}

// setFlag stores v in flag byte k without disturbing the other three.
func (s shared) setFlag(k int, v uint8) {
	p, sh := s.word(offFlags), flagShift(k)
	for {
		old := atomic.LoadUint32(p)
		nw := old&^(0xff<<sh) | uint32(v)<<sh
		if atomic.CompareAndSwapUint32(p, old, nw) {
			return
		}
	}
}

// orFlag sets bits in flag byte k (__sync_or_and_fetch).
func (s shared) orFlag(k int, bits uint8) {
	atomic.OrUint32(s.word(offFlags), uint32(bits)<<flagShift(k))
}

// clearFlag clears bits in flag byte k and reports whether any of them
// were set (__sync_fetch_and_and).
func (s shared) clearFlag(k int, bits uint8) bool {
	sh := flagShift(k)
	old := atomic.AndUint32(s.word(offFlags), ^(uint32(bits) << sh))
	return uint8(old>>sh)&bits != 0
}

// grant reads entry i of the grant list.
func (s shared) grant(i int) gnttab.Ref {
	return gnttab.Ref(s.load(offGrants + 4*i))
}

func (s shared) setGrant(i int, r gnttab.Ref) {
	s.store(offGrants+4*i, uint32(r))
}

// layout is what a client learns from the control page, read once and
// validated.
type layout struct {
	leftOrder, rightOrder   int
	leftGrants, rightGrants []gnttab.Ref
}

// readLayout decodes and validates the ring orders and grant list of a
// control page written by a (possibly hostile) server.
func readLayout(s shared) (layout, error) {
	var l layout
	l.leftOrder, l.rightOrder = s.orders()
	if err := validOrders(l.leftOrder, l.rightOrder); err != nil {
		return layout{}, err
	}
	nl, nr := ringPages(l.leftOrder), ringPages(l.rightOrder)
	for i := range nl {
		l.leftGrants = append(l.leftGrants, s.grant(i))
	}
	for i := range nr {
		l.rightGrants = append(l.rightGrants, s.grant(nl+i))
	}
	return l, nil
}

// liveState checks a live byte read from the page.
func liveState(who string, v uint8) (uint8, error) {
	if v > liveWaiting {
		return 0, fmt.Errorf("%w: %s live state %d", ErrProtocol, who, v)
	}
	return v, nil
}
