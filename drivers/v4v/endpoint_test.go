package v4v_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/gozen-dev/gozen/domid"
	"github.com/gozen-dev/gozen/drivers/v4v"
	"github.com/gozen-dev/gozen/drivers/v4v/v4vheap"
	"github.com/gozen-dev/gozen/hypercall"
)

// domains returns a permissive broker's domains 1, 2 and 3.
func domains(t testing.TB) (b *v4vheap.Broker, d1, d2, d3 *v4vheap.Domain) {
	b = v4vheap.New(v4vheap.Options{})
	return b, b.Domain(1), b.Domain(2), b.Domain(3)
}

func listen(t testing.TB, hv v4v.Hypervisor, port v4v.Port, partner domid.ID, size int) *v4v.Endpoint {
	t.Helper()
	ep, err := v4v.Listen(v4v.Config{Hypervisor: hv, Port: port, Partner: partner, RingSize: size, MessageType: 42})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ep.Close() })
	return ep
}

// recv reads one message without blocking.
func recv(t testing.TB, ep *v4v.Endpoint) (string, v4v.Message) {
	t.Helper()
	buf := make([]byte, 1<<16)
	n, m, err := ep.CopyOut(buf, true)
	if err != nil {
		t.Fatalf("CopyOut: %v", err)
	}
	return string(buf[:n]), m
}

func expectEmpty(t testing.TB, ep *v4v.Endpoint) {
	t.Helper()
	if _, m, err := ep.CopyOut(nil, false); !errors.Is(err, v4v.ErrEmpty) {
		t.Fatalf("ring of %s not empty: %+v, %v", ep.LocalAddr(), m, err)
	}
}

func TestPartnerBeforeAny(t *testing.T) {
	_, d1, d2, d3 := domains(t)
	anyEP := listen(t, d1, 10, domid.Any, 0)
	twoEP := listen(t, d1, 10, 2, 0)
	s2 := listen(t, d2, 20, domid.Any, 0)
	s3 := listen(t, d3, 30, domid.Any, 0)
	dst := v4v.Addr{Domain: 1, Port: 10}

	if _, err := s2.TrySend(dst, 5, []byte("from 2")); err != nil {
		t.Fatal(err)
	}
	expectEmpty(t, anyEP)
	if got, m := recv(t, twoEP); got != "from 2" || m.Source != (v4v.Addr{Domain: 2, Port: 20}) {
		t.Fatalf("partner ring got %q from %s", got, m.Source)
	}
	if _, err := s3.TrySend(dst, 5, []byte("from 3")); err != nil {
		t.Fatal(err)
	}
	expectEmpty(t, twoEP)
	if got, m := recv(t, anyEP); got != "from 3" || m.Source != (v4v.Addr{Domain: 3, Port: 30}) {
		t.Fatalf("ANY ring got %q from %s", got, m.Source)
	}
	// Without its partner ring, domain 2 reaches the ANY ring.
	if err := twoEP.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := s2.TrySend(dst, 5, []byte("again")); err != nil {
		t.Fatal(err)
	}
	if got, m := recv(t, anyEP); got != "again" || m.Source.Domain != 2 {
		t.Fatalf("ANY ring got %q from %s", got, m.Source)
	}
}

func TestPartnerOnlyRing(t *testing.T) {
	_, d1, d2, d3 := domains(t)
	ep := listen(t, d1, 10, 2, 0)
	s3 := listen(t, d3, 30, domid.Any, 0)
	_, err := s3.TrySend(v4v.Addr{Domain: 1, Port: 10}, 0, []byte("x"))
	if !errors.Is(err, v4v.ErrNoRing) || !errors.Is(err, hypercall.ECONNREFUSED) {
		t.Fatalf("send from a non-partner: %v", err)
	}
	if _, err := d2.Sendv(v4v.Addr{Domain: 2, Port: 1}, v4v.Addr{Domain: 1, Port: 10}, [][]byte{[]byte("ok")}, 0); err != nil {
		t.Fatal(err)
	}
	recv(t, ep)
}

