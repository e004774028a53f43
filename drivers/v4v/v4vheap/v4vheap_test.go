package v4vheap

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"testing"
	"time"

	"github.com/gozen-dev/gozen/domid"
	"github.com/gozen-dev/gozen/drivers/v4v"
)

// TestWireLayout checks the bytes the broker writes against argo.h:
// xen_argo_ring_t {rx_ptr, tx_ptr, reserved[56]}, then messages of
// struct xen_argo_ring_message_header {len, {aport, domain_id, pad},
// message_type} padded to 16 bytes.
func TestWireLayout(t *testing.T) {
	b := New(Options{})
	d1, d2 := b.Domain(1), b.Domain(2)
	r, err := d1.NewRing(128)
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Memory()) != v4v.RingHeaderSize+128 {
		t.Fatalf("memory %d bytes", len(r.Memory()))
	}
	if err := d1.RegisterRing(r, 0x1234, domid.Any, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := d2.Sendv(v4v.Addr{Domain: domid.Any, Port: 7}, v4v.Addr{Domain: 1, Port: 0x1234},
		[][]byte{[]byte("hel"), []byte("lo")}, 0xa0b0c0d0); err != nil {
		t.Fatal(err)
	}
	mem := r.Memory()
	if rx, tx := binary.LittleEndian.Uint32(mem[0:]), binary.LittleEndian.Uint32(mem[4:]); rx != 0 || tx != 32 {
		t.Fatalf("rx_ptr %d tx_ptr %d", rx, tx)
	}
	want := []byte{
		21, 0, 0, 0, // len: header + 5
		7, 0, 0, 0, // source.aport
		2, 0, 0, 0, // source.domain_id, pad
		0xd0, 0xc0, 0xb0, 0xa0, // message_type
		'h', 'e', 'l', 'l', 'o',
	}
	if got := mem[64 : 64+len(want)]; !bytes.Equal(got, want) {
		t.Fatalf("ring bytes\n got % x\nwant % x", got, want)
	}
	// Sizes Xen refuses.
	if _, err := d1.NewRing(40); !errors.Is(err, v4v.ErrInvalid) {
		t.Fatalf("NewRing(40): %v", err)
	}
}

// TestRegisterSanitizesTx: registering memory whose tx_ptr is impossible
// restarts it at the next slot past rx_ptr, as Xen does.
func TestRegisterSanitizesTx(t *testing.T) {
	d := New(Options{}).Domain(1)
	r, _ := d.NewRing(128)
	r.SetRx(33)
	r.SetTx(5)
	if err := d.RegisterRing(r, 1, domid.Any, 0); err != nil {
		t.Fatal(err)
	}
	if r.Tx() != 48 {
		t.Fatalf("tx_ptr %d, want 48", r.Tx())
	}
}

func TestDestroy(t *testing.T) {
	b := New(Options{})
	d1, d2 := b.Domain(1), b.Domain(2)
	r, _ := d1.NewRing(64)
	if err := d1.RegisterRing(r, 1, domid.Any, 0); err != nil {
		t.Fatal(err)
	}
	dst := v4v.Addr{Domain: 1, Port: 1}
	if _, err := d2.Sendv(v4v.Addr{Domain: 2}, dst, [][]byte{make([]byte, 16)}, 0); err != nil {
		t.Fatal(err)
	}
	if _, err := d2.Sendv(v4v.Addr{Domain: 2}, dst, [][]byte{make([]byte, 16)}, 0); !errors.Is(err, v4v.ErrWouldBlock) {
		t.Fatalf("full ring: %v", err)
	}
	before := d2.Signals()
	d1.Destroy()
	if d2.Signals() <= before {
		t.Fatal("waiting sender not signalled when the domain went away")
	}
	if _, err := d2.Sendv(v4v.Addr{Domain: 2}, dst, nil, 0); !errors.Is(err, v4v.ErrNoDomain) {
		t.Fatalf("send to a destroyed domain: %v", err)
	}
	if err := d1.RegisterRing(r, 1, domid.Any, 0); !errors.Is(err, v4v.ErrNotSupported) {
		t.Fatalf("register in a destroyed domain: %v", err)
	}
}

