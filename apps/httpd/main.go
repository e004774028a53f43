//go:build tamago

// Command httpd is a web server appliance: the domain's vif under Go's own
// net/http. Its address comes from DHCP, or from the command line (xl's
// extra="ip=10.0.0.2/24 gw=10.0.0.1 dns=10.0.0.1").
package main

import (
	"context"
	"fmt"
	"log"
	"net/http"
	"time"

	"github.com/gozen-dev/gozen/network"
	_ "github.com/gozen-dev/gozen/xenbus/control" // xl shutdown / xl reboot
)

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
	log.Print("httpd: listening on :80")
	log.Fatal(http.ListenAndServe(":80", nil))
}
