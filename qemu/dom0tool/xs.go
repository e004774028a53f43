//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/gozen-dev/gozen/xenbus"
	"github.com/gozen-dev/gozen/xenbus/xslinux"
)

// xsRead prints the xenstore node PATH (relative to the domain's home, as
// "domid") through the kernel's /dev/xen/xenbus or xenstored's socket: a
// Linux domU's init learns its domid this way, having no xenstore tools.
func xsRead(args []string) error {
	if len(args) != 1 {
		return errors.New("want PATH")
	}
	conn, err := xslinux.Open()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	xs, err := xenbus.DialTransport(ctx, conn)
	if err != nil {
		return err
	}
	defer xs.Close()
	v, err := xs.Read(ctx, args[0])
	if err != nil {
		return err
	}
	fmt.Println(string(v))
	return nil
}
