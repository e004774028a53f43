//go:build tamago

// Command argosmoke checks package argo against a real Argo hypervisor
// (qemu/argo-xen.sh, booted with argo=1,mac-permissive=1): it registers a
// ring, sends to itself, reads the message back, fills the ring to
// ErrWouldBlock, drains it and checks the error mapping. It polls instead
// of waiting for VIRQ_ARGO, so it needs no event-channel layer, and prints
// "argosmoke: PASS" or "argosmoke: FAIL ...".
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	_ "github.com/gozen-dev/gozen/boot" // the PVH entry and runtime hooks
	"github.com/gozen-dev/gozen/domid"
	"github.com/gozen-dev/gozen/drivers/v4v"
	"github.com/gozen-dev/gozen/drivers/v4v/argo"
	"github.com/gozen-dev/gozen/hypercall"
)

// pollWait stands in for VIRQ_ARGO: it reports a new "event" every
// millisecond, so blocking calls poll.
func pollWait(ctx context.Context, seen uint64) (uint64, error) {
	select {
	case <-ctx.Done():
		return 0, ctx.Err()
	case <-time.After(time.Millisecond):
		return seen + 1, nil
	}
}

func fail(format string, args ...any) {
	fmt.Printf("argosmoke: FAIL "+format+"\n", args...)
	os.Exit(1)
}

func main() {
	self := domid.ID(0)
	if len(os.Args) > 1 {
		fmt.Sscan(os.Args[1], &self)
	}
	hv, err := argo.New(argo.Config{Domain: self, Wait: pollWait})
	if err != nil {
		fail("%v", err)
	}
	ep, err := v4v.Listen(v4v.Config{Hypervisor: hv, Port: 7000, Partner: domid.Any, RingSize: 2*v4v.PageSize - v4v.RingHeaderSize, MessageType: 5})
	if err != nil {
		fail("listen: %v", err)
	}
	if err := ep.Reregister(); err != nil {
		fail("re-register: %v", err)
	}
	me := v4v.Addr{Domain: self, Port: 7000}
	if _, err := ep.TrySend(me, 9, []byte("hello "), []byte("argo")); err != nil {
		fail("send to self: %v", err)
	}
	buf := make([]byte, 8192)
	ep.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, m, err := ep.ReadMsg(buf)
	if err != nil || string(buf[:n]) != "hello argo" || m.Type != 9 || m.Source != me {
		fail("read back: %q %+v %v", buf[:n], m, err)
	}
	fmt.Printf("argosmoke: self-send ok: %q from %s type %d\n", buf[:n], m.Source, m.Type)

	// The same at the ring level, showing the pointers.
	r, err := hv.NewRing(4096 - v4v.RingHeaderSize)
	if err != nil {
		fail("NewRing: %v", err)
	}
	if err := hv.RegisterRing(r, 7002, domid.Any, 0); err != nil {
		fail("register 7002: %v", err)
	}
	for i := range 6 {
		n, err := hv.Sendv(v4v.Addr{Domain: domid.Any, Port: 1}, v4v.Addr{Domain: self, Port: 7002}, [][]byte{make([]byte, 1000)}, 0)
		fmt.Printf("argosmoke: ring send %d: n %d rx %d tx %d err %v\n", i, n, r.Rx(), r.Tx(), err)
	}
	sent := 0
	for {
		_, err := ep.TrySend(me, 1, make([]byte, 1000))
		if errors.Is(err, v4v.ErrWouldBlock) && errors.Is(err, hypercall.EAGAIN) {
			break
		}
		if err != nil {
			fail("filling: %v", err)
		}
		if sent++; sent > 100 {
			fail("ring never filled")
		}
	}
	// A blocking send to the full ring completes once a message is read
	// (the read notifies; this program polls instead of taking the VIRQ).
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := ep.Send(ctx, me, 2, make([]byte, 1000))
		done <- err
	}()
	time.Sleep(20 * time.Millisecond)
	for i := range sent + 1 {
		if n, _, err := ep.ReadMsg(buf); err != nil || n != 1000 {
			fail("drain %d: %d %v", i, n, err)
		}
		if i == 0 {
			if err := <-done; err != nil {
				fail("blocking send: %v", err)
			}
		}
	}
	fmt.Printf("argosmoke: full ring after %d messages gave ErrWouldBlock; blocking send completed; drained\n", sent)
	if _, err := ep.TrySend(v4v.Addr{Domain: self, Port: 7001}, 0, []byte("x")); !errors.Is(err, v4v.ErrNoRing) {
		fail("send to no ring: %v", err)
	}
	if _, err := ep.TrySend(me, 0, make([]byte, ep.MaxPayload()+1)); !errors.Is(err, v4v.ErrMsgSize) {
		fail("oversize: %v", err)
	}
	q := []v4v.RingQuery{{Addr: me, SpaceRequired: 100}}
	if err := hv.Notify(q); err != nil || q[0].Flags&v4v.RingExists == 0 || q[0].MaxMessageSize != uint32(ep.MaxPayload()) {
		fail("notify query: %+v %v", q[0], err)
	}
	fmt.Printf("argosmoke: notify query flags %#x max %d\n", q[0].Flags, q[0].MaxMessageSize)
	if err := hv.UnregisterRing(7002, domid.Any); err != nil {
		fail("unregister 7002: %v", err)
	}
	if err := hv.UnregisterRing(7002, domid.Any); !errors.Is(err, v4v.ErrNotRegistered) {
		fail("unregister 7002 again: %v", err)
	}
	if err := ep.Close(); err != nil {
		fail("close: %v", err)
	}
	fmt.Println("argosmoke: PASS")
}
