//go:build tamago

package control

import (
	"context"
	"fmt"
	"time"

	"github.com/gozen-dev/gozen/arch/amd64/smp"
	"github.com/gozen-dev/gozen/boot"
	"github.com/gozen-dev/gozen/platform"
)

// In a domU, importing the package starts the controller: a reboot request
// makes every clean exit reboot from then on, the domain goes down with
// boot.PowerOff (SHUTDOWN_poweroff, or SHUTDOWN_reboot after a reboot
// request), and a suspend request suspends it with
// platform.Platform.SuspendDomain. With more than one vCPU, xl vcpu-set
// is answered on the console (WatchVCPUs: hot-unplug is not supported).
// Dom0 has no toolstack above it and gets
// nothing.
func init() {
	if boot.IsDom0() {
		return
	}
	std.opts.Prepare = func(r Request) {
		if r.Action == Reboot {
			boot.RebootOnExit()
		}
	}
	std.opts.Finish = func(Request) { boot.PowerOff() }
	std.opts.Suspend = func(ctx context.Context) (platform.Kind, error) {
		k, err := platform.Domain().SuspendDomain(ctx)
		t := platform.Domain().Times()
		fmt.Printf("gozen: control: suspend took %v (devices %v), resume %v (%v, devices %v)\n",
			(t.SuspendDevices + t.SuspendParts).Round(time.Millisecond), t.SuspendDevices.Round(time.Millisecond),
			(t.ResumeParts + t.ResumeDevices).Round(time.Millisecond), t, t.ResumeDevices.Round(time.Millisecond))
		if r := boot.LastRelease(); r.Released > 0 {
			brk := "unknown: every page read and cleared"
			if r.Break != 0 {
				brk = fmt.Sprintf("%#x", r.Break)
			}
			fmt.Printf("gozen: control: %d heap pages (%d MiB) were left out of the saved image (%d of %d read were zero, %d above the runtime's break %s not read, %d in 2 MiB extents); after the resume %d were found back in place, %d cleared, %d short; release %v (scan %v), repopulate %v\n",
				r.Released, r.Released>>8, r.Zero, r.Scanned, r.Unread, brk, r.Huge*512, r.FoundBack, r.Cleared, r.Short,
				r.Release.Round(time.Millisecond), r.Scan.Round(time.Millisecond), r.Repopulate.Round(time.Millisecond))
		}
		return k, err
	}
	go func() {
		c, err := platform.Domain().Store()
		if err != nil {
			fmt.Println("gozen: control: no xenstore, xl shutdown/reboot/save will not be answered:", err)
			return
		}
		if n := smp.NumCPU(); n > 1 {
			go func() {
				report := func(m string) { fmt.Println(m) }
				if err := WatchVCPUs(context.Background(), c, n, report); err != nil {
					fmt.Println("gozen: control: stopped watching xl vcpu-set:", err)
				}
			}()
		}
		if err := std.Serve(context.Background(), c); err != nil {
			fmt.Println("gozen: control: stopped answering xl shutdown/reboot/save:", err)
		}
	}()
}
