// Command gozen-run boots a Gozen image as a PVH domU in the tier-B rig
// (Xen 4.17 in QEMU with a Linux dom0), streams its console, and exits with
// the guest's status: 0 for a poweroff, 1 for a crash or anything else.
// `make run` uses it.
//
//	gozen-run -elf build/hello.elf [-name hello] [-memory 48] [-extra "args"]
//	          [-net] [-forward 8080:80] [-manifest apps/hello/gozen.json]
//
// With -manifest the guest gets what the app declares (see package
// appimage): its memory (unless -memory is given), its command line
// (unless -extra is), a vif on the bridge for its first network (with its
// MAC), and for each disk a fresh 64 MiB image in dom0's memory, formatted
// FAT32 with mkfs.fat (empty: a disk lasts as long as the run).
//
// With -net the guest gets a vif on dom0's bridge xenbr0 (10.0.0.1/24),
// where dom0 runs a DHCP server that gives it 10.0.0.10. With -forward
// HOST:GUEST, QEMU forwards 127.0.0.1:HOST on this machine to dom0 (over
// QEMU's user-mode network, restricted so nothing leaves this machine) and
// dom0 relays it to the guest's port GUEST: `make run APP=httpd` serves on
// http://127.0.0.1:8080/.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/gozen-dev/gozen/appimage"
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
	withNet := flag.Bool("net", false, "give the guest a vif on dom0's bridge (DHCP: 10.0.0.10)")
	forward := flag.String("forward", "", "HOST:GUEST: forward 127.0.0.1:HOST to the guest's TCP port GUEST (implies -net)")
	manifest := flag.String("manifest", "", "the app's gozen.json: its memory, command line, network and disks")
	flag.Parse()

	set := map[string]bool{}
	flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
	mac := "00:16:3e:5a:00:10"
	var disks []appimage.Disk
	if *manifest != "" {
		m, err := appimage.LoadManifest(*manifest)
		if err != nil {
			fmt.Fprintln(os.Stderr, "gozen-run:", err)
			os.Exit(2)
		}
		if !set["memory"] {
			*mem = m.Memory
		}
		if !set["extra"] {
			*extra = m.Cmdline
		}
		if len(m.Networks) > 0 {
			*withNet = true
			if m.Networks[0].MAC != "" {
				mac = m.Networks[0].MAC
			}
		}
		disks = m.Disks
	}
	var opts rig.Options
	var script rig.Script
	guest := rig.Guest{Name: *name, ELF: *elf, Memory: *mem, Cmdline: *extra, Timeout: *timeout}
	var sh string
	if len(disks) > 0 {
		var specs []string
		for i, d := range disks {
			access := d.Access
			if access == "" {
				access = "rw"
			}
			sh += fmt.Sprintf("dd if=/dev/zero of=/tmp/disk%[1]d.img bs=1M count=0 seek=64 2>/dev/null && mkfs.fat -F 32 /tmp/disk%[1]d.img >/dev/null && losetup /dev/loop%[1]d /tmp/disk%[1]d.img || echo \"GOZEN-RUN disk %[1]d failed\"\n", i)
			specs = append(specs, fmt.Sprintf("'format=raw,vdev=%s,access=%s,script=/etc/xen/scripts/block-gozen,target=/dev/loop%d'", d.VDev, access, i))
			fmt.Fprintf(os.Stderr, "rig: %s is a fresh 64 MiB FAT32 image in dom0's memory (gone after the run)\n", d.VDev)
		}
		guest.Config += "disk = [" + strings.Join(specs, ", ") + "]\n"
	}
	if *forward != "" || *withNet {
		const ip = "10.0.0.10"
		guest.Config += "vif = ['mac=" + mac + ",bridge=xenbr0,script=/etc/xen/scripts/vif-gozen']\n"
		sh += "net-up " + mac + "=" + ip + "\n"
		if *forward != "" {
			var hp, gp int
			if _, err := fmt.Sscanf(*forward, "%d:%d", &hp, &gp); err != nil || hp <= 0 || hp > 65535 || gp <= 0 || gp > 65535 {
				fmt.Fprintln(os.Stderr, "gozen-run: -forward wants HOST:GUEST ports, e.g. 8080:80")
				os.Exit(2)
			}
			opts.HostPorts = []int{hp}
			sh += fmt.Sprintf("ip link set dev eth0 up && ip addr add %s/24 dev eth0\n", rig.Dom0UserIP)
			sh += fmt.Sprintf("/gozen/dom0tool proxy :%d %s:%d &\n", hp, ip, gp)
			fmt.Fprintf(os.Stderr, "rig: http://127.0.0.1:%d/ on this machine reaches the guest's port %d (once it listens)\n", hp, gp)
		}
	}
	if sh != "" {
		script = rig.Script(sh + fmt.Sprintf("gozen-guest %s /gozen/%s.cfg %d\n", *name, *name, int(timeout.Seconds())))
	}

	fmt.Fprintf(os.Stderr, "rig: booting Xen 4.17 + Linux dom0 in QEMU, then xl create %s (%d MiB)\n", *elf, *mem)
	opts.Timeout, opts.Stream = *timeout+time.Minute, guestLines{os.Stdout, *name, *verbose}
	run, err := rig.BootDomUs(context.Background(), []rig.Guest{guest}, script, opts)
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
