//go:build linux

package main

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strconv"
	"time"

	"github.com/gozen-dev/gozen/internal/teststream"
)

// keepAlive GETs URL over one keep-alive connection every INTERVAL_MS for
// SECS seconds (or until the file STOPFILE, if given, exists), each request waiting up to a minute (a guest being saved,
// restored or migrated answers late), and prints
//
//	GOZEN-KEEPALIVE requests=N errors=E dials=D maxgap_ms=G
//
// It speaks HTTP/1.1 on a TCP connection of its own rather than through
// net/http's Transport, which silently retries a GET on a new connection
// when a reused one breaks: here a broken connection is an error, printed
// with its cause and time, and the next request dials again. dials=1 means
// one TCP connection carried every request; maxgap_ms is the longest time
// between two answers (the downtime the client saw).
func keepAlive(args []string) error {
	if len(args) != 3 && len(args) != 4 {
		return errors.New("want URL SECS INTERVAL_MS [STOPFILE]")
	}
	stopped := func() bool {
		if len(args) < 4 {
			return false
		}
		_, err := os.Stat(args[3])
		return err == nil
	}
	secs, err1 := strconv.ParseFloat(args[1], 64)
	ms, err2 := strconv.Atoi(args[2])
	if err1 != nil || err2 != nil || ms < 1 {
		return errors.New("bad SECS or INTERVAL_MS")
	}
	u, err := url.Parse(args[0])
	if err != nil || u.Scheme != "http" || u.Host == "" {
		return fmt.Errorf("bad URL %q", args[0])
	}
	addr := u.Host
	if u.Port() == "" {
		addr = net.JoinHostPort(u.Hostname(), "80")
	}
	req := fmt.Sprintf("GET %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: dom0tool-keepalive\r\n\r\n", u.RequestURI(), u.Host)
	var (
		conn  net.Conn
		br    *bufio.Reader
		dials int
	)
	get := func() error {
		if conn == nil {
			c, err := net.DialTimeout("tcp", addr, 30*time.Second)
			dials++
			if err != nil {
				return fmt.Errorf("dial %d: %w", dials, err)
			}
			conn, br = c, bufio.NewReader(c)
		}
		conn.SetDeadline(time.Now().Add(time.Minute))
		if _, err := io.WriteString(conn, req); err != nil {
			return fmt.Errorf("writing the request on connection %d: %w", dials, err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			return fmt.Errorf("reading the answer on connection %d: %w", dials, err)
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if err != nil {
			return fmt.Errorf("reading the body on connection %d: %w", dials, err)
		}
		if resp.StatusCode != http.StatusOK {
			return fmt.Errorf("status %s", resp.Status)
		}
		if resp.Close {
			return fmt.Errorf("the server closed connection %d (Connection: close)", dials)
		}
		return nil
	}
	end := time.Now().Add(time.Duration(secs * float64(time.Second)))
	last := time.Now()
	var reqs, errs int
	var gap time.Duration
	for time.Now().Before(end) && !stopped() {
		err := get()
		now := time.Now()
		if err != nil {
			errs++
			fmt.Fprintf(os.Stderr, "dom0tool keepalive: %s: %v\n", now.Format("15:04:05.000"), err)
			if conn != nil {
				conn.Close()
				conn = nil
			}
		} else {
			reqs++
			gap = max(gap, now.Sub(last))
			last = now
		}
		time.Sleep(time.Duration(ms) * time.Millisecond)
	}
	if conn != nil {
		conn.Close()
	}
	fmt.Printf("GOZEN-KEEPALIVE requests=%d errors=%d dials=%d maxgap_ms=%d\n", reqs, errs, dials, gap.Milliseconds())
	return nil
}

// seqCheck checks the first N records of qemu/guests/survive in FILE:
// record i (4 KiB at i*4096) holds i, the guest's resume count when it was
// written, then the test stream of seed i+1. It prints
//
//	GOZEN-SEQCHECK PASS N records, by resume count: 0:A 1:B ...
//
// or GOZEN-SEQCHECK FAIL with the first bad record.
func seqCheck(args []string) error {
	if len(args) != 2 {
		return errors.New("want FILE N")
	}
	n, err := strconv.ParseInt(args[1], 10, 64)
	if err != nil || n < 0 {
		return errors.New("bad N")
	}
	f, err := os.Open(args[0])
	if err != nil {
		return err
	}
	defer f.Close()
	const size = 4096
	buf, want := make([]byte, size), make([]byte, size)
	byResume := map[uint64]int64{}
	for i := int64(0); i < n; i++ {
		if _, err := f.ReadAt(buf, i*size); err != nil {
			fmt.Printf("GOZEN-SEQCHECK FAIL record %d: %v\n", i, err)
			return nil
		}
		teststream.New(uint64(i) + 1).Fill(want)
		got, resumes := binary.LittleEndian.Uint64(buf[0:]), binary.LittleEndian.Uint64(buf[8:])
		if got != uint64(i) || !bytes.Equal(buf[16:], want[16:]) {
			fmt.Printf("GOZEN-SEQCHECK FAIL record %d: holds number %d, stream intact %v\n", i, got, bytes.Equal(buf[16:], want[16:]))
			return nil
		}
		byResume[resumes]++
	}
	var keys []uint64
	for k := range byResume {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(a, b int) bool { return keys[a] < keys[b] })
	s := ""
	for _, k := range keys {
		s += fmt.Sprintf(" %d:%d", k, byResume[k])
	}
	fmt.Printf("GOZEN-SEQCHECK PASS %d records, by resume count:%s\n", n, s)
	return nil
}
