//go:build tamago

// Command hello is Gozen's first appliance: it prints the Xen version, the
// domain's memory map and the time, sleeps one second, reports how long it
// slept by the guest clock, and powers the domain off.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"time"

	"github.com/gozen-dev/gozen/boot"
	"github.com/gozen-dev/gozen/hypercall"
	"github.com/gozen-dev/gozen/platform"
	_ "github.com/gozen-dev/gozen/xenbus/control" // xl shutdown / xl reboot
)

func main() {
	major, minor, err := hypercall.XenVersion()
	if err != nil {
		fmt.Println("hello: xen_version:", err)
		os.Exit(1)
	}
	extra, _ := hypercall.XenExtraVersion()
	fmt.Printf("hello: Gozen on Xen %d.%d%s (%s), CPUID leaves at %#x\n",
		major, minor, extra, runtime.Version(), boot.Xen.Base)
	role := "domU"
	if boot.IsDom0() {
		role = "dom0"
	}
	fmt.Printf("hello: running as PVH %s, command line %q\n", role, boot.Start.Cmdline)
	if !boot.IsDom0() {
		printXenstore()
	}
	fmt.Println("hello: memory map:")
	for _, r := range boot.Start.Memmap {
		fmt.Println("hello:  ", r)
	}
	fmt.Printf("hello: RAM %d MiB, runtime heap+stack region %d MiB\n",
		boot.Start.RAMTotal()>>20, boot.RuntimeRAM()>>20)
	ti := boot.TimeInfoNow()
	fmt.Printf("hello: TSC %d kHz, time area registered: %v\n", ti.TSCHz()/1000, boot.TimeAreaRegistered())
	now := time.Now()
	fmt.Println("hello: time.Now():", now.UTC().Format(time.RFC3339Nano))
	// the same instant on Xen's serial line, for the rig's clock check
	boot.EarlyPrint(fmt.Sprintf("hello: unix-ns %d\n", now.UnixNano()))
	start := time.Now()
	time.Sleep(1 * time.Second)
	fmt.Printf("hello: slept %v by the guest clock\n", time.Since(start))
	fmt.Println("hello: powering off")
}

// printXenstore prints what xenstore says of this domain.
func printXenstore() {
	xs, err := platform.Domain().Store()
	if err != nil {
		fmt.Println("hello: xenstore:", err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	domid, err1 := xs.ReadString(ctx, "domid")
	name, err2 := xs.ReadString(ctx, "name")
	vm, err3 := xs.ReadString(ctx, "vm")
	if err := errors.Join(err1, err2, err3); err != nil {
		fmt.Println("hello: xenstore:", err)
		return
	}
	fmt.Printf("hello: domid %s, name %q, vm path %s (xenstore home %s)\n", domid, name, vm, xs.Home())
}
