//go:build linux

package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/dns/dnsmessage"

	"github.com/gozen-dev/gozen/internal/teststream"
)

func parseBlobArgs(args []string) (string, int64, uint64, error) {
	if len(args) != 3 {
		return "", 0, 0, errors.New("want 3 arguments")
	}
	n, err := strconv.ParseInt(args[1], 0, 64)
	if err != nil || n < 0 {
		return "", 0, 0, fmt.Errorf("bad size %q", args[1])
	}
	seed, err := strconv.ParseUint(args[2], 0, 64)
	if err != nil {
		return "", 0, 0, fmt.Errorf("bad seed %q", args[2])
	}
	return args[0], n, seed, nil
}

func blob(args []string) error {
	path, n, seed, err := parseBlobArgs(args)
	if err != nil {
		return err
	}
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	s := teststream.New(seed)
	buf := make([]byte, 64<<10)
	for left := n; left > 0; {
		c := min(left, int64(len(buf)))
		s.Fill(buf[:c])
		if _, err := f.Write(buf[:c]); err != nil {
			f.Close()
			return err
		}
		left -= c
	}
	return f.Close()
}

// fetch GETs a test-stream blob and checks it.
func fetch(args []string) error {
	url, n, seed, err := parseBlobArgs(args)
	if err != nil {
		return err
	}
	c := &http.Client{Timeout: 5 * time.Minute}
	start := time.Now()
	resp, err := c.Get(url)
	if err != nil {
		fmt.Printf("GOZEN-FETCH FAIL %s: %v\n", url, err)
		return nil
	}
	defer resp.Body.Close()
	s := teststream.New(seed)
	buf, want := make([]byte, 64<<10), make([]byte, 64<<10)
	var got int64
	for {
		k, err := resp.Body.Read(buf)
		if k > 0 {
			s.Fill(want[:k])
			if got+int64(k) > n || !bytes.Equal(buf[:k], want[:k]) {
				fmt.Printf("GOZEN-FETCH FAIL %s: body differs from the test stream at or after byte %d\n", url, got)
				return nil
			}
			got += int64(k)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			fmt.Printf("GOZEN-FETCH FAIL %s: after %d bytes: %v\n", url, got, err)
			return nil
		}
	}
	d := time.Since(start)
	if got != n {
		fmt.Printf("GOZEN-FETCH FAIL %s: %d bytes, want %d\n", url, got, n)
		return nil
	}
	fmt.Printf("GOZEN-FETCH PASS %s %d bytes in %.3fs %.1f MB/s status %d\n", url, got, d.Seconds(), float64(got)/d.Seconds()/1e6, resp.StatusCode)
	return nil
}

func get(args []string) error {
	if len(args) != 1 {
		return errors.New("want URL")
	}
	c := &http.Client{Timeout: time.Minute}
	resp, err := c.Get(args[0])
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, err = io.Copy(os.Stdout, resp.Body)
	return err
}

func udpEcho(args []string) error {
	if len(args) != 1 {
		return errors.New("want ADDR")
	}
	pc, err := net.ListenPacket("udp", args[0])
	if err != nil {
		return err
	}
	buf := make([]byte, 65536)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return err
		}
		pc.WriteTo(buf[:n], from)
	}
}

// dnsServe answers A queries for the names given (NXDOMAIN otherwise).
func dnsServe(args []string) error {
	if len(args) < 1 {
		return errors.New("want ADDR NAME=IP...")
	}
	names := map[string][4]byte{}
	for _, a := range args[1:] {
		k, v, ok := strings.Cut(a, "=")
		ip, err := netip.ParseAddr(v)
		if !ok || err != nil || !ip.Is4() {
			return fmt.Errorf("bad NAME=IP %q", a)
		}
		names[strings.ToLower(strings.TrimSuffix(k, "."))+"."] = ip.As4()
	}
	pc, err := net.ListenPacket("udp", args[0])
	if err != nil {
		return err
	}
	buf := make([]byte, 1500)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return err
		}
		var p dnsmessage.Parser
		h, err := p.Start(buf[:n])
		if err != nil {
			continue
		}
		q, err := p.Question()
		if err != nil {
			continue
		}
		rh := dnsmessage.Header{ID: h.ID, Response: true, Authoritative: true, RecursionDesired: h.RecursionDesired}
		ip, ok := names[strings.ToLower(q.Name.String())]
		if !ok {
			rh.RCode = dnsmessage.RCodeNameError
		}
		b := dnsmessage.NewBuilder(nil, rh)
		b.EnableCompression()
		b.StartQuestions()
		b.Question(q)
		if ok && q.Type == dnsmessage.TypeA {
			b.StartAnswers()
			b.AResource(dnsmessage.ResourceHeader{Name: q.Name, Class: dnsmessage.ClassINET, TTL: 60}, dnsmessage.AResource{A: ip})
		}
		msg, err := b.Finish()
		if err != nil {
			continue
		}
		pc.WriteTo(msg, from)
	}
}

// cpuTime reads domain NAME's CPU seconds from xl list twice, SECS apart.
func cpuTime(args []string) error {
	if len(args) != 2 {
		return errors.New("want NAME SECS")
	}
	secs, err := strconv.ParseFloat(args[1], 64)
	if err != nil {
		return err
	}
	t0, err := xlTime(args[0])
	if err != nil {
		return err
	}
	start := time.Now()
	time.Sleep(time.Duration(secs * float64(time.Second)))
	t1, err := xlTime(args[0])
	if err != nil {
		return err
	}
	fmt.Printf("GOZEN-CPUTIME %s %.1f over %.1f\n", args[0], t1-t0, time.Since(start).Seconds())
	return nil
}

// xlTime returns the Time(s) column of xl list for domain name.
func xlTime(name string) (float64, error) {
	out, err := exec.Command("xl", "list", name).Output()
	if err != nil {
		return 0, fmt.Errorf("xl list %s: %w", name, err)
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 6 && f[0] == name {
			return strconv.ParseFloat(f[len(f)-1], 64)
		}
	}
	return 0, fmt.Errorf("xl list %s: no line for the domain in %q", name, out)
}
