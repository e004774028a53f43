//go:build tamago

// Command httpd is a web server appliance: the domain's vif under Go's own
// net/http. Its address comes from DHCP, or from the command line (xl's
// extra="ip=10.0.0.2/24 gw=10.0.0.1 dns=10.0.0.1"). The network survives
// xl network-detach and network-attach. GET /status returns a JSON
// report: uptime, memory, addressing, link and stack counters.
package main

import (
	"context"
	"encoding/json"
	"fmt"
	"log"
	"net/http"
	"runtime"
	"time"

	"github.com/gozen-dev/gozen/netstack"
	"github.com/gozen-dev/gozen/network"
	_ "github.com/gozen-dev/gozen/xenbus/control" // xl shutdown / xl reboot
)

var start = time.Now()

// status is the JSON of /status.
type status struct {
	Uptime     string `json:"uptime"`
	UptimeSec  int64  `json:"uptime_seconds"`
	Goroutines int    `json:"goroutines"`
	Memory     struct {
		HeapAlloc uint64 `json:"heap_alloc"`
		Sys       uint64 `json:"sys"`
		NumGC     uint32 `json:"num_gc"`
	} `json:"memory"`
	Addressing struct {
		Source  string   `json:"source"`
		Addr    string   `json:"addr"`
		Gateway string   `json:"gateway,omitempty"`
		DNS     []string `json:"dns,omitempty"`
		Lease   string   `json:"lease,omitempty"`
	} `json:"addressing"`
	Link  network.LinkStats `json:"link"`
	Stack netstack.Stats    `json:"stack"`
}

func main() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	n, err := network.Up(ctx)
	cancel()
	if err != nil {
		log.Fatal(err)
	}
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "Hello from Gozen at %s: you asked for %s\n", n.Stack.Addressing().Addr, r.URL.Path)
	})
	http.HandleFunc("/status", func(w http.ResponseWriter, r *http.Request) {
		var s status
		up := time.Since(start)
		s.Uptime, s.UptimeSec = up.Round(time.Second).String(), int64(up.Seconds())
		s.Goroutines = runtime.NumGoroutine()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		s.Memory.HeapAlloc, s.Memory.Sys, s.Memory.NumGC = m.HeapAlloc, m.Sys, m.NumGC
		a := n.Stack.Addressing()
		s.Addressing.Source, s.Addressing.Addr = a.Source, a.Addr.String()
		if a.Gateway.IsValid() {
			s.Addressing.Gateway = a.Gateway.String()
		}
		for _, d := range a.DNS {
			s.Addressing.DNS = append(s.Addressing.DNS, d.String())
		}
		if a.Lease > 0 {
			s.Addressing.Lease = a.Lease.String()
		}
		s.Link, s.Stack = n.Link.Stats(), n.Stack.Stats()
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(&s)
	})
	log.Print("httpd: listening on :80")
	log.Fatal(http.ListenAndServe(":80", nil))
}
