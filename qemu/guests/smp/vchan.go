//go:build tamago

package main

import (
	"context"
	"fmt"
	"hash/crc32"
	"io"
	"math/bits"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gozen-dev/gozen/arch/amd64/smp"
	"github.com/gozen-dev/gozen/domid"
	"github.com/gozen-dev/gozen/drivers/vchan"
	"github.com/gozen-dev/gozen/evtchn"
	"github.com/gozen-dev/gozen/evtchn/evxen"
	"github.com/gozen-dev/gozen/gnttab/gntheap"
)

// The vchan part of the stress: vchanPairs vchans inside the guest, each
// carrying vchanBytes each way at once. Their notifications are real Xen
// event channels (a loopback pair per vchan, the server's port bound to
// one vCPU and the client's to the next); their rings are shared heap
// pages (package gntheap), since Xen does not let a PVH domain map its
// own grants. Writers, readers and the upcalls that wake them run on
// whichever vCPUs the scheduler picks, so the traffic crosses vCPUs: the
// readers check every byte against the writer's stream and its CRC-32,
// and a lost wake-up stalls a pair until its deadline fails it.
const (
	vchanPairs = 3
	vchanBytes = 1 << 20
)

// vchanTraffic counts what the pairs carried and where it ran.
type vchanTraffic struct {
	bytes            atomic.Uint64
	writers, readers atomic.Uint64 // bitmaps of the vCPUs that ran them
	rings            []string
	mu               sync.Mutex
}

func (v *vchanTraffic) String() string {
	v.mu.Lock()
	defer v.mu.Unlock()
	return fmt.Sprintf("%d vchan bytes checked (%d pairs, rings %s; writers ran on vCPUs %s, readers on %s)",
		v.bytes.Load(), vchanPairs, strings.Join(v.rings, ","), cpuList(v.writers.Load()), cpuList(v.readers.Load()))
}

func cpuList(mask uint64) string {
	var parts []string
	for mask != 0 {
		i := bits.TrailingZeros64(mask)
		parts = append(parts, fmt.Sprint(i))
		mask &^= 1 << i
	}
	return strings.Join(parts, "+")
}

// vcpuEvents binds every port it allocates or binds to one vCPU, so that
// a vchan's notifications arrive there.
type vcpuEvents struct {
	*evxen.Events
	vcpu int
}

func (e vcpuEvents) AllocUnbound(remote domid.ID) (evtchn.Port, error) {
	p, err := e.Events.AllocUnbound(remote)
	if err != nil {
		return 0, err
	}
	return p, e.bind(p)
}

func (e vcpuEvents) BindInterdomain(remote domid.ID, remotePort evtchn.Port) (evtchn.Port, error) {
	p, err := e.Events.BindInterdomain(remote, remotePort)
	if err != nil {
		return 0, err
	}
	return p, e.bind(p)
}

func (e vcpuEvents) bind(p evtchn.Port) error {
	if err := e.Events.BindVCPU(p, e.vcpu); err != nil {
		e.Events.Close(p)
		return err
	}
	return nil
}

// stream is the pseudo-random byte stream a writer sends (xorshift64).
type stream struct{ x uint64 }

func (s *stream) fill(b []byte) {
	for i := range b {
		s.x ^= s.x << 13
		s.x ^= s.x >> 7
		s.x ^= s.x << 17
		b[i] = byte(s.x)
	}
}

// pair runs vchan number p between two goroutines of this guest with n
// vCPUs.
func (v *vchanTraffic) pair(ctx context.Context, ev *evxen.Events, p, n int) error {
	hub := gntheap.NewHub()
	mem, err := hub.Domain(1)
	if err != nil {
		return err
	}
	store := &vchan.MemStore{}
	srv := vchan.Config{Events: vcpuEvents{ev, p % n}, Memory: mem, Store: store,
		Remote: domid.Self, Path: fmt.Sprintf("data/vchan/smp/%d", p)}
	if p%2 == 1 { // granted ring pages; the others use the rings in the control page
		srv.ReadMin, srv.WriteMin = 8<<10, 16<<10
	}
	cli := srv
	cli.Events = vcpuEvents{ev, (p + 1) % n}
	name := fmt.Sprintf("vchan pair %d", p)

	l, err := vchan.Listen(ctx, srv)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	type dialed struct {
		c   *vchan.Conn
		err error
	}
	dc := make(chan dialed, 1)
	go func() { c, err := vchan.Dial(ctx, cli); dc <- dialed{c, err} }()
	s, err := l.Accept(ctx)
	d := <-dc
	if err != nil || d.err != nil {
		l.Close()
		if d.c != nil {
			d.c.Close()
		}
		return fmt.Errorf("%s: accept: %v, dial: %v", name, err, d.err)
	}
	c := d.c
	rd, wr := s.RingSizes()
	v.mu.Lock()
	v.rings = append(v.rings, fmt.Sprintf("%d/%d", rd, wr))
	v.mu.Unlock()

	deadline := time.Now().Add(90 * time.Second)
	s.SetDeadline(deadline)
	c.SetDeadline(deadline)
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for dir, ends := range [2][2]*vchan.Conn{{s, c}, {c, s}} {
		seed := uint64(p*2+dir) + 0x9e3779b97f4a7c15
		wg.Add(2)
		go func() { // writer
			defer wg.Done()
			g := stream{seed}
			buf := make([]byte, 9000)
			sum := crc32.NewIEEE()
			for sent, i := 0, 0; sent < vchanBytes; i++ {
				k := 1 + (i*2654435761)%len(buf)
				k = min(k, vchanBytes-sent)
				g.fill(buf[:k])
				sum.Write(buf[:k])
				if _, err := ends[0].Write(buf[:k]); err != nil {
					errs <- fmt.Errorf("%s dir %d: write at %d: %w", name, dir, sent, err)
					return
				}
				sent += k
				v.writers.Or(1 << smp.Current())
			}
		}()
		go func() { // reader
			defer wg.Done()
			g := stream{seed}
			buf := make([]byte, 7000)
			want := make([]byte, len(buf))
			sum, wsum := crc32.NewIEEE(), crc32.NewIEEE()
			got := 0
			for got < vchanBytes {
				k, err := ends[1].Read(buf[:min(len(buf), vchanBytes-got)])
				if k > 0 {
					g.fill(want[:k])
					sum.Write(buf[:k])
					wsum.Write(want[:k])
					for j := 0; j < k; j++ {
						if buf[j] != want[j] {
							errs <- fmt.Errorf("%s dir %d: byte %d is %#x, want %#x", name, dir, got+j, buf[j], want[j])
							return
						}
					}
					got += k
					v.bytes.Add(uint64(k))
					v.readers.Or(1 << smp.Current())
				}
				if err != nil && (err != io.EOF || got < vchanBytes) {
					errs <- fmt.Errorf("%s dir %d: read at %d of %d: %w", name, dir, got, vchanBytes, err)
					return
				}
			}
			if sum.Sum32() != wsum.Sum32() {
				errs <- fmt.Errorf("%s dir %d: CRC-32 %08x, want %08x", name, dir, sum.Sum32(), wsum.Sum32())
			}
		}()
	}
	wg.Wait()
	close(errs)
	err = <-errs
	if cerr := c.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("%s: client close: %w", name, cerr)
	}
	if serr := s.Close(); err == nil && serr != nil {
		err = fmt.Errorf("%s: server close: %w", name, serr)
	}
	if st := hub.Stats(); err == nil && st.String() != "" {
		err = fmt.Errorf("%s: leftover grants after close: %s", name, st)
	}
	return err
}
