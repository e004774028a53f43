//go:build tamago

// Command v4vsession is the V4V test program of the guest tests
// (qemu/v4v_test.go, tierb_test.go, stress_test.go): V4V (Xen's Argo)
// between Gozen domains, one serving, another pinging it, flooding a small
// ring and measuring throughput. apps/v4v-ping is the short example a user
// would copy; this is the engine the tests drive.
//
//	v4vsession -serve                  echo every message back to its source
//	v4vsession -ping DOMID [-count N]  ping-pong N checksummed messages of 1 B to 8 KiB
//	v4vsession -ping DOMID -flood N    stream N numbered messages into a small ring
//	v4vsession -ping DOMID -bench      messages/s and MB/s, one way
//
// Its lines start "v4v-ping: " (the program's former name, which the dom0
// scripts wait for in "v4v-ping: serving"). The client reports each case
// in the guest tests' case-line format (see qemu/guest_test.go), then the
// tally:
//
//	v4v-ping: PASS no-ring ...      a send to a port with no ring fails with ErrNoRing
//	v4v-ping: PASS pingpong ...     (-count) every pong came back intact
//	v4v-ping: PASS flood ...        (-flood) the full ring recovered, nothing lost
//	v4v-ping: PASS bench ...        (-bench) every message arrived
//	v4v-ping: FAIL name: reason
//	v4v-ping: BENCH ...             rates
//	v4v-ping: DONE pass=N fail=M
package main

import (
	"context"
	"encoding/binary"
	"errors"
	"flag"
	"fmt"
	"hash/crc32"
	"math/rand/v2"
	"os"
	"sort"
	"time"

	_ "github.com/gozen-dev/gozen/boot"
	"github.com/gozen-dev/gozen/domid"
	"github.com/gozen-dev/gozen/drivers/v4v"
	"github.com/gozen-dev/gozen/drivers/v4v/argo"
	_ "github.com/gozen-dev/gozen/xenbus/control" // xl shutdown / xl reboot
)

// Ports and message types of the demo protocol.
const (
	echoPort   = 7000 // server: echoes
	sinkPort   = 7001 // server: counts numbered messages (small ring)
	benchPort  = 7002 // server: swallows bench traffic
	clientPort = 7100

	typePing  = 1
	typeFlood = 2
	typeBench = 3
	typeDone  = 4 // end of a flood or bench: server answers with its tally
	typeQuit  = 5
)

func main() {
	serve := flag.Bool("serve", false, "serve: echo, sink and bench ports")
	ping := flag.Int("ping", -1, "ping the server in domain DOMID")
	count := flag.Int("count", 10000, "ping-pongs")
	flood := flag.Int("flood", 0, "stream this many numbered messages into the server's small ring")
	bench := flag.Bool("bench", false, "measure one-way throughput")
	quit := flag.Bool("quit", false, "tell the server to exit when done")
	flag.Parse()

	hv, err := argo.Open()
	if errors.Is(err, v4v.ErrNotSupported) {
		fmt.Println("v4v-ping: Argo not available in this hypervisor:", err)
		os.Exit(3)
	}
	if err != nil {
		fmt.Println("v4v-ping: FAIL argo: opening Argo:", err)
		os.Exit(1)
	}
	fmt.Printf("v4v-ping: Argo ready in domain %d\n", hv.Domain())
	switch {
	case *serve:
		if err := runServer(hv); err != nil {
			fmt.Println("v4v-ping: FAIL server:", err)
			os.Exit(1)
		}
	case *ping >= 0:
		if failed := runClient(hv, domid.ID(*ping), *count, *flood, *bench, *quit); failed > 0 {
			os.Exit(1)
		}
	default:
		fmt.Println("v4v-ping: give -serve or -ping DOMID")
		os.Exit(2)
	}
}

// runServer serves the echo, sink and bench ports until a quit message.
func runServer(hv *argo.Hypervisor) error {
	echo, err := v4v.Listen(v4v.Config{Hypervisor: hv, Port: echoPort, Partner: domid.Any, RingSize: 64 * 1024})
	if err != nil {
		return fmt.Errorf("echo port: %w", err)
	}
	// a ring that holds only a few messages: floods fill it
	sink, err := v4v.Listen(v4v.Config{Hypervisor: hv, Port: sinkPort, Partner: domid.Any, RingSize: 4096})
	if err != nil {
		return fmt.Errorf("sink port: %w", err)
	}
	benchEP, err := v4v.Listen(v4v.Config{Hypervisor: hv, Port: benchPort, Partner: domid.Any, RingSize: 1 << 20})
	if err != nil {
		return fmt.Errorf("bench port: %w", err)
	}
	go drain(sink, true)
	go drain(benchEP, false)
	fmt.Println("v4v-ping: serving on ports", echoPort, sinkPort, benchPort)
	buf := make([]byte, 64*1024)
	for {
		n, m, err := echo.ReadMsg(buf)
		if err != nil {
			return fmt.Errorf("echo read: %w", err)
		}
		if m.Type == typeQuit {
			fmt.Println("v4v-ping: server quitting")
			return nil
		}
		if _, err := echo.Send(context.Background(), m.Source, m.Type, buf[:n]); err != nil {
			return fmt.Errorf("echo to %v: %w", m.Source, err)
		}
	}
}