func TestSourceProtocolGather(t *testing.T) {
	_, d1, d2, _ := domains(t)
	ep := listen(t, d1, 10, domid.Any, 0)
	iov := [][]byte{[]byte("ab"), nil, []byte("cd"), []byte("e"), {}, []byte("f"), []byte("g"), []byte("h")}
	n, err := d2.Sendv(v4v.Addr{Domain: domid.Any, Port: 77}, v4v.Addr{Domain: 1, Port: 10}, iov, 0xdeadbeef)
	if err != nil || n != 8 {
		t.Fatalf("Sendv = %d, %v", n, err)
	}
	got, m := recv(t, ep)
	if got != "abcdefgh" || m.Type != 0xdeadbeef || m.Source != (v4v.Addr{Domain: 2, Port: 77}) || m.Len != 8 {
		t.Fatalf("got %q %+v", got, m)
	}
	// The source domain cannot be forged.
	_, err = d2.Sendv(v4v.Addr{Domain: 3, Port: 77}, v4v.Addr{Domain: 1, Port: 10}, iov, 0)
	if !errors.Is(err, v4v.ErrPermission) || !errors.Is(err, hypercall.EPERM) {
		t.Fatalf("forged source: %v", err)
	}
	// At most MaxIOV buffers.
	_, err = d2.Sendv(v4v.Addr{Domain: 2}, v4v.Addr{Domain: 1, Port: 10}, append(iov, []byte("i")), 0)
	if !errors.Is(err, v4v.ErrInvalid) {
		t.Fatalf("9 buffers: %v", err)
	}
	// An empty message is a message.
	if _, err := d2.Sendv(v4v.Addr{Domain: 2, Port: 1}, v4v.Addr{Domain: 1, Port: 10}, nil, 9); err != nil {
		t.Fatal(err)
	}
	if got, m := recv(t, ep); got != "" || m.Len != 0 || m.Type != 9 {
		t.Fatalf("empty message: %q %+v", got, m)
	}
}

func TestWrapAround(t *testing.T) {
	_, d1, d2, _ := domains(t)
	ep := listen(t, d1, 10, 2, 256)
	s := listen(t, d2, 20, domid.Any, 0)
	dst := v4v.Addr{Domain: 1, Port: 10}
	seq := 0
	payload := func(i int) []byte {
		n := 1 + (i*37)%(ep.MaxPayload())
		return bytes.Repeat([]byte{byte(i)}, n)
	}
	for round := range 60 {
		// Fill until the ring refuses, then drain: the pointers wrap many
		// times at every alignment.
		sent := seq
		for {
			_, err := s.TrySend(dst, uint32(seq), payload(seq))
			if errors.Is(err, v4v.ErrWouldBlock) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			seq++
		}
		if seq == sent {
			t.Fatalf("round %d: nothing fit in an empty ring", round)
		}
		for i := sent; i < seq; i++ {
			got, m := recv(t, ep)
			if got != string(payload(i)) || m.Type != uint32(i) {
				t.Fatalf("message %d: got %d bytes type %d", i, len(got), m.Type)
			}
		}
		expectEmpty(t, ep)
	}
}

func TestFullRingSpaceNotification(t *testing.T) {
	_, d1, d2, _ := domains(t)
	ep := listen(t, d1, 10, domid.Any, 128) // max payload 96
	s := listen(t, d2, 20, domid.Any, 0)
	dst := v4v.Addr{Domain: 1, Port: 10}
	msg := make([]byte, 50)
	if _, err := s.TrySend(dst, 0, msg); err != nil {
		t.Fatal(err)
	}
	_, err := s.TrySend(dst, 0, msg)
	if !errors.Is(err, v4v.ErrWouldBlock) || !errors.Is(err, hypercall.EAGAIN) {
		t.Fatalf("send to a full ring: %v", err)
	}
	before := d2.Signals()
	recv(t, ep) // consumes and notifies
	if d2.Signals() <= before {
		t.Fatal("no space notification after the receiver consumed")
	}
	if _, err := s.TrySend(dst, 0, msg); err != nil {
		t.Fatalf("send after the notification: %v", err)
	}

	// A blocking send waits for the notification.
	done := make(chan error, 1)
	go func() {
		_, err := s.Send(context.Background(), dst, 1, []byte("blocked"), make([]byte, 43))
		done <- err
	}()
	select {
	case err := <-done:
		t.Fatalf("Send to a full ring returned at once: %v", err)
	case <-time.After(30 * time.Millisecond):
	}
	recv(t, ep)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got, m := recv(t, ep); got[:7] != "blocked" || m.Len != 50 || m.Type != 1 {
		t.Fatalf("got %q %+v", got, m)
	}
}

