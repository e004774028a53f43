// Package rig boots Gozen images under real Xen in QEMU (software
// emulation) and returns what they printed and how they ended.
//
// Tier A starts the image directly as a PVH dom0 (no Linux, ~1.5 s to main).
// Tier B boots a Debian Linux PV dom0 with the Xen toolstack and starts each
// image with `xl create` as a PVH domU. Guest tests (package qemu) import
// this package; so does `make run` through cmd/gozen-run.
//
// Set-up (downloads, QEMU 7.2, the dom0 initramfs) is qemu/setup.sh; the
// cache is $GOZEN_RIG_CACHE, default ~/.cache/gozen/rig.
package rig

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Line is one line of the serial console with the host time since QEMU
// started.
type Line struct {
	At   time.Duration
	Wall time.Time // host wall clock when the line arrived
	Text string
}

// Shutdown reasons as the rig reports them.
const (
	ReasonPoweroff = "poweroff"
	ReasonReboot   = "reboot"
	ReasonSuspend  = "suspend"
	ReasonCrash    = "crash"
	ReasonTimeout  = "timeout"
	ReasonNone     = "none"
	// ReasonTripleFault is a tier-A dom0 that Xen saw triple-fault.
	ReasonTripleFault = "triple-fault"
)

var reasonCodes = map[string]string{"0": ReasonPoweroff, "1": ReasonReboot, "2": ReasonSuspend, "3": ReasonCrash, "4": "watchdog", "5": "soft_reset"}

// GuestResult is what one guest printed and how it ended.
type GuestResult struct {
	Name   string
	Lines  []Line
	Reason string
	// Started is when the rig started the guest (tier B: the GOZEN-GUEST-START
	// line; tier A: QEMU start).
	Started time.Duration
}

// Text returns the guest's console lines joined by newlines.
func (g *GuestResult) Text() string {
	var b strings.Builder
	for _, l := range g.Lines {
		b.WriteString(l.Text)
		b.WriteByte('\n')
	}
	return b.String()
}

// Has reports whether a console line contains s.
func (g *GuestResult) Has(s string) bool {
	for _, l := range g.Lines {
		if strings.Contains(l.Text, s) {
			return true
		}
	}
	return false
}

// Find returns the first console line containing s.
func (g *GuestResult) Find(s string) (Line, bool) {
	for _, l := range g.Lines {
		if strings.Contains(l.Text, s) {
			return l, true
		}
	}
	return Line{}, false
}

// Options configure a boot.
type Options struct {
	// Timeout bounds the whole QEMU run (default 5 minutes).
	Timeout time.Duration
	// Stream, when set, receives every serial line as it arrives. Without
	// it, the environment variable GOZEN_SERIAL_LOG names a file every
	// line is appended to.
	Stream io.Writer
	// Hypervisor overrides the Xen binary (e.g. one built with Argo).
	Hypervisor string
	// XenArgs are added to Xen's command line.
	XenArgs string
	// hangDump, set by BootDom0, has the run ask Xen for dom0's vCPU
	// registers shortly before the timeout (see dumpKeys).
	hangDump bool
	// Store picks dom0's xenstore daemon in tier B: "xenstored" (C,
	// default) or "oxenstored".
	Store string
	// HostPorts, in tier B, gives dom0 an e1000 NIC on QEMU's user-mode
	// network (restrict=on: nothing leaves this machine) and forwards
	// each port from 127.0.0.1 on the host to the same port of dom0's
	// address there, Dom0UserIP (dom0's script must bring up eth0 and
	// serve or relay the ports). Without it QEMU has no network.
	HostPorts []int
	// VCPUs, in tier A, gives the PVH dom0 that many vCPUs
	// (dom0_max_vcpus) and QEMU as many CPUs (-smp); default 1.
	VCPUs int
	// Memory and Dom0Memory, in tier B, are the emulated machine's RAM
	// (QEMU -m) and dom0's (dom0_mem) in MiB; defaults 2048 and 1024.
	// Xen gives domUs what dom0 and Xen leave; dom0's root file system,
	// where xl save writes, holds at most half of dom0's.
	Memory, Dom0Memory int
}