// drain consumes a port's messages and, on typeDone, answers with the
// number of messages, bytes and (for the sink) order violations seen.
func drain(ep *v4v.Endpoint, slow bool) {
	buf := make([]byte, 64*1024)
	var msgs, bytes, bad uint64
	next := uint64(0)
	for {
		n, m, err := ep.ReadMsg(buf)
		if err != nil {
			fmt.Println("v4v-ping: FAIL drain:", err)
			return
		}
		if m.Type == typeDone {
			var tally [24]byte
			binary.LittleEndian.PutUint64(tally[0:], msgs)
			binary.LittleEndian.PutUint64(tally[8:], bytes)
			binary.LittleEndian.PutUint64(tally[16:], bad)
			ep.Send(context.Background(), m.Source, typeDone, tally[:])
			msgs, bytes, bad, next = 0, 0, 0, 0
			continue
		}
		msgs++
		bytes += uint64(n)
		if slow && n >= 8 {
			if seq := binary.LittleEndian.Uint64(buf); seq != next {
				bad++
			}
			next++
			if msgs%64 == 0 { // a slow reader: the ring fills meanwhile
				time.Sleep(2 * time.Millisecond)
			}
		}
	}
}

// clientCase is one case of the client: run returns the detail of its
// PASS line or the reason it failed.
type clientCase struct {
	name string
	run  func() (string, error)
}

// runClient runs the client's cases in order, one PASS or FAIL line each,
// stopping at the first failure, then the DONE line; it returns the
// number of cases that failed.
func runClient(hv *argo.Hypervisor, server domid.ID, count, flood int, bench, quit bool) int {
	ep, err := v4v.Listen(v4v.Config{Hypervisor: hv, Port: clientPort, Partner: server, RingSize: 64 * 1024})
	if err != nil {
		fmt.Println("v4v-ping: FAIL listen:", err)
		fmt.Println("v4v-ping: DONE pass=0 fail=1")
		return 1
	}
	defer ep.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	cases := []clientCase{{"no-ring", func() (string, error) {
		// a port with no ring: the named error
		_, err := ep.TrySend(v4v.Addr{Domain: server, Port: 9999}, typePing, []byte("x"))
		if !errors.Is(err, v4v.ErrNoRing) {
			return "", fmt.Errorf("send to a port with no ring = %v, want ErrNoRing", err)
		}
		return fmt.Sprintf("send to a port with no ring: %v", err), nil
	}}}
	if count > 0 {
		cases = append(cases, clientCase{"pingpong", func() (string, error) { return pingPong(ctx, ep, server, count) }})
	}
	if flood > 0 {
		cases = append(cases, clientCase{"flood", func() (string, error) { return floodRing(ctx, ep, server, flood) }})
	}
	if bench {
		cases = append(cases, clientCase{"bench", func() (string, error) { return benchmark(ctx, ep, server) }})
	}
	pass, fail := 0, 0
	for _, c := range cases {
		detail, err := c.run()
		if err != nil {
			fmt.Printf("v4v-ping: FAIL %s: %v\n", c.name, err)
			fail++
			break
		}
		fmt.Printf("v4v-ping: PASS %s %s\n", c.name, detail)
		pass++
	}
	if quit {
		ep.Send(ctx, v4v.Addr{Domain: server, Port: echoPort}, typeQuit, []byte("bye"))
	}
	fmt.Printf("v4v-ping: DONE pass=%d fail=%d\n", pass, fail)
	return fail
}