func TestOversize(t *testing.T) {
	_, d1, d2, _ := domains(t)
	ep := listen(t, d1, 10, domid.Any, 128)
	s := listen(t, d2, 20, domid.Any, 0)
	dst := v4v.Addr{Domain: 1, Port: 10}
	if _, err := s.TrySend(dst, 0, make([]byte, ep.MaxPayload())); err != nil {
		t.Fatalf("largest message: %v", err)
	}
	recv(t, ep)
	for _, n := range []int{ep.MaxPayload() + 1, 4096} {
		_, err := s.Send(context.Background(), dst, 0, make([]byte, n))
		if !errors.Is(err, v4v.ErrMsgSize) || !errors.Is(err, hypercall.EMSGSIZE) {
			t.Fatalf("%d bytes into a ring of 128: %v", n, err)
		}
	}
	half := make([]byte, v4v.MaxMessage/2+16)
	if _, err := s.TrySend(dst, 0, half, half); !errors.Is(err, v4v.ErrMsgSize) {
		t.Fatalf("more than MaxMessage: %v", err)
	}
	if _, err := s.TrySend(dst, 0, make([]byte, v4v.MaxMessage+1)); !errors.Is(err, v4v.ErrInvalid) {
		t.Fatalf("one buffer above MaxMessage: %v", err)
	}
}

func TestRegistration(t *testing.T) {
	b, d1, d2, _ := domains(t)
	ep := listen(t, d1, 10, 2, 0)
	if _, err := d2.Sendv(v4v.Addr{Domain: 2}, v4v.Addr{Domain: 1, Port: 10}, [][]byte{[]byte("kept")}, 0); err != nil {
		t.Fatal(err)
	}
	// Re-registering is idempotent and keeps the messages.
	if err := ep.Reregister(); err != nil {
		t.Fatal(err)
	}
	if got, _ := recv(t, ep); got != "kept" {
		t.Fatalf("after re-registering: %q", got)
	}
	r, _ := d1.NewRing(v4v.DefaultRingSize)
	if err := d1.RegisterRing(r, 10, 2, v4v.RegisterFailExist); !errors.Is(err, v4v.ErrExists) {
		t.Fatalf("FailExist: %v", err)
	}
	r2, _ := d1.NewRing(64)
	if err := d1.RegisterRing(r2, 10, 2, 0); !errors.Is(err, v4v.ErrExists) || !errors.Is(err, hypercall.EEXIST) {
		t.Fatalf("size change: %v", err)
	}
	if err := d1.RegisterRing(r2, 11, 99, 0); !errors.Is(err, v4v.ErrNoDomain) {
		t.Fatalf("partner that does not exist: %v", err)
	}
	if err := d1.UnregisterRing(12, 2); !errors.Is(err, v4v.ErrNotRegistered) || !errors.Is(err, hypercall.ENOENT) {
		t.Fatalf("unregister a missing ring: %v", err)
	}
	if _, err := d2.Sendv(v4v.Addr{Domain: 2}, v4v.Addr{Domain: 9, Port: 10}, nil, 0); !errors.Is(err, v4v.ErrNoDomain) {
		t.Fatalf("send to a missing domain: %v", err)
	}
	// Domain 3 has at most MaxRingsPerDomain rings.
	d3 := b.Domain(3)
	for i := range v4v.MaxRingsPerDomain {
		r, _ := d3.NewRing(v4v.MinRingSize)
		if err := d3.RegisterRing(r, v4v.Port(i), domid.Any, 0); err != nil {
			t.Fatal(err)
		}
	}
	r3, _ := d3.NewRing(v4v.MinRingSize)
	if err := d3.RegisterRing(r3, 1000, domid.Any, 0); !errors.Is(err, v4v.ErrTooManyRings) || !errors.Is(err, hypercall.ENOSPC) {
		t.Fatalf("ring %d: %v", v4v.MaxRingsPerDomain+1, err)
	}

	strict := v4vheap.New(v4vheap.Options{DenyAny: true})
	_, err := v4v.Listen(v4v.Config{Hypervisor: strict.Domain(1), Port: 1, Partner: domid.Any})
	if !errors.Is(err, v4v.ErrPermission) || !errors.Is(err, hypercall.EPERM) {
		t.Fatalf("ANY ring without mac-permissive: %v", err)
	}
	if _, err := v4v.Listen(v4v.Config{Hypervisor: d1, Port: 1, RingSize: 40}); !errors.Is(err, v4v.ErrInvalid) {
		t.Fatalf("bad ring size: %v", err)
	}
}