// Dom0UserIP is dom0's address on QEMU's user-mode network (HostPorts).
const Dom0UserIP = "10.0.2.15"

// Cache returns the rig cache directory.
func Cache() string {
	if c := os.Getenv("GOZEN_RIG_CACHE"); c != "" {
		return c
	}
	home, _ := os.UserHomeDir()
	return filepath.Join(home, ".cache", "gozen", "rig")
}

// repoRoot finds the module root from this source file's location.
func repoRoot() string {
	_, file, _, _ := runtime.Caller(0)
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

var setupOnce struct {
	sync.Once
	err error
}

// Setup runs qemu/setup.sh once per process (idempotent, cached).
func Setup() error {
	setupOnce.Do(func() {
		cmd := exec.Command(filepath.Join(repoRoot(), "qemu", "setup.sh"))
		cmd.Env = append(os.Environ(), "GOZEN_RIG_CACHE="+Cache())
		var out bytes.Buffer
		cmd.Stdout = &out
		cmd.Stderr = &out
		if err := cmd.Run(); err != nil {
			setupOnce.err = fmt.Errorf("rig set-up (qemu/setup.sh) failed: %v\n%s", err, out.String())
		}
	})
	return setupOnce.err
}

func kernelVersion() (string, error) {
	b, err := os.ReadFile(filepath.Join(Cache(), "kernel-version"))
	if err != nil {
		return "", fmt.Errorf("rig not set up (run qemu/setup.sh): %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

const xenBaseArgs = "loglvl=all guest_loglvl=all console=com1 com1=115200,8n1 noreboot"

// dumpKeys are Xen's debug keys for a hung tier-A run: '0' dumps dom0's
// vCPU registers, 'd' every pCPU's. BootDom0 boots Xen with
// conswitch=ax, so serial input goes to Xen, not to dom0.
const dumpKeys = "0d"

// dumpLead is how long before a tier-A run's timeout the keys are sent.
const dumpLead = 20 * time.Second

// qemu runs QEMU until stop returns true for a line, the process exits or
// the timeout passes, and returns every serial line.
func runQEMU(ctx context.Context, opts Options, args []string, stop func(string) bool) ([]Line, error) {
	timeout := opts.Timeout
	if timeout == 0 {
		timeout = 5 * time.Minute
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	accel := "tcg"
	if a := os.Getenv("GOZEN_QEMU_ACCEL"); a != "" {
		accel = a // experiments: tcg,thread=single
	}
	cpu := "max,-smap,-rdtscp"
	if c := os.Getenv("GOZEN_QEMU_CPU"); c != "" {
		cpu = c // experiments
	}
	base := []string{"-accel", accel, "-cpu", cpu, "-nographic", "-no-reboot",
		"-serial", "stdio", "-monitor", "none"}
	if len(opts.HostPorts) == 0 {
		base = append(base, "-net", "none")
	} else {
		nd := "user,id=n0,restrict=on"
		for _, p := range opts.HostPorts {
			nd += fmt.Sprintf(",hostfwd=tcp:127.0.0.1:%d-%s:%d", p, Dom0UserIP, p)
		}
		base = append(base, "-netdev", nd, "-device", "e1000,netdev=n0")
	}
	if extra := os.Getenv("GOZEN_QEMU_EXTRA"); extra != "" {
		base = append(base, strings.Fields(extra)...) // experiments: -d int -D file
	}
	cmd := exec.CommandContext(ctx, "qemu-system-x86_64", append(base, args...)...)
	cmd.WaitDelay = 2 * time.Second
	// QEMU dies with the test process (a test binary killed by its
	// timeout must not leave an emulator running)
	cmd.SysProcAttr = qemuProcAttr()
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	defer in.Close()
	cmd.Stderr = cmd.Stdout
	start := time.Now()
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting QEMU: %w (run qemu/setup.sh)", err)
	}
	var lines []Line
	stopped := false
	if path := os.Getenv("GOZEN_SERIAL_LOG"); path != "" && opts.Stream == nil {
		// every line of every run appended to a file, for diagnosis
		if f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644); err == nil {
			defer f.Close()
			opts.Stream = f
		}
	}
	if opts.hangDump && timeout > 2*dumpLead {
		// a guest that hangs shows where: Xen prints every dom0
		// vCPU's registers (RIP, RSP; resolve them with go tool
		// addr2line) and each pCPU's state before the run is killed
		// twice, 10 s apart: what stays put is stuck
		t1 := time.AfterFunc(timeout-dumpLead, func() { io.WriteString(in, dumpKeys) })
		defer t1.Stop()
		t2 := time.AfterFunc(timeout-dumpLead/2, func() { io.WriteString(in, dumpKeys) })
		defer t2.Stop()
	}
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		text := strings.TrimRight(sc.Text(), "\r")
		now := time.Now()
		l := Line{At: now.Sub(start), Wall: now, Text: text}
		lines = append(lines, l)
		if opts.Stream != nil {
			fmt.Fprintf(opts.Stream, "[%7.3f] %s\n", l.At.Seconds(), text)
		}
		if stop(text) {
			stopped = true
			break
		}
	}
	cancel()
	_ = cmd.Wait()
	if !stopped && ctx.Err() == context.DeadlineExceeded {
		return lines, fmt.Errorf("QEMU run timed out after %v", timeout)
	}
	return lines, nil
}

// BootDom0 boots elf as Xen's PVH dom0 (tier A) with the given command
// line and memory, and returns its console and shutdown reason.
func BootDom0(ctx context.Context, elf, cmdline string, memMiB int, opts Options) (*GuestResult, error) {
	if err := Setup(); err != nil {
		return nil, err
	}
	xen := opts.Hypervisor
	if xen == "" {
		xen = filepath.Join(Cache(), "xen")
	}
	if memMiB == 0 {
		memMiB = 128
	}
	vcpus := opts.VCPUs
	if vcpus < 1 {
		vcpus = 1
	}
	xargs := fmt.Sprintf("%s conswitch=ax dom0=pvh dom0-iommu=none dom0_mem=%dM,max:%dM dom0_max_vcpus=%d %s",
		xenBaseArgs, memMiB, memMiB, vcpus, opts.XenArgs)
	opts.hangDump = true
	mod := elf
	if cmdline != "" {
		mod += " " + cmdline
	}
	args := []string{"-m", "1024", "-smp", strconv.Itoa(vcpus), "-kernel", xen, "-append", xargs, "-initrd", mod}
	res := &GuestResult{Name: "dom0", Reason: ReasonNone}
	lines, err := runQEMU(ctx, opts, args, func(s string) bool {
		switch {
		case strings.Contains(s, "Hardware Dom0 halted"):
			res.Reason = ReasonPoweroff
		case strings.Contains(s, "Hardware Dom0 crashed"):
			res.Reason = ReasonCrash
		case strings.Contains(s, "Hardware Dom0 shutdown: rebooting"):
			res.Reason = ReasonReboot
		case strings.Contains(s, "Panic on CPU"):
			res.Reason = "xen-panic"
		case strings.Contains(s, "Triple fault"):
			res.Reason = ReasonTripleFault
		default:
			return false
		}
		return true
	})
	timeout := opts.Timeout
	if timeout == 0 {
		timeout = 5 * time.Minute
	}
	for _, l := range lines {
		// Xen's lines are left out, but for the register dump of a
		// run that hung
		if !strings.HasPrefix(l.Text, "(XEN)") || err != nil && l.At >= timeout-dumpLead {
			res.Lines = append(res.Lines, l)
		}
	}
	if err != nil && res.Reason == ReasonNone {
		res.Reason = ReasonTimeout
	}
	return res, err
}

// rigPinning: in tier B dom0 is pinned to pCPU 0 (dom0_vcpus_pin) and every
// domU runs on pCPU 1 (cpus = "1"), unless a guest's Config names cpus or
// GOZEN_RIG_NOPIN is set. Measured with TestTierBStress (two Gozen domU
// pairs exchanging vchan and V4V traffic): when the PV dom0 and PVH domUs
// share a pCPU of Xen under QEMU 7.2 TCG, dom0 processes segfault within
// ~20 s (ld.so asserting on corrupted library data, xl list exiting 139)
// and domUs die with triple faults whose saved state is Xen's own RIP, CS
// and CR3, in every one of 7 runs (MTTCG or one TCG thread, -smp 1, 2 or
// 3, with or without AVX, FSGSBASE, vGIF, TSC emulation, the guest's time
// area or SCHEDOP_poll idle); with dom0 alone on its pCPU, none in any run.
// A PVH domU cannot write dom0's memory, so this is below the guests: the
// emulation of PV/HVM world switches on one pCPU.

// Guest is one domU to start in tier B.
type Guest struct {
	// Name is the domain name (xl's name=).
	Name string
	// ELF is the image path on the host.
	ELF string
	// Memory in MiB (default 64).
	Memory int
	// VCPUs is xl's vcpus= (default 1). With the rig's pinning every
	// domU vCPU shares pCPU 1 (see rigPinning).
	VCPUs int
	// Cmdline is passed as xl's extra=.
	Cmdline string
	// Config holds extra xl config lines.
	Config string
	// Timeout bounds this guest's run inside dom0 (default 120 s).
	Timeout time.Duration
	// Linux starts Debian's kernel (the rig's reference PVH guest) instead
	// of an ELF; ELF is ignored.
	Linux bool
	// Init, for a Linux guest, is shell code its /init runs in place of the
	// reference init's boot mark, then the domain powers off. The rig adds
	// to that guest's initramfs the full busybox, the Xen device modules
	// libxenvchan needs (loaded before Init runs) and the libxenvchan peer
	// as /gozen/vchanpeer, so Init can run the same C peer as dom0 (a
	// relative xenstore path such as data/vchan/0/PORT names the guest's
	// own /local/domain/ID/...). Its output goes to the guest's console.
	Init string
	// Modules, for a Linux guest with Init, are more kernel modules to
	// load before Init runs (e.g. xen-netfront, xen-blkfront).
	Modules []string
	// Files, for a Linux guest with Init, are added to its initramfs.
	Files []CPIOFile
	// XL, for a Gozen guest, is its whole xl config, used as it is (an
	// appliance image's generated config): it must name the domain Name
	// and load the ELF from /gozen/NAME.elf. Memory, Cmdline and Config
	// are then ignored, and the rig adds nothing (no pinning).
	XL string
	// ExpectCrash marks a guest that is meant to crash (a deliberate exit
	// status, panic or fault). Any other guest that crashes, reports a CPU
	// fault or triple-faults ends the whole run at once with ErrGuestFault.
	ExpectCrash bool
}

// ErrGuestFault is returned (wrapped, with the guest's last lines and
// Xen's dump) when a guest crashed, reported a CPU fault or triple-faulted
// without being expected to: the run is stopped a few seconds later
// instead of waiting for its timeout.
var ErrGuestFault = errors.New("rig: a guest faulted")

// faultGrace is how long a run goes on after a fault, to collect Xen's
// register dump and the guest's last console lines.
const faultGrace = 3 * time.Second

// faultWatch notices unexpected guest faults in serial lines.
type faultWatch struct {
	expectCrash map[string]bool
	what        []string // what was seen, in order
	cancel      context.CancelFunc
	armed       bool
}

// see looks at one serial line; it arms the stop timer at the first fault.
func (w *faultWatch) see(s string) {
	var what string
	switch {
	case strings.Contains(s, "Triple fault"):
		what = "Xen saw a triple fault: " + s
	case guestLineRE.MatchString(s):
		m := guestLineRE.FindStringSubmatch(s)
		if strings.Contains(m[2], "gozen: FAULT") && !w.expectCrash[m[1]] {
			what = "guest " + m[1] + " reported a CPU fault: " + m[2]
		}
	case guestEndRE.MatchString(s):
		m := guestEndRE.FindStringSubmatch(s)
		if m[2] == "3" && !w.expectCrash[m[1]] {
			what = "guest " + m[1] + " crashed (SHUTDOWN_crash) unexpectedly"
		}
	}
	if what == "" {
		return
	}
	w.what = append(w.what, what)
	if !w.armed && w.cancel != nil {
		w.armed = true
		time.AfterFunc(faultGrace, w.cancel)
	}
}

// err returns the fault error with the run's last lines, or nil.
func (w *faultWatch) err(lines []Line) error {
	if len(w.what) == 0 {
		return nil
	}
	from := len(lines) - 80
	if from < 0 {
		from = 0
	}
	var b strings.Builder
	for _, l := range lines[from:] {
		fmt.Fprintf(&b, "%8.3f %s\n", l.At.Seconds(), l.Text)
	}
	return fmt.Errorf("%w: %s\n--- the run's last serial lines ---\n%s", ErrGuestFault, strings.Join(w.what, "; "), b.String())
}

// Run is the outcome of a tier-B boot.
type Run struct {
	Serial []Line
	Guests map[string]*GuestResult
	// Dom0Ready is when dom0's toolstack was up.
	Dom0Ready time.Duration
}

var (
	guestLineRE = regexp.MustCompile(`^GZ\|([^|]+)\| ?(.*)$`)
	guestEndRE  = regexp.MustCompile(`^GOZEN-GUEST-END (\S+) reason=(\S+)`)
	guestStart  = regexp.MustCompile(`^GOZEN-GUEST-START (\S+)`)
)

// Script is dom0 shell code run after the toolstack is up; the default
// starts each guest in turn with gozen-guest.
type Script string

// BootDomUs boots Xen with the Linux dom0 and runs the guests one after the
// other (or script, when not empty, which may use gozen-guest NAME CFG and
// the files /gozen/NAME.elf and /gozen/NAME.cfg).
func BootDomUs(ctx context.Context, guests []Guest, script Script, opts Options) (*Run, error) {
	if err := Setup(); err != nil {
		return nil, err
	}
	kver, err := kernelVersion()
	if err != nil {
		return nil, err
	}
	var files []CPIOFile
	var sh strings.Builder
	sh.WriteString("#!/bin/sh\n")
	for _, g := range guests {
		if g.Memory == 0 {
			g.Memory = 64
		}
		to := g.Timeout
		if to == 0 {
			to = 120 * time.Second
		}
		var cfg strings.Builder
		vcpus := g.VCPUs
		if vcpus < 1 {
			vcpus = 1
		}
		fmt.Fprintf(&cfg, "name = %q\ntype = \"pvh\"\nmemory = %d\nvcpus = %d\n", g.Name, g.Memory, vcpus)
		if g.Linux {
			ramdisk := "/gozen/linux-domu.cpio.gz"
			if g.Init != "" {
				extra, err := linuxInitArchive(g.Init, g.Modules, g.Files)
				if err != nil {
					return nil, fmt.Errorf("guest %s: %w", g.Name, err)
				}
				files = append(files, CPIOFile{Name: "gozen/" + g.Name + ".init.cpio.gz", Mode: 0o644, Data: extra})
				ramdisk = "/gozen/" + g.Name + ".cpio"
				// the reference initramfs, then this guest's archive over
				// it, both uncompressed in one file for the kernel to
				// unpack in order. Not two gzip members: Xen's domain
				// builder takes a gzip file's size from its last four
				// bytes (the second member's) and inflates the first
				// member only, so with a large second member the guest ran
				// the reference init. An uncompressed file is loaded as
				// it is; each cpio archive ends 4-byte aligned, as the
				// kernel needs of the next one.
				fmt.Fprintf(&sh, "{ zcat /gozen/linux-domu.cpio.gz; zcat /gozen/%[1]s.init.cpio.gz; } > %[2]s\n", g.Name, ramdisk)
			}
			// noxsave: the reference domU's init (busybox) was killed
			// by SIGILL in about half the runs as its first programs
			// started, never a Gozen domU; without XSAVE the kernel
			// turns off OSXSAVE, so glibc uses no AVX code paths, which
			// QEMU 7.2 only began to emulate in TCG
			fmt.Fprintf(&cfg, "kernel = \"/gozen/vmlinuz\"\nramdisk = %q\n"+
				"extra = \"console=hvc0 quiet noxsave %s\"\n", ramdisk, g.Cmdline)
		} else {
			data, err := os.ReadFile(g.ELF)
			if err != nil {
				return nil, fmt.Errorf("guest %s: %w", g.Name, err)
			}
			files = append(files, CPIOFile{Name: "gozen/" + g.Name + ".elf", Mode: 0o644, Data: data})
			fmt.Fprintf(&cfg, "kernel = \"/gozen/%s.elf\"\n", g.Name)
			if g.Cmdline != "" {
				fmt.Fprintf(&cfg, "extra = %q\n", g.Cmdline)
			}
		}
		if g.XL != "" && !g.Linux {
			cfg.Reset()
			cfg.WriteString(g.XL)
			files = append(files, CPIOFile{Name: "gozen/" + g.Name + ".cfg", Mode: 0o644, Data: []byte(cfg.String())})
			if script == "" {
				fmt.Fprintf(&sh, "gozen-guest %s /gozen/%s.cfg %d\n", g.Name, g.Name, int(to.Seconds()))
			}
			continue
		}
		cfg.WriteString("on_poweroff = \"destroy\"\non_crash = \"destroy\"\non_reboot = \"destroy\"\n")
		if !strings.Contains(g.Config, "cpus") && os.Getenv("GOZEN_RIG_NOPIN") == "" {
			// every domU on pCPU 1, dom0 pinned to pCPU 0: see rigPinning
			cfg.WriteString("cpus = \"1\"\n")
		}
		cfg.WriteString(g.Config)
		files = append(files, CPIOFile{Name: "gozen/" + g.Name + ".cfg", Mode: 0o644, Data: []byte(cfg.String())})
		if script == "" {
			fmt.Fprintf(&sh, "gozen-guest %s /gozen/%s.cfg %d\n", g.Name, g.Name, int(to.Seconds()))
		}
	}
	sh.WriteString(string(script))
	files = append(files, CPIOFile{Name: "gozen/run.sh", Mode: 0o755, Data: []byte(sh.String())})
	tool, err := buildDom0Tool()
	if err != nil {
		return nil, err
	}
	files = append(files, CPIOFile{Name: "gozen/dom0tool", Mode: 0o755, Data: tool})
	// Gozen's own tools over /dev/xen, for dom0's user space
	for _, t := range []string{"gozen-backend", "xenconform", "vchancat"} {
		data, err := BuildLinuxTool(t, "./cmd/"+t)
		if err != nil {
			return nil, err
		}
		files = append(files, CPIOFile{Name: "gozen/" + t, Mode: 0o755, Data: data})
	}
	files = append(files, vchanPeerFile()) // the libxenvchan peer (vchanpeer.go)

	initrd, err := os.CreateTemp("", "gozen-dom0-*.cpio.gz")
	if err != nil {
		return nil, err
	}
	defer os.Remove(initrd.Name())
	base, err := os.ReadFile(filepath.Join(Cache(), "dom0.cpio.gz"))
	if err != nil {
		return nil, fmt.Errorf("rig not set up: %w", err)
	}
	initrd.Write(base)
	zw := gzip.NewWriter(initrd)
	if err := WriteCPIO(zw, files); err != nil {
		return nil, err
	}
	zw.Close()
	if err := initrd.Close(); err != nil {
		return nil, err
	}

	xen := opts.Hypervisor
	if xen == "" {
		xen = filepath.Join(Cache(), "xen")
	}
	store := ""
	if opts.Store == "oxenstored" {
		store = " gozen.xs=o"
	}
	pin := " dom0_vcpus_pin"
	if os.Getenv("GOZEN_RIG_NOPIN") != "" {
		pin = ""
	}
	mem, dom0Mem := opts.Memory, opts.Dom0Memory
	if mem == 0 {
		mem = 2048
	}
	if dom0Mem == 0 {
		dom0Mem = 1024
	}
	xargs := fmt.Sprintf("%s dom0_mem=%dM,max:%dM dom0_max_vcpus=1%s %s", xenBaseArgs, dom0Mem, dom0Mem, pin, opts.XenArgs)
	kernel := filepath.Join(Cache(), "x", "boot", "vmlinuz-"+kver)
	mods := fmt.Sprintf("%s console=hvc0 earlyprintk=xen rdinit=/init quiet%s,%s", kernel, store, initrd.Name())
	smp := "2"
	if n := os.Getenv("GOZEN_QEMU_SMP"); n != "" {
		smp = n // experiments
	}
	args := []string{"-m", strconv.Itoa(mem), "-smp", smp, "-kernel", xen, "-append", xargs, "-initrd", mods}
	run := &Run{Guests: map[string]*GuestResult{}}
	watch := &faultWatch{expectCrash: map[string]bool{}}
	for _, g := range guests {
		watch.expectCrash[g.Name] = g.ExpectCrash
	}
	ctx, watch.cancel = context.WithCancel(ctx)
	defer watch.cancel()
	get := func(name string) *GuestResult {
		g := run.Guests[name]
		if g == nil {
			g = &GuestResult{Name: name, Reason: ReasonNone}
			run.Guests[name] = g
		}
		return g
	}
	lines, err := runQEMU(ctx, opts, args, func(s string) bool {
		watch.see(s)
		return strings.HasPrefix(s, "GOZEN-DONE") || strings.Contains(s, "Kernel panic")
	})
	run.Serial = lines
	for _, l := range lines {
		switch {
		case strings.HasPrefix(l.Text, "GOZEN-DOM0: ready"):
			run.Dom0Ready = l.At
		case guestStart.MatchString(l.Text):
			get(guestStart.FindStringSubmatch(l.Text)[1]).Started = l.At
		case guestLineRE.MatchString(l.Text):
			m := guestLineRE.FindStringSubmatch(l.Text)
			g := get(m[1])
			g.Lines = append(g.Lines, Line{At: l.At, Wall: l.Wall, Text: m[2]})
		case guestEndRE.MatchString(l.Text):
			m := guestEndRE.FindStringSubmatch(l.Text)
			r := m[2]
			if name, ok := reasonCodes[r]; ok {
				r = name
			}
			get(m[1]).Reason = r
		}
	}
	if ferr := watch.err(lines); ferr != nil {
		return run, ferr
	}
	if err != nil {
		return run, err
	}
	if len(lines) == 0 || !strings.HasPrefix(lines[len(lines)-1].Text, "GOZEN-DONE") {
		return run, errors.New("dom0 did not finish its script (see Serial)")
	}
	return run, nil
}

// SerialText joins the serial lines (for failure messages).
func (r *Run) SerialText() string {
	var b strings.Builder
	for _, l := range r.Serial {
		b.WriteString(strconv.FormatFloat(l.At.Seconds(), 'f', 3, 64))
		b.WriteString(" ")
		b.WriteString(l.Text)
		b.WriteByte('\n')
	}
	return b.String()
}