// pingPong sends count checksummed messages of 1 B to 8 KiB to the echo
// port and checks each answer; it prints the round-trip times and rate.
func pingPong(ctx context.Context, ep *v4v.Endpoint, server domid.ID, count int) (string, error) {
	dst := v4v.Addr{Domain: server, Port: echoPort}
	out := make([]byte, 8192)
	in := make([]byte, 8192)
	rng := rand.New(rand.NewPCG(1, 2))
	rtts := make([]time.Duration, 0, count)
	var total int
	start := time.Now()
	for i := 0; i < count; i++ {
		size := 1 + i%8192
		if i%2 == 1 {
			size = 1 + rng.IntN(8192)
		}
		for j := range out[:size] {
			out[j] = byte(rng.Uint32())
		}
		want := crc32.ChecksumIEEE(out[:size])
		t0 := time.Now()
		if _, err := ep.Send(ctx, dst, typePing, out[:size]); err != nil {
			return "", fmt.Errorf("ping %d: %w", i, err)
		}
		n, m, err := ep.ReadMsg(in)
		if err != nil {
			return "", fmt.Errorf("pong %d: %w", i, err)
		}
		rtts = append(rtts, time.Since(t0))
		if m.Source != dst {
			return "", fmt.Errorf("pong %d came from %v, want %v", i, m.Source, dst)
		}
		if m.Type != typePing || n != size || crc32.ChecksumIEEE(in[:n]) != want {
			return "", fmt.Errorf("pong %d: type %d, %d bytes (want %d), checksum mismatch", i, m.Type, n, size)
		}
		total += 2 * size
	}
	el := time.Since(start)
	sort.Slice(rtts, func(a, b int) bool { return rtts[a] < rtts[b] })
	fmt.Printf("v4v-ping: rtt min %v median %v p99 %v max %v\n", rtts[0], rtts[len(rtts)/2], rtts[len(rtts)*99/100], rtts[len(rtts)-1])
	fmt.Printf("v4v-ping: BENCH pingpong %.0f msgs/s %.2f MB/s\n", float64(2*count)/el.Seconds(), float64(total)/el.Seconds()/1e6)
	return fmt.Sprintf("%d ping-pongs of 1 B to 8 KiB, all checksummed, source %v as Xen reported it", count, dst), nil
}

// tally asks a drain port for its counts.
func tally(ctx context.Context, ep *v4v.Endpoint, dst v4v.Addr) (msgs, bytes, bad uint64, err error) {
	if _, err := ep.Send(ctx, dst, typeDone, []byte("done")); err != nil {
		return 0, 0, 0, err
	}
	buf := make([]byte, 64)
	n, m, err := ep.ReadMsg(buf)
	if err != nil {
		return 0, 0, 0, err
	}
	if m.Type != typeDone || n != 24 {
		return 0, 0, 0, fmt.Errorf("bad tally reply: type %d, %d bytes", m.Type, n)
	}
	return binary.LittleEndian.Uint64(buf), binary.LittleEndian.Uint64(buf[8:]), binary.LittleEndian.Uint64(buf[16:]), nil
}

// floodRing streams n numbered messages into the server's 4 KiB sink
// ring, waiting for the space notification whenever it is full, and
// checks that the server got each once, in order.
func floodRing(ctx context.Context, ep *v4v.Endpoint, server domid.ID, n int) (string, error) {
	dst := v4v.Addr{Domain: server, Port: sinkPort}
	msg := make([]byte, 1000)
	wouldBlock := 0
	for i := 0; i < n; i++ {
		binary.LittleEndian.PutUint64(msg, uint64(i))
		_, err := ep.TrySend(dst, typeFlood, msg)
		if errors.Is(err, v4v.ErrWouldBlock) {
			wouldBlock++
			// wait for the space notification
			_, err = ep.Send(ctx, dst, typeFlood, msg)
		}
		if err != nil {
			return "", fmt.Errorf("message %d: %w", i, err)
		}
	}
	msgs, _, bad, err := tally(ctx, ep, dst)
	if err != nil {
		return "", fmt.Errorf("tally: %w", err)
	}
	if msgs != uint64(n) || bad != 0 {
		return "", fmt.Errorf("server got %d of %d messages, %d out of order or duplicated", msgs, n, bad)
	}
	if wouldBlock == 0 {
		return "", fmt.Errorf("flood of %d messages never filled the 4 KiB ring", n)
	}
	return fmt.Sprintf("of %d messages: ring full %d times, each recovered through the space notification, none lost or duplicated", n, wouldBlock), nil
}

// benchmark streams 64 B, then 8 KiB messages to the bench port for 3 s
// each and prints the rates the server counted.
func benchmark(ctx context.Context, ep *v4v.Endpoint, server domid.ID) (string, error) {
	dst := v4v.Addr{Domain: server, Port: benchPort}
	for _, size := range []int{64, 8192} {
		msg := make([]byte, size)
		const dur = 3 * time.Second
		sent := 0
		start := time.Now()
		for time.Since(start) < dur {
			if _, err := ep.Send(ctx, dst, typeBench, msg); err != nil {
				return "", fmt.Errorf("send: %w", err)
			}
			sent++
		}
		msgs, bytes, _, err := tally(ctx, ep, dst)
		el := time.Since(start)
		if err != nil {
			return "", fmt.Errorf("tally: %w", err)
		}
		if msgs != uint64(sent) {
			return "", fmt.Errorf("server got %d of %d messages of %d bytes", msgs, sent, size)
		}
		fmt.Printf("v4v-ping: BENCH stream size=%d %.0f msgs/s %.2f MB/s\n", size, float64(msgs)/el.Seconds(), float64(bytes)/el.Seconds()/1e6)
	}
	return "every message of the 64 B and 8 KiB streams arrived", nil
}