func TestNotifyQuery(t *testing.T) {
	_, d1, d2, _ := domains(t)
	ep := listen(t, d1, 10, domid.Any, 128)
	dst := v4v.Addr{Domain: 1, Port: 10}
	q := []v4v.RingQuery{
		{Addr: dst, SpaceRequired: 10},
		{Addr: dst, SpaceRequired: 97},
		{Addr: v4v.Addr{Domain: 1, Port: 11}},
	}
	if err := d2.Notify(q); err != nil {
		t.Fatal(err)
	}
	want := v4v.RingExists | v4v.RingShared | v4v.RingEmpty | v4v.RingSufficient
	if q[0].Flags != want || q[0].MaxMessageSize != 96 {
		t.Fatalf("query 0: %+v", q[0])
	}
	if q[1].Flags&v4v.RingMsgSize == 0 {
		t.Fatalf("query 1: %+v", q[1])
	}
	if q[2].Flags != 0 {
		t.Fatalf("query for a missing ring: %+v", q[2])
	}
	if _, err := d2.Sendv(v4v.Addr{Domain: 2}, dst, [][]byte{make([]byte, 60)}, 0); err != nil {
		t.Fatal(err)
	}
	// Not enough space: a notification is queued instead.
	q = q[:1]
	q[0].SpaceRequired = 60
	if err := d2.Notify(q); err != nil {
		t.Fatal(err)
	}
	if q[0].Flags&(v4v.RingSufficient|v4v.RingEmpty) != 0 {
		t.Fatalf("full ring: %+v", q[0])
	}
	before := d2.Signals()
	recv(t, ep)
	if d2.Signals() <= before {
		t.Fatal("no notification for the queued query")
	}
	if err := d2.Notify(make([]v4v.RingQuery, v4v.MaxNotify+1)); !errors.Is(err, v4v.ErrAccess) {
		t.Fatalf("too many queries: %v", err)
	}
}

func TestPacketConn(t *testing.T) {
	_, d1, d2, _ := domains(t)
	var a, b net.PacketConn = listen(t, d1, 10, domid.Any, 0), listen(t, d2, 20, domid.Any, 0)
	if a.LocalAddr().String() != "1:10" || a.LocalAddr().Network() != "v4v" {
		t.Fatalf("LocalAddr %v", a.LocalAddr())
	}
	if n, err := b.WriteTo([]byte("ping"), a.LocalAddr()); err != nil || n != 4 {
		t.Fatalf("WriteTo = %d, %v", n, err)
	}
	buf := make([]byte, 2)
	n, from, err := a.ReadFrom(buf)
	if err != nil || n != 2 || string(buf) != "pi" || from.String() != "2:20" {
		t.Fatalf("truncating ReadFrom = %d %q %v %v", n, buf, from, err)
	}
	// The rest of a truncated message is gone.
	a.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
	_, _, err = a.ReadFrom(buf)
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("read past the deadline: %v", err)
	}
	a.SetReadDeadline(time.Time{})
	if _, err := b.WriteTo([]byte("x"), &net.UDPAddr{}); !errors.Is(err, v4v.ErrInvalid) {
		t.Fatalf("WriteTo a UDP address: %v", err)
	}
	if _, err := b.WriteTo([]byte("x"), &v4v.Addr{Domain: 1, Port: 99}); !errors.Is(err, v4v.ErrNoRing) {
		t.Fatalf("WriteTo nowhere: %v", err)
	}

	// A blocked read wakes when a message comes, with its message type.
	go func() {
		time.Sleep(10 * time.Millisecond)
		b.WriteTo([]byte("pong"), a.LocalAddr())
	}()
	buf = make([]byte, 16)
	n, m, err := a.(*v4v.Endpoint).ReadMsg(buf)
	if err != nil || string(buf[:n]) != "pong" || m.Type != 42 {
		t.Fatalf("ReadMsg = %q %+v %v", buf[:n], m, err)
	}

	// A deadline moved forward while a read waits applies to it.
	errc := make(chan error, 1)
	go func() { _, _, err := a.ReadFrom(buf); errc <- err }()
	time.Sleep(10 * time.Millisecond)
	a.SetReadDeadline(time.Now().Add(10 * time.Millisecond))
	if err := <-errc; !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("moved deadline: %v", err)
	}
	a.SetReadDeadline(time.Time{})

	// Close wakes a blocked read.
	go func() { _, _, err := a.ReadFrom(buf); errc <- err }()
	time.Sleep(10 * time.Millisecond)
	if err := a.Close(); err != nil {
		t.Fatal(err)
	}
	if err := <-errc; !errors.Is(err, net.ErrClosed) {
		t.Fatalf("read across Close: %v", err)
	}
	if err := a.Close(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("second Close: %v", err)
	}
	// The ring is gone.
	if _, err := b.WriteTo([]byte("x"), &v4v.Addr{Domain: 1, Port: 10}); !errors.Is(err, v4v.ErrNoRing) {
		t.Fatalf("WriteTo a closed endpoint: %v", err)
	}
}

