// Command gozen-run boots a Gozen image as a PVH domU in the tier-B rig
// (Xen 4.17 in QEMU with a Linux dom0), streams its console, and exits with
// the guest's status: 0 for a poweroff, 1 for a crash or anything else.
// `make run` uses it.
//
//	gozen-run -elf build/hello.elf [-name hello] [-memory 48] [-extra "args"]
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/gozen-dev/gozen/qemu/rig"
)

// guestLines copies only the guest's console lines and dom0's progress to
// the terminal, not Xen's and Linux's boot chatter.
type guestLines struct {
	w       io.Writer
	name    string
	verbose bool
}

func (g guestLines) Write(p []byte) (int, error) {
	for _, line := range strings.SplitAfter(string(p), "\n") {
		if line == "" {
			continue
		}
		switch {
		case g.verbose:
			fmt.Fprint(g.w, line)
		case strings.Contains(line, "GZ|"+g.name+"| "):
			fmt.Fprint(g.w, line[strings.Index(line, "GZ|"+g.name+"| ")+len(g.name)+5:])
		case strings.Contains(line, "GOZEN-"):
			fmt.Fprint(g.w, "rig: ", line[strings.Index(line, "GOZEN-"):])
		}
	}
	return len(p), nil
}

func main() {
	elf := flag.String("elf", "build/hello.elf", "the Gozen image to boot")
	name := flag.String("name", "hello", "domain name")
	mem := flag.Int("memory", 48, "domain memory in MiB")
	extra := flag.String("extra", "", "command line for the guest (xl extra=)")
	verbose := flag.Bool("v", false, "show the whole serial console (Xen, dom0 and guest)")
	timeout := flag.Duration("timeout", 5*time.Minute, "give up after this long")
	flag.Parse()

	fmt.Fprintf(os.Stderr, "rig: booting Xen 4.17 + Linux dom0 in QEMU, then xl create %s (%d MiB)\n", *elf, *mem)
	run, err := rig.BootDomUs(context.Background(),
		[]rig.Guest{{Name: *name, ELF: *elf, Memory: *mem, Cmdline: *extra, Timeout: *timeout}}, "",
		rig.Options{Timeout: *timeout + time.Minute, Stream: guestLines{os.Stdout, *name, *verbose}})
	if err != nil {
		fmt.Fprintln(os.Stderr, "gozen-run:", err)
		os.Exit(1)
	}
	g := run.Guests[*name]
	if g == nil {
		fmt.Fprintln(os.Stderr, "gozen-run: the guest never started")
		os.Exit(1)
	}
	fmt.Fprintf(os.Stderr, "rig: %s ended: %s\n", *name, g.Reason)
	if g.Reason != rig.ReasonPoweroff {
		os.Exit(1)
	}
}
