//go:build tamago

// Command vchan-echo is a vchan server in a Gozen domain: it offers a
// libxenvchan channel to one client domain and echoes back whatever the
// client sends, one client after another, until the domain is shut down.
//
//	vchan-echo [-peer DOMID] [-port NAME]
//
// The channel is advertised where libxenvchan clients look for it,
// /local/domain/<this domain>/data/vchan/<peer>/<port>. From dom0 (the
// default peer), Xen's vchan-socket-proxy connects a terminal to it:
//
//	vchan-socket-proxy <domid> /local/domain/<domid>/data/vchan/0/echo -
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/gozen-dev/gozen/boot"
	"github.com/gozen-dev/gozen/domid"
	"github.com/gozen-dev/gozen/drivers/vchan"
	"github.com/gozen-dev/gozen/platform"
	"github.com/gozen-dev/gozen/xenbus/control"
)

func main() {
	peer := flag.Uint("peer", 0, "the client's domain")
	port := flag.String("port", "echo", "the channel's name (the last element of its xenstore path)")
	flag.Parse()

	id, ok := boot.DomID()
	if !ok {
		fail("domid", errors.New("Xen did not give this domain's id"))
	}
	self, client := domid.ID(id), domid.ID(*peer)
	mem, err := platform.Domain().Grants()
	if err != nil {
		fail("grant tables", err)
	}
	xs, err := platform.Domain().Store()
	if err != nil {
		fail("xenstore", err)
	}
	cfg := vchan.Config{
		Events: platform.Domain().Events(),
		Memory: mem,
		Store:  vchan.NewXenStore(xs, self), // nodes readable by the client only
		Remote: client,
		Self:   self,
		Path:   vchan.ServerPath(client, *port),
	}

	ctx := control.Context() // canceled by xl shutdown
	for ctx.Err() == nil {
		l, err := vchan.Listen(ctx, cfg) // grants the rings, writes the xenstore nodes
		if err != nil && ctx.Err() == nil {
			fail("listen at "+cfg.Path, err)
		} else if err != nil {
			return
		}
		fmt.Printf("vchan-echo: waiting for domain %d at %s/%s\n", client, xs.Home(), cfg.Path)
		conn, err := l.Accept(ctx)
		if err != nil {
			l.Close()
			if ctx.Err() == nil {
				fmt.Println("vchan-echo:", err)
			}
			continue
		}
		echo(ctx, conn)
	}
}

// echo writes back what the client sends until it closes (or ctx is
// canceled), then closes the channel.
func echo(ctx context.Context, conn *vchan.Conn) {
	defer conn.Close()
	defer context.AfterFunc(ctx, func() { conn.Close() })()
	n, err := io.Copy(conn, conn)
	if err != nil && ctx.Err() == nil {
		fmt.Println("vchan-echo:", err)
	}
	fmt.Printf("vchan-echo: echoed %d bytes\n", n)
}

func fail(what string, err error) {
	fmt.Printf("vchan-echo: %s: %v\n", what, err)
	os.Exit(1)
}