func TestWait(t *testing.T) {
	d := New(Options{}).Domain(1)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if _, err := d.Wait(ctx, 0); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Wait with no signal: %v", err)
	}
	go func() { time.Sleep(5 * time.Millisecond); d.signal() }()
	if g, err := d.Wait(context.Background(), 0); g != 1 || err != nil {
		t.Fatalf("Wait = %d, %v", g, err)
	}
	d.signal()
	d.signal()
	if g, err := d.Wait(context.Background(), 1); g != 3 || err != nil {
		t.Fatalf("coalesced Wait = %d, %v", g, err)
	}
}

// FuzzBroker drives a ring with sends and consumes chosen by the input and
// checks every message against a model queue: wrap-around at every
// alignment, full-ring refusals exactly when Xen's arithmetic says so.
func FuzzBroker(f *testing.F) {
	f.Add(uint8(0), []byte{10, 0x80, 20, 30, 0x81, 0x80, 5})
	f.Add(uint8(3), []byte{60, 60, 60, 0x80, 60, 0x80, 0x80, 1, 2, 3})
	f.Add(uint8(60), bytes.Repeat([]byte{100, 17, 0x80}, 30))
	f.Fuzz(func(t *testing.T, sizeSel uint8, ops []byte) {
		size := v4v.MinRingSize + v4v.SlotSize*int(sizeSel%64)
		b := New(Options{})
		d1, d2 := b.Domain(1), b.Domain(2)
		r, err := d1.NewRing(size)
		if err != nil {
			t.Fatal(err)
		}
		if err := d1.RegisterRing(r, 5, 2, 0); err != nil {
			t.Fatal(err)
		}
		dst := v4v.Addr{Domain: 1, Port: 5}
		type msg struct {
			data []byte
			typ  uint32
		}
		var queue []msg
		used := 0 // bytes of the ring the queued messages take
		buf := make([]byte, size)
		for i, op := range ops {
			if op&0x80 != 0 {
				n, m, err := r.CopyOut(buf, true)
				if len(queue) == 0 {
					if !errors.Is(err, v4v.ErrEmpty) {
						t.Fatalf("op %d: empty ring read %+v, %v", i, m, err)
					}
					continue
				}
				if err != nil {
					t.Fatalf("op %d: %v", i, err)
				}
				want := queue[0]
				queue = queue[1:]
				used -= v4v.MessageHeaderSize + int(v4v.RoundUp(uint32(len(want.data))))
				if !bytes.Equal(buf[:n], want.data) || m.Type != want.typ || m.Source != (v4v.Addr{Domain: 2, Port: 9}) {
					t.Fatalf("op %d: got %d bytes type %d from %s, want %d bytes type %d", i, n, m.Type, m.Source, len(want.data), want.typ)
				}
				if op&1 != 0 {
					if err := d1.Notify(nil); err != nil {
						t.Fatal(err)
					}
				}
				continue
			}
			n := int(op) * size / 100
			data := make([]byte, n)
			for j := range data {
				data[j] = byte(i + j)
			}
			// Split into up to three buffers to exercise gathering.
			iov := [][]byte{data[:n/3], data[n/3 : n/2], data[n/2:]}
			_, err := d2.Sendv(v4v.Addr{Domain: 2, Port: 9}, dst, iov, uint32(i))
			need := v4v.MessageHeaderSize + int(v4v.RoundUp(uint32(n)))
			switch {
			case need >= size:
				if !errors.Is(err, v4v.ErrMsgSize) {
					t.Fatalf("op %d: %d bytes into a ring of %d: %v", i, n, size, err)
				}
			case need >= size-used:
				if !errors.Is(err, v4v.ErrWouldBlock) {
					t.Fatalf("op %d: %d bytes with %d of %d used: %v", i, n, used, size, err)
				}
			default:
				if err != nil {
					t.Fatalf("op %d: %d bytes with %d of %d used: %v", i, n, used, size, err)
				}
				queue = append(queue, msg{data, uint32(i)})
				used += need
			}
		}
	})
}
