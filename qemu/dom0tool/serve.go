//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gozen-dev/gozen/internal/teststream"
)

// serveBlob serves /blob (the first N bytes of the test stream of SEED)
// and /quit on ADDR, printing GOZEN-SERVING once it listens; it returns
// when /quit is asked for. The Linux reference guest of the benchmarks
// runs it, as qemu/guests/nettest serves the same in a Gozen guest.
func serveBlob(args []string) error {
	addr, n, seed, err := parseBlobArgs(args)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	quit := make(chan struct{})
	var once sync.Once
	mux := http.NewServeMux()
	mux.HandleFunc("/blob", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.FormatInt(n, 10))
		s := teststream.New(seed)
		buf := make([]byte, 64<<10)
		for left := n; left > 0; {
			c := min(left, int64(len(buf)))
			s.Fill(buf[:c])
			if _, err := w.Write(buf[:c]); err != nil {
				return
			}
			left -= c
		}
	})
	mux.HandleFunc("/quit", func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "bye\n")
		once.Do(func() { close(quit) })
	})
	srv := &http.Server{Handler: mux}
	go srv.Serve(ln)
	fmt.Println("GOZEN-SERVING", addr)
	<-quit
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return srv.Shutdown(ctx)
}

// httpLoad sends GET URL from CONC keep-alive connections for SECS seconds
// and prints "GOZEN-HLOAD url requests secs req/s errors".
func httpLoad(args []string) error {
	if len(args) != 3 {
		return errors.New("want URL CONC SECS")
	}
	conc, err1 := strconv.Atoi(args[1])
	secs, err2 := strconv.ParseFloat(args[2], 64)
	if err1 != nil || err2 != nil || conc < 1 {
		return errors.New("bad CONC or SECS")
	}
	tr := &http.Transport{MaxIdleConnsPerHost: conc, MaxConnsPerHost: conc}
	c := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	var reqs, errs atomic.Int64
	deadline := time.Now().Add(time.Duration(secs * float64(time.Second)))
	start := time.Now()
	var wg sync.WaitGroup
	for range conc {
		wg.Go(func() {
			for time.Now().Before(deadline) {
				resp, err := c.Get(args[0])
				if err != nil {
					errs.Add(1)
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					reqs.Add(1)
				} else {
					errs.Add(1)
				}
			}
		})
	}
	wg.Wait()
	d := time.Since(start).Seconds()
	fmt.Printf("GOZEN-HLOAD %s %d %.2f %.1f %d\n", args[0], reqs.Load(), d, float64(reqs.Load())/d, errs.Load())
	return nil
}

// proxy relays TCP connections accepted on LISTEN to TARGET until killed
// (make run's way from the host, through QEMU's port forward and dom0, to
// a guest on the bridge).
func proxy(args []string) error {
	if len(args) != 2 {
		return errors.New("want LISTEN TARGET")
	}
	ln, err := net.Listen("tcp", args[0])
	if err != nil {
		return err
	}
	for {
		c, err := ln.Accept()
		if err != nil {
			return err
		}
		go func() {
			defer c.Close()
			t, err := net.DialTimeout("tcp", args[1], 10*time.Second)
			if err != nil {
				return
			}
			defer t.Close()
			done := make(chan struct{}, 2)
			go func() { io.Copy(t, c); t.(*net.TCPConn).CloseWrite(); done <- struct{}{} }()
			go func() { io.Copy(c, t); c.(*net.TCPConn).CloseWrite(); done <- struct{}{} }()
			<-done
			<-done
		}()
	}
}
