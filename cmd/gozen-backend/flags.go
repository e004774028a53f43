//go:build linux

package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/gozen-dev/gozen/domid"
	"github.com/gozen-dev/gozen/drivers/blkback"
	"github.com/gozen-dev/gozen/drivers/blkif"
)

// errUsage marks a command line that cannot be run; the message says why.
var errUsage = errors.New("usage")

// vbdConfig is the command line of "gozen-backend vbd".
type vbdConfig struct {
	// Dom is the guest (frontend) domain.
	Dom domid.ID
	// File is the disk image served.
	File string
	// ID is the device id (the Linux-style virtual-device number), Vdev
	// its name ("xvda").
	ID   uint32
	Vdev string
	// ReadOnly exports the disk read-only.
	ReadOnly bool
	// Persistent offers persistent grants; Indirect offers indirect
	// requests of that many segments (0: none); RingOrder offers rings
	// of up to 2^RingOrder pages.
	Persistent bool
	Indirect   int
	RingOrder  int
	// Discard offers feature-discard (read-write disks only).
	Discard bool
	// Queues offers that many queues (multi-queue-max-queues); 0 offers
	// none (one ring).
	Queues int
	// Poll caps blkback's adaptive polling of the ring
	// (blkback.Config.PollMax); 0 turns it off.
	Poll time.Duration
	// BackendClass names the backend directory's class
	// (backend/<class>/<dom>/<id>); "vbd" unless the kernel's xen-blkback
	// is loaded, see -backend-class.
	BackendClass string
}

// vifConfig is the command line of "gozen-backend vif".
type vifConfig struct {
	// Dom is the guest (frontend) domain.
	Dom domid.ID
	// MAC is the guest's address.
	MAC net.HardwareAddr
	// ID is the device id (the vif's handle).
	ID uint32
	// Tap names the TAP device; Bridge, if set, is the bridge it joins.
	Tap, Bridge string
	// BackendClass names the backend directory's class, as for vbd.
	BackendClass string
	// Queues offers that many queues (multi-queue-max-queues); 0 offers
	// none.
	Queues int
}

// maxVIFQueues bounds vif -queues (Linux's netback offers one per dom0
// CPU).
const maxVIFQueues = 64

// maxPoll bounds vbd -poll: polling is for gaps of microseconds on
// hardware, milliseconds under emulation.
const maxPoll = time.Second

// Defaults of the vbd features.
const (
	defaultIndirect  = 32
	defaultRingOrder = 2
)

// newFlagSet returns a flag set for a subcommand that reports errors to
// out and does not exit.
func newFlagSet(name string, out io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("gozen-backend "+name, flag.ContinueOnError)
	fs.SetOutput(out)
	return fs
}

