//go:build tamago

// Command v4v-ping is ping over V4V (Xen's Argo) between two Gozen domains:
// one domain answers, the other sends pings to it and prints each
// round-trip time. V4V endpoints are net.PacketConns whose addresses are
// a domain and a port.
//
//	v4v-ping -serve                  answer pings on port 7000
//	v4v-ping -ping DOMID [-count N]  ping the server in domain DOMID N times
//
// The hypervisor must be built with Argo and booted with
// argo=1,mac-permissive=1 (see v4v-ping.cfg).
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	_ "github.com/gozen-dev/gozen/boot"
	"github.com/gozen-dev/gozen/domid"
	"github.com/gozen-dev/gozen/drivers/v4v"
	"github.com/gozen-dev/gozen/drivers/v4v/argo"
	_ "github.com/gozen-dev/gozen/xenbus/control" // xl shutdown / xl reboot
)

// serverPort is where the server answers; the client listens on
// serverPort+1 for the pongs.
const serverPort = 7000

func main() {
	serve := flag.Bool("serve", false, "answer pings")
	ping := flag.Int("ping", -1, "ping the server in domain DOMID")
	count := flag.Int("count", 5, "pings to send")
	flag.Parse()

	hv, err := argo.Open()
	if errors.Is(err, v4v.ErrNotSupported) {
		fail(fmt.Errorf("Argo is not available in this hypervisor: %w", err))
	} else if err != nil {
		fail(err)
	}
	switch {
	case *serve:
		fail(pong(hv))
	case *ping >= 0:
		if err := pings(hv, v4v.Addr{Domain: domid.ID(*ping), Port: serverPort}, *count); err != nil {
			fail(err)
		}
	default:
		fail(errors.New("give -serve or -ping DOMID"))
	}
}

// pong sends every message on serverPort back to where it came from.
func pong(hv *argo.Hypervisor) error {
	ep, err := v4v.Listen(v4v.Config{Hypervisor: hv, Port: serverPort, Partner: domid.Any})
	if err != nil {
		return err
	}
	fmt.Printf("v4v-ping: answering pings at %v\n", ep.LocalAddr())
	buf := make([]byte, ep.MaxPayload())
	for {
		n, from, err := ep.ReadFrom(buf)
		if err != nil {
			return err
		}
		if _, err := ep.WriteTo(buf[:n], from); err != nil {
			return err
		}
	}
}

// pings sends count pings to server, one a second, and prints the time
// each took to come back.
func pings(hv *argo.Hypervisor, server v4v.Addr, count int) error {
	ep, err := v4v.Listen(v4v.Config{Hypervisor: hv, Port: serverPort + 1, Partner: server.Domain})
	if err != nil {
		return err
	}
	defer ep.Close()
	buf := make([]byte, 64)
	for i := 1; i <= count; i++ {
		msg := fmt.Appendf(nil, "ping %d", i)
		start := time.Now()
		if _, err := ep.WriteTo(msg, server); err != nil {
			return err
		}
		ep.SetReadDeadline(time.Now().Add(5 * time.Second))
		n, from, err := ep.ReadFrom(buf)
		if err != nil {
			return err
		}
		if !bytes.Equal(buf[:n], msg) {
			return fmt.Errorf("%v answered %q to %q", from, buf[:n], msg)
		}
		fmt.Printf("v4v-ping: %d bytes from %v: seq=%d time=%v\n", n, from, i, time.Since(start))
		if i < count {
			time.Sleep(time.Second)
		}
	}
	return nil
}

func fail(err error) {
	fmt.Println("v4v-ping:", err)
	os.Exit(1)
}
