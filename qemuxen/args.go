package qemuxen

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"net"
	"os/exec"
	"regexp"
	"strings"

	"github.com/gozen-dev/gozen/appimage"
)

// DefaultXenVersion is the Xen version QEMU reports to the guest: 4.17,
// the Xen of the tier-B rig (XENVER_version form: major<<16 | minor).
const DefaultXenVersion = 0x40011

// ErrConfig is wrapped by Args's errors.
var ErrConfig = errors.New("qemuxen: bad config")

// Config is one QEMU Xen-mode run of a Gozen image.
type Config struct {
	// Kernel is the image's ELF (PVH entry note: QEMU's -kernel boots it).
	Kernel string
	// Cmdline is the app's command line (-append).
	Cmdline string
	// Memory in MiB and VCPUs.
	Memory, VCPUs int
	// DomID is the guest's domain id in QEMU's emulated Xen (default 1).
	DomID int
	// XenVersion is xen-version= (default DefaultXenVersion).
	XenVersion uint32
	// Nets are the vifs, in order (xen-net-device).
	Nets []Net
	// Disks are the disks, in order (xen-disk).
	Disks []Disk
	// NoReboot makes a guest reboot end QEMU (-no-reboot), for apps whose
	// on_reboot is not restart.
	NoReboot bool
}

// Net is one vif: its MAC and QEMU's backend for it, a -netdev without
// its id, e.g. "user,restrict=on" or "bridge,br=br0".
type Net struct {
	MAC     string
	Backend string
}

// Disk is one disk: the backing file or device, the guest's vdev, the
// format (raw, qcow2) and whether it is read-only.
type Disk struct {
	Path     string
	VDev     string
	Format   string
	ReadOnly bool
}

var (
	backendRE = regexp.MustCompile(`^(user|bridge|tap|socket|stream|dgram|vde|l2tpv3|hubport|vhost-user|netmap|af-xdp|passt)(,[^\s]*)?$`)
	vdevRE    = regexp.MustCompile(`^xvd[a-z]$`)
)

// qemuEscape doubles commas, QEMU's escape inside an option value.
func qemuEscape(s string) string { return strings.ReplaceAll(s, ",", ",,") }

// Args returns QEMU's arguments (without the binary) for the run.
func (c Config) Args() ([]string, error) {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrConfig, fmt.Sprintf(format, args...))
	}
	switch {
	case c.Kernel == "":
		return nil, bad("no kernel")
	case c.Memory <= 0:
		return nil, bad("memory %d MiB", c.Memory)
	case c.VCPUs <= 0:
		return nil, bad("%d vCPUs", c.VCPUs)
	case c.DomID < 0 || c.DomID >= 0x7ff0:
		return nil, bad("domid %d is outside 0..0x7fef", c.DomID)
	case strings.ContainsAny(c.Cmdline, "\n\x00"):
		return nil, bad("command line has a newline or NUL")
	}
	domid, xv := c.DomID, c.XenVersion
	if domid == 0 {
		domid = 1
	}
	if xv == 0 {
		xv = DefaultXenVersion
	}
	args := []string{
		"-machine", "pc",
		"-accel", fmt.Sprintf("kvm,xen-version=%#x,kernel-irqchip=split", xv),
		"-cpu", "host",
		"-m", fmt.Sprint(c.Memory),
		"-smp", fmt.Sprint(c.VCPUs),
		"-xen-domid", fmt.Sprint(domid),
		"-nodefaults",
		"-nographic",
		"-chardev", "stdio,id=con0",
		"-device", "xen-console,chardev=con0",
		"-kernel", c.Kernel,
	}
	if c.Cmdline != "" {
		args = append(args, "-append", c.Cmdline)
	}
	for i, n := range c.Nets {
		hw, err := net.ParseMAC(n.MAC)
		if err != nil || len(hw) != 6 || hw[0]&1 != 0 {
			return nil, bad("net %d: %q is not a unicast MAC", i, n.MAC)
		}
		if !backendRE.MatchString(n.Backend) || strings.Contains(n.Backend, "id=") {
			return nil, bad("net %d: backend %q is not a -netdev TYPE[,OPTIONS] without id=", i, n.Backend)
		}
		id := fmt.Sprintf("net%d", i)
		typ, opts, _ := strings.Cut(n.Backend, ",")
		netdev := typ + ",id=" + id
		if opts != "" {
			netdev += "," + opts
		}
		args = append(args, "-netdev", netdev,
			"-device", fmt.Sprintf("xen-net-device,netdev=%s,mac=%s", id, hw))
	}
	for i, d := range c.Disks {
		if d.Path == "" {
			return nil, bad("disk %d has no path", i)
		}
		if !vdevRE.MatchString(d.VDev) {
			return nil, bad("disk %d: vdev %q is not xvda..xvdz", i, d.VDev)
		}
		if d.Format != "raw" && d.Format != "qcow2" {
			return nil, bad("disk %d: format %q is neither raw nor qcow2", i, d.Format)
		}
		id := fmt.Sprintf("disk%d", i)
		drive := fmt.Sprintf("file=%s,if=none,id=%s,format=%s", qemuEscape(d.Path), id, d.Format)
		if d.ReadOnly {
			drive += ",readonly=on"
		}
		args = append(args, "-drive", drive, "-device", fmt.Sprintf("xen-disk,drive=%s,vdev=%s", id, d.VDev))
	}
	if c.NoReboot {
		args = append(args, "-no-reboot")
	}
	return args, nil
}

