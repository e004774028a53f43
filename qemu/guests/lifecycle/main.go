//go:build tamago

// Command lifecycle is a guest-test program for xenbus/control: it waits
// for the toolstack's shutdown or reboot request, shows that the shutdown
// hook and the context both fire, and returns from main so the domain
// goes down the way the request said.
package main

import (
	"context"
	"fmt"
	"time"

	"github.com/gozen-dev/gozen/platform"
	"github.com/gozen-dev/gozen/xenbus/control"
)

func main() {
	start := time.Now()
	domid := "?"
	if xs, err := platform.Domain().Store(); err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		domid, _ = xs.ReadString(ctx, "domid")
		cancel()
	}
	fmt.Printf("lifecycle: up as domain %s\n", domid)
	control.OnShutdown(func(ctx context.Context, r control.Request) {
		dl, _ := ctx.Deadline()
		fmt.Printf("lifecycle: hook: %s (%s), deadline in %v\n", r.Command, r.Action, time.Until(dl).Round(100*time.Millisecond))
		time.Sleep(100 * time.Millisecond) // some cleaning up
		fmt.Println("lifecycle: hook done")
	})
	ctx := control.Context()
	select {
	case <-control.Ready():
		fmt.Println("lifecycle: ready: answering control/shutdown")
	case <-time.After(20 * time.Second):
		fmt.Println("lifecycle: FAIL control: never became ready")
		return
	}
	<-ctx.Done()
	fmt.Printf("lifecycle: context canceled after %v: %v\n", time.Since(start).Round(time.Millisecond), context.Cause(ctx))
	time.Sleep(300 * time.Millisecond) // let the hook finish; main's return ends the domain
	fmt.Println("lifecycle: main returns")
}
