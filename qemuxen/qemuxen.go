// Package qemuxen runs a Gozen image under QEMU's own Xen emulation
// (QEMU 8.0 and later on Linux KVM: `-accel kvm,xen-version=...,
// kernel-irqchip=split`, with QEMU's built-in xenstore, and its
// xen-console, xen-net-device and xen-disk backends), where no Xen is
// installed at all. It needs KVM's Xen HVM support (KVM_CAP_XEN_HVM with
// the hypercall MSR, hypercall interception and shared-info flags, as
// QEMU's kvm_xen_init requires): Check says whether this host has it and,
// if not, why.
package qemuxen

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
)

// KVM's Xen support, from Linux's include/uapi/linux/kvm.h.
const (
	// KVMCapXenHVM is KVM_CAP_XEN_HVM: KVM_CHECK_EXTENSION answers it with
	// the KVM_XEN_HVM_CONFIG_* flags the kernel supports.
	KVMCapXenHVM = 38
	// kvmCheckExtension is KVM_CHECK_EXTENSION, _IO(KVMIO=0xAE, 0x03).
	kvmCheckExtension = 0xAE03

	// The KVM_XEN_HVM_CONFIG_* flags.
	XenHypercallMSR   = 1 << 0
	XenInterceptHcall = 1 << 1
	XenSharedInfo     = 1 << 2
	XenRunstate       = 1 << 3
	XenEvtchn2Level   = 1 << 4
	XenEvtchnSend     = 1 << 5

	// RequiredXenFlags are the flags QEMU's Xen mode cannot do without.
	RequiredXenFlags = XenHypercallMSR | XenInterceptHcall | XenSharedInfo
)

// MinQEMU is the first QEMU version with Xen emulation (major, minor).
var MinQEMU = [2]int{8, 0}

// Why a host cannot run Xen mode; Check wraps one of these.
var (
	ErrNoKVM    = errors.New("qemuxen: no usable KVM")
	ErrNoXenHVM = errors.New("qemuxen: KVM lacks Xen HVM support (KVM_CAP_XEN_HVM)")
	ErrNoQEMU   = errors.New("qemuxen: QEMU not found or not runnable")
	ErrOldQEMU  = errors.New("qemuxen: QEMU is older than 8.0 (no Xen emulation)")
)

// Host is where Check looks.
type Host struct {
	// KVM is the KVM device (default /dev/kvm).
	KVM string
	// QEMU is the qemu-system-x86_64 binary (default found in $PATH).
	QEMU string
	// CheckExtension, if set, replaces the KVM_CHECK_EXTENSION ioctl on
	// the opened device (for tests).
	CheckExtension func(fd uintptr, capability int) (int, error)
}

func (h Host) kvm() string {
	if h.KVM == "" {
		return "/dev/kvm"
	}
	return h.KVM
}

func (h Host) qemu() string {
	if h.QEMU == "" {
		return "qemu-system-x86_64"
	}
	return h.QEMU
}

// XenFlags opens the KVM device and returns what KVM_CHECK_EXTENSION says
// of KVM_CAP_XEN_HVM: the KVM_XEN_HVM_CONFIG_* flags (0: no support).
func (h Host) XenFlags() (int, error) {
	f, err := os.OpenFile(h.kvm(), os.O_RDWR|oCloexec, 0)
	if err != nil {
		return 0, fmt.Errorf("%w: %v", ErrNoKVM, err)
	}
	defer f.Close()
	check := h.CheckExtension
	if check == nil {
		check = checkExtension
	}
	flags, err := check(f.Fd(), KVMCapXenHVM)
	if err != nil {
		return 0, fmt.Errorf("%w: %s: KVM_CHECK_EXTENSION: %v (not a KVM device?)", ErrNoKVM, h.kvm(), err)
	}
	return flags, nil
}

// flagNames names the required flags for messages.
var flagNames = []struct {
	bit  int
	name string
}{
	{XenHypercallMSR, "HYPERCALL_MSR"}, {XenInterceptHcall, "INTERCEPT_HCALL"}, {XenSharedInfo, "SHARED_INFO"},
}

// CheckKVM says whether the host's KVM can run a Xen guest.
func (h Host) CheckKVM() error {
	flags, err := h.XenFlags()
	if err != nil {
		return err
	}
	if flags == 0 {
		return fmt.Errorf("%w: %s answers 0 (Linux 5.12 or later with CONFIG_KVM_XEN is needed)", ErrNoXenHVM, h.kvm())
	}
	var missing []string
	for _, f := range flagNames {
		if flags&f.bit == 0 {
			missing = append(missing, "KVM_XEN_HVM_CONFIG_"+f.name)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: flags %#x lack %s", ErrNoXenHVM, flags, strings.Join(missing, ", "))
	}
	return nil
}

var versionRE = regexp.MustCompile(`QEMU emulator version (\d+)\.(\d+)`)

// ParseVersion reads the major and minor version from the output of
// `qemu-system-x86_64 --version`.
func ParseVersion(out string) (major, minor int, err error) {
	m := versionRE.FindStringSubmatch(out)
	if m == nil {
		return 0, 0, fmt.Errorf("qemuxen: no version in %q", firstLine(out))
	}
	major, err1 := strconv.Atoi(m[1])
	minor, err2 := strconv.Atoi(m[2])
	if err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("qemuxen: bad version in %q", firstLine(out))
	}
	return major, minor, nil
}

func firstLine(s string) string {
	s, _, _ = strings.Cut(s, "\n")
	return s
}

// CheckQEMU runs `QEMU --version` and says whether it is 8.0 or later.
func (h Host) CheckQEMU() error {
	out, err := exec.Command(h.qemu(), "--version").Output()
	if err != nil {
		return fmt.Errorf("%w: %s --version: %v", ErrNoQEMU, h.qemu(), err)
	}
	major, minor, err := ParseVersion(string(out))
	if err != nil {
		return fmt.Errorf("%w: %v", ErrNoQEMU, err)
	}
	if major < MinQEMU[0] || major == MinQEMU[0] && minor < MinQEMU[1] {
		return fmt.Errorf("%w: %s is %d.%d", ErrOldQEMU, h.qemu(), major, minor)
	}
	return nil
}

// Check says whether this host can run an image in QEMU's Xen mode: KVM
// with Xen HVM support and QEMU 8.0 or later. The error names every
// reason found.
func (h Host) Check() error {
	return errors.Join(h.CheckKVM(), h.CheckQEMU())
}