// parseVBD parses the arguments of "gozen-backend vbd".
func parseVBD(args []string, out io.Writer) (vbdConfig, error) {
	var c vbdConfig
	fs := newFlagSet("vbd", out)
	dom := fs.Int("domid", -1, "guest `domain` id (required)")
	fs.StringVar(&c.File, "file", "", "disk `image` to serve (required)")
	id := fs.Int64("id", -1, "device `id` (virtual-device number, e.g. 51712 for xvda)")
	fs.StringVar(&c.Vdev, "vdev", "", "device `name` (xvda, xvdb, ..., xvda1); sets -id")
	fs.BoolVar(&c.ReadOnly, "ro", false, "export the disk read-only")
	fs.BoolVar(&c.Persistent, "persistent", false, "offer persistent grants")
	fs.IntVar(&c.Indirect, "indirect", defaultIndirect, "offer indirect requests of `N` segments (0: none)")
	fs.IntVar(&c.RingOrder, "ring-order", defaultRingOrder, "offer rings of up to 2^`N` pages (0..4)")
	fs.IntVar(&c.Queues, "queues", 0, "offer `N` queues, each its own ring and event channel (multi-queue-max-queues; 0: none)")
	fs.DurationVar(&c.Poll, "poll", blkback.DefaultPollMax, "poll the ring for the next request for up to `D` (adaptive) before waiting for an event (0: never)")
	fs.BoolVar(&c.Discard, "discard", true, "offer discard on a read-write disk (holes punched in the image, or zeros written)")
	fs.StringVar(&c.BackendClass, "backend-class", "vbd", "`class` of the backend directory, backend/<class>/<domid>/<id>")
	if err := fs.Parse(args); err != nil {
		return c, fmt.Errorf("%w: %w", errUsage, err)
	}
	if fs.NArg() != 0 {
		return c, fmt.Errorf("%w: unexpected arguments %q", errUsage, fs.Args())
	}
	var err error
	if c.Dom, err = checkDom(*dom); err != nil {
		return c, err
	}
	if c.File == "" {
		return c, fmt.Errorf("%w: -file is required", errUsage)
	}
	switch {
	case c.Vdev != "":
		v, err := parseVdev(c.Vdev)
		if err != nil {
			return c, err
		}
		if *id >= 0 && uint32(*id) != v {
			return c, fmt.Errorf("%w: -id %d is not -vdev %s (%d)", errUsage, *id, c.Vdev, v)
		}
		c.ID = v
	case *id >= 0:
		if *id == 0 || *id > 1<<31-1 {
			return c, fmt.Errorf("%w: -id %d out of range", errUsage, *id)
		}
		c.ID = uint32(*id)
		c.Vdev = vdevName(c.ID)
	default:
		c.ID, c.Vdev = 51712, "xvda"
	}
	if c.Indirect < 0 || c.Indirect > blkif.MaxIndirectSegments {
		return c, fmt.Errorf("%w: -indirect %d, want 0..%d", errUsage, c.Indirect, blkif.MaxIndirectSegments)
	}
	if c.RingOrder < 0 || c.RingOrder > 4 {
		return c, fmt.Errorf("%w: -ring-order %d, want 0..4", errUsage, c.RingOrder)
	}
	if c.Queues < 0 || c.Queues > blkback.MaxQueues {
		return c, fmt.Errorf("%w: -queues %d, want 0..%d", errUsage, c.Queues, blkback.MaxQueues)
	}
	if c.Poll < 0 || c.Poll > maxPoll {
		return c, fmt.Errorf("%w: -poll %v, want 0..%v", errUsage, c.Poll, maxPoll)
	}
	if err := checkClass(c.BackendClass); err != nil {
		return c, err
	}
	if c.ReadOnly {
		c.Discard = false
	}
	return c, nil
}

// parseVIF parses the arguments of "gozen-backend vif".
func parseVIF(args []string, out io.Writer) (vifConfig, error) {
	var c vifConfig
	fs := newFlagSet("vif", out)
	dom := fs.Int("domid", -1, "guest `domain` id (required)")
	mac := fs.String("mac", "", "the guest's MAC `address` (required)")
	id := fs.Int64("id", 0, "device `id` (the vif's handle)")
	fs.StringVar(&c.Tap, "tap", "", "TAP device `name` to create or attach to (default gzvif<domid>.<id>)")
	fs.StringVar(&c.Bridge, "bridge", "", "`bridge` the TAP device joins")
	fs.StringVar(&c.BackendClass, "backend-class", "vif", "`class` of the backend directory, backend/<class>/<domid>/<id>")
	fs.IntVar(&c.Queues, "queues", 0, "offer `N` queues, each its own rings and event channel (multi-queue-max-queues; 0: none)")
	if err := fs.Parse(args); err != nil {
		return c, fmt.Errorf("%w: %w", errUsage, err)
	}
	if fs.NArg() != 0 {
		return c, fmt.Errorf("%w: unexpected arguments %q", errUsage, fs.Args())
	}
	var err error
	if c.Dom, err = checkDom(*dom); err != nil {
		return c, err
	}
	if *mac == "" {
		return c, fmt.Errorf("%w: -mac is required", errUsage)
	}
	c.MAC, err = net.ParseMAC(*mac)
	if err != nil || len(c.MAC) != 6 {
		return c, fmt.Errorf("%w: -mac %q is not an Ethernet address", errUsage, *mac)
	}
	if c.MAC[0]&1 != 0 {
		return c, fmt.Errorf("%w: -mac %s is a multicast address", errUsage, c.MAC)
	}
	if *id < 0 || *id > 1<<31-1 {
		return c, fmt.Errorf("%w: -id %d out of range", errUsage, *id)
	}
	c.ID = uint32(*id)
	if c.Tap == "" {
		c.Tap = fmt.Sprintf("gzvif%d.%d", c.Dom, c.ID)
	}
	// IFNAMSIZ is 16 with the terminating NUL.
	if len(c.Tap) > 15 || strings.ContainsAny(c.Tap, "/ \t\n") {
		return c, fmt.Errorf("%w: -tap %q is not an interface name (at most 15 bytes, no '/' or spaces)", errUsage, c.Tap)
	}
	if c.Queues < 0 || c.Queues > maxVIFQueues {
		return c, fmt.Errorf("%w: -queues %d, want 0..%d", errUsage, c.Queues, maxVIFQueues)
	}
	if len(c.Bridge) > 15 || strings.ContainsAny(c.Bridge, "/ \t\n") {
		return c, fmt.Errorf("%w: -bridge %q is not an interface name", errUsage, c.Bridge)
	}
	if err := checkClass(c.BackendClass); err != nil {
		return c, err
	}
	return c, nil
}

