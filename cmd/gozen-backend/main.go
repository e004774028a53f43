//go:build linux

// Command gozen-backend serves a guest's disk or network device from a
// Linux dom0's user space with Gozen's Go backends (drivers/blkback,
// drivers/netback), in place of the kernel's xen-blkback and xen-netback.
//
//	gozen-backend vbd -domid D -file IMG [-id 51712|-vdev xvda] [-ro] [-persistent] [-indirect N] [-ring-order N] [-queues N] [-poll D] [-discard=false]
//	gozen-backend vif -domid D -mac M [-id 0] [-tap NAME] [-bridge BR] [-queues N]
//
// Each run creates one device as a toolstack's hot-plug does (the
// frontend directory /local/domain/D/device/<class>/<id> and the backend
// directory /local/domain/0/backend/<class>/D/<id>, with the keys and
// permissions xl writes), serves it until the frontend closes or the
// program gets SIGINT or SIGTERM, then runs the close handshake, removes
// both directories, and prints the backend's counters and the ports and
// grants left ("leftovers: none"). One status line is printed per event.
//
// vbd serves the image file (or block device) IMG with blkback:
// persistent grants, indirect requests (-indirect 0 for none) and
// multi-page rings (-ring-order) and multi-queue (-queues, each queue its
// own ring and event channel) are offered per device; -ro exports it
// read-only; -poll caps blkback's adaptive polling of the ring
// (blkback.Config.PollMax; 0 turns it off). vif serves a network device with netback and moves its
// frames to and from the TAP device NAME (created if missing, set up,
// and added to bridge BR if given); one queue (up to N with -queues N),
// no scatter-gather, no GSO, and checksums the guest left blank are
// completed in software before the frames reach the TAP device.
//
// It runs on the kernel's /dev/xen/evtchn (package evtchn/evlinux),
// /dev/xen/gntdev and /dev/xen/gntalloc (gnttab/gntlinux) and xenstored's
// socket or /dev/xen/xenbus (xenbus/xslinux). The kernel's own backend
// driver for a class (xen-blkback for vbd, xen-netback for vif) would
// claim backend/<class> too: unload it, or put the backend directory
// under another class with -backend-class (the frontend only reads its
// path from its "backend" key).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/gozen-dev/gozen/evtchn/evlinux"
	"github.com/gozen-dev/gozen/gnttab/gntlinux"
	"github.com/gozen-dev/gozen/xenbus"
	"github.com/gozen-dev/gozen/xenbus/xslinux"
)

const usageText = `usage:
  gozen-backend vbd -domid D -file IMG [-id 51712|-vdev xvda] [-ro] [-persistent] [-indirect N] [-ring-order N] [-queues N] [-poll D] [-discard=false] [-backend-class C]
  gozen-backend vif -domid D -mac M [-id 0] [-tap NAME] [-bridge BR] [-queues N] [-backend-class C]
"gozen-backend vbd -h" and "gozen-backend vif -h" list the flags.
`

func main() {
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "gozen-backend:", err)
		if errors.Is(err, errUsage) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

// run runs one command line.
func run(args []string, out, errOut io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(errOut, usageText)
		return fmt.Errorf("%w: no command", errUsage)
	}
	switch args[0] {
	case "vbd":
		c, err := parseVBD(args[1:], errOut)
		if err != nil {
			return err
		}
		return withDom0(out, c.BackendClass, "xen-blkback", func(ctx context.Context, e *env) error {
			return serveFile(ctx, e, c)
		})
	case "vif":
		c, err := parseVIF(args[1:], errOut)
		if err != nil {
			return err
		}
		return withDom0(out, c.BackendClass, "xen-netback", func(ctx context.Context, e *env) error {
			return serveTap(ctx, e, c)
		})
	case "-h", "-help", "--help", "help":
		fmt.Fprint(out, usageText)
		return nil
	}
	fmt.Fprint(errOut, usageText)
	return fmt.Errorf("%w: unknown command %q", errUsage, args[0])
}

// kernelDriver reports whether a kernel backend driver serves
// backend/<class> (it registered itself on the xen-backend bus).
func kernelDriver(class string) bool {
	_, err := os.Stat("/sys/bus/xen-backend/drivers/" + class)
	return err == nil
}

// withDom0 opens the store, the event-channel and the grant devices,
// runs fn until SIGINT or SIGTERM cancels its context, and closes them.
func withDom0(out io.Writer, class, module string, fn func(context.Context, *env) error) error {
	if kernelDriver(class) {
		return fmt.Errorf("the kernel's %s serves backend/%s: unload it (modprobe -r %s) or pass -backend-class gozen-%s", module, class, module, class)
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sigs)
	go func() {
		select {
		case sig := <-sigs:
			cancel(fmt.Errorf("got %v", sig))
		case <-ctx.Done():
		}
	}()

	conn, err := xslinux.Open()
	if err != nil {
		return err
	}
	store, err := xenbus.DialTransport(ctx, conn)
	if err != nil {
		return err
	}
	defer store.Close()
	ev, err := evlinux.Open()
	if err != nil {
		return err
	}
	gn, err := gntlinux.Open()
	if err != nil {
		ev.Shutdown()
		return err
	}
	err = fn(ctx, &env{Store: store, Events: ev, Grants: gn, Out: out})
	return errors.Join(err, gn.Shutdown(), ev.Shutdown())
}

// serveFile opens the vbd's image and serves it.
func serveFile(ctx context.Context, e *env, c vbdConfig) error {
	flag := os.O_RDWR
	if c.ReadOnly {
		flag = os.O_RDONLY
	}
	f, err := os.OpenFile(c.File, flag|syscall.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer f.Close()
	size, err := f.Seek(0, io.SeekEnd) // works for block devices too
	if err != nil {
		return err
	}
	if size%512 != 0 || size == 0 {
		return fmt.Errorf("%s: %d bytes, not a positive multiple of 512", c.File, size)
	}
	return runVBD(ctx, e, c, newFileDisk(f), size)
}

// serveTap opens (or creates) the vif's TAP device, sets it up, adds it
// to the bridge, and serves the vif.
func serveTap(ctx context.Context, e *env, c vifConfig) error {
	tap, name, err := openTap(c.Tap)
	if err != nil {
		return err
	}
	if c.Bridge != "" {
		if err := joinBridge(name, c.Bridge); err != nil {
			tap.Close()
			return err
		}
	}
	if err := linkUp(name); err != nil {
		tap.Close()
		return err
	}
	return runVIF(ctx, e, c, tap, name)
}
