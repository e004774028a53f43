package v4v

import (
	"encoding/binary"
	"fmt"
	"sync/atomic"
	"unsafe"

	"github.com/gozen-dev/gozen/domid"
)

// Ring layout and limits (xen/include/public/argo.h, xen/common/argo.c).
const (
	// RingHeaderSize is sizeof(xen_argo_ring_t): rx_ptr, tx_ptr and 56
	// reserved bytes before the data area.
	RingHeaderSize = 64
	// MessageHeaderSize is sizeof(struct xen_argo_ring_message_header):
	// len, source {aport, domain_id, pad}, message_type.
	MessageHeaderSize = 16
	// SlotSize is XEN_ARGO_MSG_SLOT_SIZE: every message (header and data)
	// starts on, and is padded to, a multiple of it.
	SlotSize = 16
	// MinRingSize is the smallest data area Argo accepts: a message
	// header, one payload slot and one slot that always stays free.
	MinRingSize = MessageHeaderSize + 2*SlotSize
	// MaxRingSize is XEN_ARGO_MAX_RING_SIZE, the largest data area.
	MaxRingSize = 0x1000000
	// MaxMessage is the largest payload Argo accepts in one send on the
	// largest ring (MAX_ARGO_MESSAGE_SIZE).
	MaxMessage = MaxRingSize - MessageHeaderSize - SlotSize
	// MaxIOV is XEN_ARGO_MAXIOV, the most buffers one send may gather.
	MaxIOV = 8
	// PageSize is the size of the pages a ring is registered as.
	PageSize = 4096
	// MaxRingsPerDomain is how many rings one domain may register.
	MaxRingsPerDomain = 128
	// MaxPendingPerRing is how many senders may wait for space on one ring.
	MaxPendingPerRing = 32
	// MaxNotify is how many rings one notify may ask about.
	MaxNotify = 256
)

// RoundUp rounds n up to a multiple of SlotSize (XEN_ARGO_ROUNDUP).
func RoundUp(n uint32) uint32 { return (n + SlotSize - 1) &^ (SlotSize - 1) }

// RingPages is how many pages hold a ring whose data area is size bytes,
// header included (NPAGES_RING).
func RingPages(size int) int {
	return (int(RoundUp(uint32(size))) + RingHeaderSize + PageSize - 1) / PageSize
}

// MaxPayload is the largest payload one message may carry on a ring whose
// data area is size bytes: one slot always stays free, so a message never
// fills the ring.
func MaxPayload(size int) int {
	if size < MinRingSize {
		return 0
	}
	return size - MessageHeaderSize - SlotSize
}

// CheckRingSize reports whether size is a data-area size Argo accepts: a
// multiple of SlotSize between MinRingSize and MaxRingSize.
func CheckRingSize(size int) error {
	if size < MinRingSize || size > MaxRingSize || size%SlotSize != 0 {
		return fmt.Errorf("v4v: ring size %d: want a multiple of %d in [%d, %d]: %w",
			size, SlotSize, MinRingSize, MaxRingSize, ErrInvalid)
	}
	return nil
}

// Message describes a message on a ring: what its header says.
type Message struct {
	// Source is the sender: the domain as the hypervisor saw it and the
	// port the sender named.
	Source Addr
	// Type is the sender's message type (the V4V protocol number).
	Type uint32
	// Len is the payload length in bytes, header excluded.
	Len int
}

// Ring is the memory of one Argo ring: the header (rx_ptr, tx_ptr,
// reserved) followed by the data area, exactly as xen_argo_ring_t. The
// hypervisor writes messages and tx_ptr; the owner reads messages and
// writes rx_ptr. Both pointers are accessed atomically.
//
// The reader methods are not safe for concurrent use with each other: one
// goroutine (or one lock holder) consumes a ring.
type Ring struct {
	mem  []byte // RingHeaderSize + size bytes
	size uint32
}

// NewRing returns a ring over mem whose data area is size bytes. mem must
// hold at least RingHeaderSize+size bytes and start 8-byte aligned (memory
// from make or a page allocator does). The ring's pointers are not reset:
// mem may be a ring registered before.
func NewRing(mem []byte, size int) (*Ring, error) {
	if err := CheckRingSize(size); err != nil {
		return nil, err
	}
	if len(mem) < RingHeaderSize+size {
		return nil, fmt.Errorf("v4v: ring of %d bytes needs %d bytes of memory, have %d: %w",
			size, RingHeaderSize+size, len(mem), ErrInvalid)
	}
	if uintptr(unsafe.Pointer(&mem[0]))%8 != 0 {
		return nil, fmt.Errorf("v4v: ring memory is not 8-byte aligned: %w", ErrInvalid)
	}
	return &Ring{mem: mem[: RingHeaderSize+size : RingHeaderSize+size], size: uint32(size)}, nil
}

// Size returns the size of the data area in bytes (the len registered with
// the hypervisor).
func (r *Ring) Size() int { return int(r.size) }

// Memory returns the ring's memory: header and data area.
func (r *Ring) Memory() []byte { return r.mem }

// Data returns the data area.
func (r *Ring) Data() []byte { return r.mem[RingHeaderSize:] }

