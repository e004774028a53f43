package v4v

import (
	"encoding/binary"
	"errors"
	"testing"

	"github.com/gozen-dev/gozen/domid"
)

// testRing returns an empty ring of size bytes over fresh memory.
func testRing(t testing.TB, size int) *Ring {
	t.Helper()
	mem := make([]byte, RingHeaderSize+size)
	r, err := NewRing(mem, size)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// put writes a message as the hypervisor would, without checks.
func put(r *Ring, src Addr, typ uint32, payload []byte) {
	tx := r.Tx()
	d := r.Data()
	binary.LittleEndian.PutUint32(d[tx:], uint32(MessageHeaderSize+len(payload)))
	binary.LittleEndian.PutUint32(d[tx+4:], uint32(src.Port))
	binary.LittleEndian.PutUint16(d[tx+8:], uint16(src.Domain))
	binary.LittleEndian.PutUint32(d[tx+12:], typ)
	off := (tx + MessageHeaderSize) % r.size
	for _, b := range payload {
		d[off] = b
		off = (off + 1) % r.size
	}
	r.SetTx((tx + RoundUp(uint32(MessageHeaderSize+len(payload)))) % r.size)
}

func TestLayout(t *testing.T) {
	if RoundUp(0) != 0 || RoundUp(1) != 16 || RoundUp(16) != 16 || RoundUp(17) != 32 {
		t.Fatal("RoundUp")
	}
	if RingPages(4096-64) != 1 || RingPages(4096-48) != 2 || RingPages(MaxRingSize) != MaxRingSize/PageSize+1 {
		t.Fatal("RingPages")
	}
	if MaxPayload(MinRingSize) != SlotSize || MaxPayload(10) != 0 {
		t.Fatal("MaxPayload")
	}
	for _, bad := range []int{0, 32, MinRingSize + 1, MaxRingSize + 16} {
		if err := CheckRingSize(bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("CheckRingSize(%d) = %v", bad, err)
		}
	}
	if _, err := NewRing(make([]byte, 100), 64); !errors.Is(err, ErrInvalid) {
		t.Errorf("short memory: %v", err)
	}
	if _, err := NewRing(make([]byte, 200)[1:], 64); !errors.Is(err, ErrInvalid) {
		t.Errorf("misaligned memory: %v", err)
	}
}

func TestCopyOutWrap(t *testing.T) {
	r := testRing(t, 64)
	src := Addr{Domain: 3, Port: 99}
	// Move both pointers to 48 so that the next message's payload wraps.
	r.SetRx(48)
	r.SetTx(48)
	put(r, src, 7, []byte("0123456789abcdefXYZ")) // 19 bytes: header at 48, data 0..18
	if r.Tx() != 48+48-64 {
		t.Fatalf("tx %d", r.Tx())
	}
	m, err := r.Peek()
	if err != nil || m.Len != 19 || m.Source != src || m.Type != 7 {
		t.Fatalf("Peek = %+v, %v", m, err)
	}
	buf := make([]byte, 5)
	n, _, err := r.CopyOut(buf, false)
	if err != nil || n != 5 || string(buf) != "01234" {
		t.Fatalf("partial CopyOut = %d %q %v", n, buf, err)
	}
	buf = make([]byte, 64)
	n, m, err = r.CopyOut(buf, true)
	if err != nil || n != 19 || m.Len != 19 || string(buf[:n]) != "0123456789abcdefXYZ" {
		t.Fatalf("CopyOut = %d %q %v", n, buf[:n], err)
	}
	if r.Rx() != r.Tx() {
		t.Fatalf("rx %d tx %d after consume", r.Rx(), r.Tx())
	}
	if _, _, err := r.CopyOut(buf, true); !errors.Is(err, ErrEmpty) {
		t.Fatalf("empty ring: %v", err)
	}
	if u, err := r.Used(); u != 0 || err != nil {
		t.Fatalf("Used = %d, %v", u, err)
	}
}

func TestCopyOutCorrupt(t *testing.T) {
	cases := []struct {
		name string
		set  func(r *Ring)
	}{
		{"rx past ring", func(r *Ring) { r.SetRx(128) }},
		{"rx misaligned", func(r *Ring) { r.SetRx(8) }},
		{"tx past ring", func(r *Ring) { r.SetTx(4096) }},
		{"tx misaligned", func(r *Ring) { r.SetTx(17) }},
		{"len below header", func(r *Ring) {
			binary.LittleEndian.PutUint32(r.Data()[0:], 15)
			r.SetTx(32)
		}},
		{"len past filled part", func(r *Ring) {
			binary.LittleEndian.PutUint32(r.Data()[0:], 33)
			r.SetTx(32)
		}},
		{"len past ring", func(r *Ring) {
			binary.LittleEndian.PutUint32(r.Data()[0:], 0xffffffff)
			r.SetTx(32)
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := testRing(t, 128)
			c.set(r)
			if _, err := r.Peek(); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("Peek: %v", err)
			}
			if _, _, err := r.CopyOut(make([]byte, 10), true); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("CopyOut: %v", err)
			}
			r.Flush()
			if r.Rx() >= 128 || r.Rx()%SlotSize != 0 {
				t.Fatalf("Flush left rx %d", r.Rx())
			}
		})
	}
}

func TestAddr(t *testing.T) {
	for _, a := range []Addr{{0, 0}, {7, 4096}, {domid.Any, 1}} {
		b, err := ParseAddr(a.String())
		if err != nil || b != a {
			t.Errorf("ParseAddr(%q) = %v, %v", a.String(), b, err)
		}
	}
	for _, s := range []string{"", "1", "x:1", "1:x", "70000:1"} {
		if _, err := ParseAddr(s); !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseAddr(%q): %v", s, err)
		}
	}
	if (Addr{}).Network() != "v4v" {
		t.Error("Network")
	}
}