func TestWriteDeadline(t *testing.T) {
	_, d1, d2, _ := domains(t)
	a := listen(t, d1, 10, domid.Any, 64)
	b := listen(t, d2, 20, domid.Any, 0)
	if _, err := b.WriteTo(make([]byte, 16), a.LocalAddr()); err != nil {
		t.Fatal(err)
	}
	b.SetWriteDeadline(time.Now().Add(20 * time.Millisecond))
	if _, err := b.WriteTo(make([]byte, 16), a.LocalAddr()); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("write to a full ring past the deadline: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel()
	if _, err := b.Send(ctx, v4v.Addr{Domain: 1, Port: 10}, 0, make([]byte, 16)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Send past the context's deadline: %v", err)
	}
}

func TestPeekCopyOut(t *testing.T) {
	_, d1, d2, _ := domains(t)
	a := listen(t, d1, 10, domid.Any, 0)
	b := listen(t, d2, 20, domid.Any, 0)
	go func() {
		time.Sleep(5 * time.Millisecond)
		b.TrySend(v4v.Addr{Domain: 1, Port: 10}, 3, []byte("peekaboo"))
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	m, err := a.Peek(ctx)
	if err != nil || m.Len != 8 || m.Type != 3 || m.Source.Domain != 2 {
		t.Fatalf("Peek = %+v, %v", m, err)
	}
	buf := make([]byte, 4)
	if n, _, err := a.CopyOut(buf, false); n != 4 || err != nil || string(buf) != "peek" {
		t.Fatalf("CopyOut without consuming = %d %q %v", n, buf, err)
	}
	if got, _ := recv(t, a); got != "peekaboo" {
		t.Fatalf("got %q", got)
	}
	ctx2, cancel2 := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel2()
	if _, err := a.Peek(ctx2); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Peek on an empty ring: %v", err)
	}
}

// TestManySenders streams from two domains into one small ring with
// blocking sends: everything arrives, in order per sender.
func TestManySenders(t *testing.T) {
	b, d1, d2, d3 := domains(t)
	_ = b
	r := listen(t, d1, 10, domid.Any, 512)
	const count = 2000
	var wg sync.WaitGroup
	for _, d := range []*v4vheap.Domain{d2, d3} {
		s := listen(t, d, 20, domid.Any, 0)
		wg.Go(func() {
			for i := range count {
				msg := fmt.Appendf(nil, "%d:%d", d.Domain(), i)
				if _, err := s.Send(context.Background(), v4v.Addr{Domain: 1, Port: 10}, 0, msg); err != nil {
					t.Error(err)
					return
				}
			}
		})
	}
	next := map[domid.ID]int{2: 0, 3: 0}
	buf := make([]byte, 64)
	r.SetReadDeadline(time.Now().Add(20 * time.Second))
	for range 2 * count {
		n, from, err := r.ReadFrom(buf)
		if err != nil {
			t.Fatal(err)
		}
		dom := from.(v4v.Addr).Domain
		if want := fmt.Sprintf("%d:%d", dom, next[dom]); string(buf[:n]) != want {
			t.Fatalf("got %q, want %q", buf[:n], want)
		}
		next[dom]++
	}
	wg.Wait()
}