// checkDom checks a guest domain id from the command line.
func checkDom(d int) (domid.ID, error) {
	switch {
	case d < 0:
		return 0, fmt.Errorf("%w: -domid is required", errUsage)
	case d == 0 || d >= int(domid.FirstReserved):
		return 0, fmt.Errorf("%w: -domid %d is not a guest domain", errUsage, d)
	}
	return domid.ID(d), nil
}

// checkClass checks a backend class name: one path element.
func checkClass(c string) error {
	if c == "" || strings.ContainsAny(c, "/ \t\n") || len(c) > 64 {
		return fmt.Errorf("%w: backend class %q is not a path element", errUsage, c)
	}
	return nil
}

// xvdMajor is the major number of Xen virtual disks in the virtual-device
// numbering of Xen's docs/misc/vbd-interface.txt.
const xvdMajor = 202

// parseVdev turns a Xen virtual disk name, xvd<letters>[<partition>], into
// its virtual-device number (vbd-interface.txt): disks 0..15 with
// partitions 0..15 are 202<<8 | disk<<4 | partition, larger ones use the
// extended form 1<<28 | disk<<8 | partition.
func parseVdev(name string) (uint32, error) {
	bad := func(why string) (uint32, error) {
		return 0, fmt.Errorf("%w: -vdev %q: %s", errUsage, name, why)
	}
	rest, ok := strings.CutPrefix(name, "xvd")
	if !ok {
		return bad("not an xvd name (xvda, xvdb, ...)")
	}
	letters := 0
	for letters < len(rest) && rest[letters] >= 'a' && rest[letters] <= 'z' {
		letters++
	}
	if letters == 0 || letters > 3 {
		return bad("want 1 to 3 disk letters")
	}
	disk := 0
	for _, c := range rest[:letters] {
		disk = disk*26 + int(c-'a') + 1
	}
	disk--
	part := 0
	if p := rest[letters:]; p != "" {
		n, err := strconv.Atoi(p)
		if err != nil || n < 1 || n > 255 || p[0] == '0' {
			return bad("bad partition number")
		}
		part = n
	}
	if disk < 16 && part < 16 {
		return uint32(xvdMajor<<8 | disk<<4 | part), nil
	}
	if disk >= 1<<20 {
		return bad("disk index too large")
	}
	return uint32(1<<28 | disk<<8 | part), nil
}

// vdevName is the inverse of parseVdev, or "" for a number that is not an
// xvd device.
func vdevName(id uint32) string {
	var disk, part int
	switch {
	case id&(1<<28) != 0 && id < 1<<29:
		disk, part = int(id>>8&(1<<20-1)), int(id&0xff)
	case id>>8 == xvdMajor:
		disk, part = int(id>>4&15), int(id&15)
	default:
		return ""
	}
	var letters []byte
	for n := disk + 1; n > 0; n = (n - 1) / 26 {
		letters = append([]byte{byte('a' + (n-1)%26)}, letters...)
	}
	s := "xvd" + string(letters)
	if part > 0 {
		s += strconv.Itoa(part)
	}
	return s
}
