//go:build linux

package main

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"time"
)

// pingGap sends an ICMP echo request to HOST every INTERVAL_MS until the
// file STOPFILE exists (or SECS pass) and prints
//
//	GOZEN-PINGGAP sent=N replies=R maxgap_ms=G
//
// G is the longest time between two replies: how long the host could not
// be reached, with no retransmission back-off in the way (unlike a TCP
// client's). It needs a raw socket (root).
func pingGap(args []string) error {
	if len(args) != 4 {
		return errors.New("want HOST SECS INTERVAL_MS STOPFILE")
	}
	secs, err1 := strconv.ParseFloat(args[1], 64)
	ms, err2 := strconv.Atoi(args[2])
	if err1 != nil || err2 != nil || ms < 1 {
		return errors.New("bad SECS or INTERVAL_MS")
	}
	dst, err := net.ResolveIPAddr("ip4", args[0])
	if err != nil {
		return err
	}
	c, err := net.ListenPacket("ip4:icmp", "0.0.0.0")
	if err != nil {
		return fmt.Errorf("raw ICMP socket: %w", err)
	}
	defer c.Close()
	id := uint16(os.Getpid())
	var (
		mu      sync.Mutex
		last    = time.Now()
		gap     time.Duration
		replies int
	)
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 1500)
		for {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			// The kernel hands a raw ICMP socket the ICMP message.
			if n < 8 || buf[0] != 0 || binary.BigEndian.Uint16(buf[4:]) != id || from.String() != dst.String() {
				continue
			}
			now := time.Now()
			mu.Lock()
			gap = max(gap, now.Sub(last))
			last = now
			replies++
			mu.Unlock()
		}
	}()
	end := time.Now().Add(time.Duration(secs * float64(time.Second)))
	var seq uint16
	sent := 0
	for time.Now().Before(end) {
		if _, err := os.Stat(args[3]); err == nil {
			break
		}
		seq++
		if _, err := c.WriteTo(echoRequest(id, seq), dst); err == nil {
			sent++
		}
		time.Sleep(time.Duration(ms) * time.Millisecond)
	}
	time.Sleep(time.Second) // the last replies
	c.Close()
	<-done
	mu.Lock()
	defer mu.Unlock()
	fmt.Printf("GOZEN-PINGGAP sent=%d replies=%d maxgap_ms=%d\n", sent, replies, gap.Milliseconds())
	return nil
}

// echoRequest is an ICMP echo request with identifier id and sequence seq.
func echoRequest(id, seq uint16) []byte {
	b := make([]byte, 16)
	b[0] = 8 // echo request
	binary.BigEndian.PutUint16(b[4:], id)
	binary.BigEndian.PutUint16(b[6:], seq)
	binary.BigEndian.PutUint16(b[2:], icmpChecksum(b))
	return b
}

// icmpChecksum is the Internet checksum of b (RFC 1071).
func icmpChecksum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}