// DefaultMAC is the MAC given to an image's vif i when its manifest names
// none: 00:16:3e (Xen's prefix, as xl uses) and three bytes hashed from the
// domain name and i, so that runs of one image keep their address.
func DefaultMAC(name string, i int) string {
	h := fnv.New32a()
	fmt.Fprintf(h, "%s/%d", name, i)
	s := h.Sum32()
	return fmt.Sprintf("00:16:3e:%02x:%02x:%02x", byte(s>>16)&0x7f, byte(s>>8), byte(s))
}

// FromImage makes the Config of an image: its ELF, command line, memory,
// vCPUs, one Net per declared interface on backend netdev, and the given
// disk paths for its declared disks (one each, in order).
func FromImage(im *appimage.Image, netdev string, disks []string) (Config, error) {
	m := im.Manifest
	if len(disks) != len(m.Disks) {
		return Config{}, fmt.Errorf("%w: %s declares %d disks, %d given (-disk PATH for each)", ErrConfig, im.App, len(m.Disks), len(disks))
	}
	c := Config{
		Kernel: im.ELF(), Cmdline: m.Cmdline, Memory: m.Memory, VCPUs: m.VCPUs,
		NoReboot: m.OnReboot != "restart",
	}
	for i, n := range m.Networks {
		mac := n.MAC
		if mac == "" {
			mac = DefaultMAC(m.Name, i)
		}
		c.Nets = append(c.Nets, Net{MAC: mac, Backend: netdev})
	}
	for i, d := range m.Disks {
		c.Disks = append(c.Disks, Disk{Path: disks[i], VDev: d.VDev, Format: d.Format, ReadOnly: d.Access == "ro"})
	}
	return c, nil
}

// Command checks the host (Check) and returns the QEMU command for the
// run; the caller connects its standard streams (the guest's console is
// QEMU's stdio) and runs it.
func (h Host) Command(ctx context.Context, c Config, stdin io.Reader, stdout, stderr io.Writer) (*exec.Cmd, error) {
	args, err := c.Args()
	if err != nil {
		return nil, err
	}
	if err := h.Check(); err != nil {
		return nil, fmt.Errorf("this host cannot run QEMU's Xen mode:\n%w", err)
	}
	cmd := exec.CommandContext(ctx, h.qemu(), args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, stderr
	return cmd, nil
}