func (r *Ring) rxp() *uint32 { return (*uint32)(unsafe.Pointer(&r.mem[0])) }
func (r *Ring) txp() *uint32 { return (*uint32)(unsafe.Pointer(&r.mem[4])) }

// Rx atomically loads rx_ptr, the offset of the next message to read.
func (r *Ring) Rx() uint32 { return atomic.LoadUint32(r.rxp()) }

// Tx atomically loads tx_ptr, the offset where the hypervisor writes next.
func (r *Ring) Tx() uint32 { return atomic.LoadUint32(r.txp()) }

// SetRx atomically stores rx_ptr. Only the ring's owner does this.
func (r *Ring) SetRx(v uint32) { atomic.StoreUint32(r.rxp(), v) }

// SetTx atomically stores tx_ptr. Only the hypervisor does this.
func (r *Ring) SetTx(v uint32) { atomic.StoreUint32(r.txp(), v) }

// Reset sets both pointers to zero: an empty ring. Use it on memory that is
// not registered.
func (r *Ring) Reset() { r.SetRx(0); r.SetTx(0) }

// Flush discards every message: rx_ptr catches up with tx_ptr (or both
// restart at 0 if tx_ptr is impossible). It is the way out of ErrCorrupt.
func (r *Ring) Flush() {
	tx := r.Tx()
	if tx >= r.size || tx%SlotSize != 0 {
		tx = 0
	}
	r.SetRx(tx)
}

// Used returns how many bytes of the data area hold messages not yet
// consumed, or an error wrapping ErrCorrupt if the pointers are impossible.
func (r *Ring) Used() (int, error) {
	rx, tx, err := r.pointers()
	if err != nil {
		return 0, err
	}
	return int(r.used(rx, tx)), nil
}

func (r *Ring) pointers() (rx, tx uint32, err error) {
	rx, tx = r.Rx(), r.Tx()
	if rx >= r.size || rx%SlotSize != 0 {
		return 0, 0, fmt.Errorf("v4v: rx_ptr %d in a ring of %d: %w", rx, r.size, ErrCorrupt)
	}
	if tx >= r.size || tx%SlotSize != 0 {
		return 0, 0, fmt.Errorf("v4v: tx_ptr %d in a ring of %d: %w", tx, r.size, ErrCorrupt)
	}
	return rx, tx, nil
}

func (r *Ring) used(rx, tx uint32) uint32 {
	if tx >= rx {
		return tx - rx
	}
	return r.size - rx + tx
}

// next validates the message at rx and returns its description and its
// size in the ring (header and padding included).
func (r *Ring) next() (m Message, rx, span uint32, err error) {
	rx, tx, err := r.pointers()
	if err != nil {
		return Message{}, 0, 0, err
	}
	if rx == tx {
		return Message{}, 0, 0, ErrEmpty
	}
	used := r.used(rx, tx)
	// rx and size are multiples of SlotSize (== MessageHeaderSize), so the
	// header never wraps.
	h := r.mem[RingHeaderSize+rx : RingHeaderSize+rx+MessageHeaderSize]
	n := binary.LittleEndian.Uint32(h[0:])
	if n < MessageHeaderSize {
		return Message{}, 0, 0, fmt.Errorf("v4v: message at %d: length %d below the header size: %w", rx, n, ErrCorrupt)
	}
	if (uint64(n)+SlotSize-1)&^(SlotSize-1) > uint64(used) {
		return Message{}, 0, 0, fmt.Errorf("v4v: message at %d: length %d past the %d filled bytes of the ring: %w",
			rx, n, used, ErrCorrupt)
	}
	m = Message{
		Source: Addr{Port: Port(binary.LittleEndian.Uint32(h[4:])), Domain: domid.ID(binary.LittleEndian.Uint16(h[8:]))},
		Type:   binary.LittleEndian.Uint32(h[12:]),
		Len:    int(n - MessageHeaderSize),
	}
	return m, rx, RoundUp(n), nil
}

// Peek describes the next message without consuming it. It returns
// ErrEmpty if there is none and an error wrapping ErrCorrupt if the ring's
// contents are impossible.
func (r *Ring) Peek() (Message, error) {
	m, _, _, err := r.next()
	return m, err
}

// CopyOut copies the payload of the next message into p (at most len(p)
// bytes; p may be nil) and, if consume is set, removes the message from the
// ring by advancing rx_ptr. It returns the number of bytes copied and the
// message's description, whose Len is the full payload length, as V4V's
// copy_out does. It returns ErrEmpty if there is no message and an error
// wrapping ErrCorrupt if the ring's contents are impossible (nothing is
// consumed then; see Flush).
//
// After consuming, tell the hypervisor ([Hypervisor.Notify]) so that
// senders waiting for space are woken.
func (r *Ring) CopyOut(p []byte, consume bool) (int, Message, error) {
	m, rx, span, err := r.next()
	if err != nil {
		return 0, m, err
	}
	n := min(len(p), m.Len)
	off := rx + MessageHeaderSize
	if off == r.size {
		off = 0
	}
	data := r.mem[RingHeaderSize:]
	c := copy(p[:n], data[off:])
	if c < n {
		copy(p[c:n], data)
	}
	if consume {
		next := rx + span
		if next >= r.size {
			next -= r.size
		}
		r.SetRx(next)
	}
	return n, m, nil
}
