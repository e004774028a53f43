// Command httpd is a web server appliance: the domain's vif under Go's own
// net/http. Its address comes from DHCP, or from the command line (xl's
// extra="ip=10.0.0.2/24 gw=10.0.0.1 dns=10.0.0.1"). The network survives
// xl network-detach and network-attach. GET /status returns a JSON
// report: uptime, memory, addressing, link and stack counters.
//
// The same program builds for linux/amd64 (GOOS=linux go build), where the
// operating system's network is used: it is the reference the benchmarks
// run in a Linux domU against the Gozen build.
package main

import (
	"encoding/json"
	"fmt"
	"log"
	"net/http"
	"runtime"
	"time"
)

var start = time.Now()

// addressing is how the appliance got its address.
type addressing struct {
	Source  string   `json:"source"`
	Addr    string   `json:"addr"`
	Gateway string   `json:"gateway,omitempty"`
	DNS     []string `json:"dns,omitempty"`
	Lease   string   `json:"lease,omitempty"`
}

// platform is what the appliance asks of the network it runs on: the
// Gozen stack (net_tamago.go) or the operating system's (net_os.go).
type platform interface {
	// Addressing reports the address and where it came from.
	Addressing() addressing
	// Counters returns the link's and the stack's counters, nil where the
	// platform has none of its own.
	Counters() (link, stack any)
}

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
	Addressing addressing `json:"addressing"`
	Link       any        `json:"link,omitempty"`
	Stack      any        `json:"stack,omitempty"`
}

func main() {
	p, err := up()
	if err != nil {
		log.Fatal(err)
	}
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "Hello from Gozen at %s: you asked for %s\n", p.Addressing().Addr, r.URL.Path)
	})
	http.HandleFunc("/status", func(w http.ResponseWriter, r *http.Request) {
		var s status
		up := time.Since(start)
		s.Uptime, s.UptimeSec = up.Round(time.Second).String(), int64(up.Seconds())
		s.Goroutines = runtime.NumGoroutine()
		var m runtime.MemStats
		runtime.ReadMemStats(&m)
		s.Memory.HeapAlloc, s.Memory.Sys, s.Memory.NumGC = m.HeapAlloc, m.Sys, m.NumGC
		s.Addressing = p.Addressing()
		s.Link, s.Stack = p.Counters()
		w.Header().Set("Content-Type", "application/json")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(&s)
	})
	log.Print("httpd: listening on :80")
	log.Fatal(http.ListenAndServe(":80", nil))
}
