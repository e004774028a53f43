package qemuxen

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"

	"github.com/gozen-dev/gozen/appimage"
)

// fakeDevice is a file standing in for /dev/kvm (the ioctl is injected).
func fakeDevice(t *testing.T) string {
	path := filepath.Join(t.TempDir(), "kvm")
	if err := os.WriteFile(path, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestCheckKVM(t *testing.T) {
	all := XenHypercallMSR | XenInterceptHcall | XenSharedInfo | XenRunstate | XenEvtchn2Level | XenEvtchnSend
	cases := []struct {
		name    string
		flags   int
		ioctl   error
		want    error
		mention string
	}{
		{"full support", all, nil, nil, ""},
		{"required only", RequiredXenFlags, nil, nil, ""},
		{"no Xen support", 0, nil, ErrNoXenHVM, "answers 0"},
		{"no shared info", XenHypercallMSR | XenInterceptHcall, nil, ErrNoXenHVM, "KVM_XEN_HVM_CONFIG_SHARED_INFO"},
		{"only the MSR", XenHypercallMSR, nil, ErrNoXenHVM, "INTERCEPT_HCALL, KVM_XEN_HVM_CONFIG_SHARED_INFO"},
		{"ioctl fails", 0, syscall.ENOTTY, ErrNoKVM, "not a KVM device"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var gotCap int
			h := Host{KVM: fakeDevice(t), CheckExtension: func(fd uintptr, capability int) (int, error) {
				gotCap = capability
				return c.flags, c.ioctl
			}}
			err := h.CheckKVM()
			if !errors.Is(err, c.want) || c.want == nil && err != nil {
				t.Fatalf("got %v, want %v", err, c.want)
			}
			if err != nil && !strings.Contains(err.Error(), c.mention) {
				t.Fatalf("%q does not say %q", err, c.mention)
			}
			if gotCap != 38 {
				t.Fatalf("asked capability %d, want KVM_CAP_XEN_HVM (38)", gotCap)
			}
		})
	}
}

func TestCheckKVMDevice(t *testing.T) {
	// no device at all
	err := Host{KVM: filepath.Join(t.TempDir(), "none")}.CheckKVM()
	if !errors.Is(err, ErrNoKVM) || !strings.Contains(err.Error(), "no such file") {
		t.Fatalf("missing device: %v", err)
	}
	// a file that is not a KVM device: the real ioctl fails
	err = Host{KVM: fakeDevice(t)}.CheckKVM()
	if !errors.Is(err, ErrNoKVM) || !strings.Contains(err.Error(), "KVM_CHECK_EXTENSION") {
		t.Fatalf("regular file: %v", err)
	}
}

func TestParseVersion(t *testing.T) {
	cases := []struct {
		out          string
		major, minor int
		ok           bool
	}{
		{"QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)\nCopyright (c) 2003-2022 Fabrice Bellard", 7, 2, true},
		{"QEMU emulator version 8.0.0\n", 8, 0, true},
		{"QEMU emulator version 10.1.2 (v10.1.2)\n", 10, 1, true},
		{"qemu-system-x86_64: unknown option\n", 0, 0, false},
		{"", 0, 0, false},
	}
	for _, c := range cases {
		major, minor, err := ParseVersion(c.out)
		if (err == nil) != c.ok || major != c.major || minor != c.minor {
			t.Errorf("%q: got %d.%d %v", c.out, major, minor, err)
		}
	}
}

// fakeQEMU is a shell script that prints a version as QEMU does (it does
// not start anything).
func fakeQEMU(t *testing.T, version string) string {
	path := filepath.Join(t.TempDir(), "qemu-system-x86_64")
	script := "#!/bin/sh\necho 'QEMU emulator version " + version + "'\n"
	if err := os.WriteFile(path, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestCheck(t *testing.T) {
	ok := func(uintptr, int) (int, error) { return RequiredXenFlags, nil }
	none := func(uintptr, int) (int, error) { return 0, nil }
	cases := []struct {
		name  string
		h     Host
		wants []error
	}{
		{"can", Host{QEMU: fakeQEMU(t, "8.2.0"), CheckExtension: ok}, nil},
		{"old QEMU", Host{QEMU: fakeQEMU(t, "7.2.22"), CheckExtension: ok}, []error{ErrOldQEMU}},
		{"no QEMU", Host{QEMU: filepath.Join(t.TempDir(), "qemu"), CheckExtension: ok}, []error{ErrNoQEMU}},
		{"no capability, old QEMU", Host{QEMU: fakeQEMU(t, "7.2.22"), CheckExtension: none}, []error{ErrNoXenHVM, ErrOldQEMU}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.h.KVM = fakeDevice(t)
			err := c.h.Check()
			if (err == nil) != (c.wants == nil) {
				t.Fatalf("got %v, want %v", err, c.wants)
			}
			for _, w := range c.wants {
				if !errors.Is(err, w) {
					t.Errorf("got %v, want it to include %v", err, w)
				}
			}
		})
	}
}

func TestArgs(t *testing.T) {
	base := []string{
		"-machine", "pc",
		"-accel", "kvm,xen-version=0x40011,kernel-irqchip=split",
		"-cpu", "host",
	}
	console := []string{"-xen-domid", "1", "-nodefaults", "-nographic",
		"-chardev", "stdio,id=con0", "-device", "xen-console,chardev=con0"}
	cat := func(parts ...[]string) []string { return slices.Concat(parts...) }
	cases := []struct {
		name string
		c    Config
		want []string
	}{
		{"hello", Config{Kernel: "img/hello.elf", Memory: 48, VCPUs: 1, NoReboot: true},
			cat(base, []string{"-m", "48", "-smp", "1"}, console, []string{"-kernel", "img/hello.elf", "-no-reboot"})},
		{"net and disk", Config{
			Kernel: "build/image/app/app.elf", Cmdline: "-v -peer 0", Memory: 64, VCPUs: 2, DomID: 5,
			Nets:  []Net{{MAC: "00:16:3E:5A:00:10", Backend: "user,restrict=on,hostfwd=tcp:127.0.0.1:8080-:80"}},
			Disks: []Disk{{Path: "/var/lib/a,b.img", VDev: "xvda", Format: "raw"}, {Path: "/dev/loop1", VDev: "xvdb", Format: "qcow2", ReadOnly: true}},
		}, cat(base, []string{"-m", "64", "-smp", "2", "-xen-domid", "5"}, console[2:], []string{
			"-kernel", "build/image/app/app.elf",
			"-append", "-v -peer 0",
			"-netdev", "user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:8080-:80",
			"-device", "xen-net-device,netdev=net0,mac=00:16:3e:5a:00:10",
			"-drive", "file=/var/lib/a,,b.img,if=none,id=disk0,format=raw",
			"-device", "xen-disk,drive=disk0,vdev=xvda",
			"-drive", "file=/dev/loop1,if=none,id=disk1,format=qcow2,readonly=on",
			"-device", "xen-disk,drive=disk1,vdev=xvdb",
		})},
		{"bridge, Xen 4.19", Config{Kernel: "k", Memory: 64, VCPUs: 1, XenVersion: 0x40013,
			Nets: []Net{{MAC: "00:16:3e:00:00:01", Backend: "bridge"}, {MAC: "00:16:3e:00:00:02", Backend: "bridge,br=br1"}}},
			cat([]string{"-machine", "pc", "-accel", "kvm,xen-version=0x40013,kernel-irqchip=split", "-cpu", "host", "-m", "64", "-smp", "1"}, console, []string{
				"-kernel", "k",
				"-netdev", "bridge,id=net0", "-device", "xen-net-device,netdev=net0,mac=00:16:3e:00:00:01",
				"-netdev", "bridge,id=net1,br=br1", "-device", "xen-net-device,netdev=net1,mac=00:16:3e:00:00:02",
			})},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := c.c.Args()
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, c.want) {
				t.Fatalf("got\n%q\nwant\n%q", got, c.want)
			}
		})
	}
}

func TestArgsErrors(t *testing.T) {
	ok := Config{Kernel: "k", Memory: 64, VCPUs: 1}
	cases := map[string]func(c *Config){
		"no kernel":      func(c *Config) { c.Kernel = "" },
		"no memory":      func(c *Config) { c.Memory = 0 },
		"no vcpus":       func(c *Config) { c.VCPUs = 0 },
		"domid":          func(c *Config) { c.DomID = 0x7ff0 },
		"cmdline":        func(c *Config) { c.Cmdline = "a\nb" },
		"mac":            func(c *Config) { c.Nets = []Net{{MAC: "00:16:3e", Backend: "user"}} },
		"multicast":      func(c *Config) { c.Nets = []Net{{MAC: "01:16:3e:00:00:01", Backend: "user"}} },
		"backend":        func(c *Config) { c.Nets = []Net{{MAC: "00:16:3e:00:00:01", Backend: "nic"}} },
		"backend id":     func(c *Config) { c.Nets = []Net{{MAC: "00:16:3e:00:00:01", Backend: "user,id=x"}} },
		"backend space":  func(c *Config) { c.Nets = []Net{{MAC: "00:16:3e:00:00:01", Backend: "user, -x"}} },
		"disk path":      func(c *Config) { c.Disks = []Disk{{VDev: "xvda", Format: "raw"}} },
		"disk vdev":      func(c *Config) { c.Disks = []Disk{{Path: "/d", VDev: "hda", Format: "raw"}} },
		"disk format":    func(c *Config) { c.Disks = []Disk{{Path: "/d", VDev: "xvda", Format: "vmdk"}} },
		"negative domid": func(c *Config) { c.DomID = -1 },
	}
	for name, edit := range cases {
		c := ok
		edit(&c)
		if _, err := c.Args(); !errors.Is(err, ErrConfig) {
			t.Errorf("%s: got %v, want ErrConfig", name, err)
		}
	}
	if _, err := ok.Args(); err != nil {
		t.Fatal(err)
	}
}

func TestFromImage(t *testing.T) {
	m, err := appimage.ParseManifest("x", []byte(`{"name": "app", "memory": 64, "cmdline": "-v",
		"networks": [{"mac": "00:16:3e:5a:00:10"}, {}], "disks": [{"vdev": "xvda", "access": "ro"}], "on_reboot": "restart"}`))
	if err != nil {
		t.Fatal(err)
	}
	im := &appimage.Image{Dir: "build/image/app", App: "app", Manifest: m}
	c, err := FromImage(im, "user,restrict=on", []string{"/tmp/d.img"})
	if err != nil {
		t.Fatal(err)
	}
	want := Config{Kernel: "build/image/app/app.elf", Cmdline: "-v", Memory: 64, VCPUs: 1,
		Nets:  []Net{{MAC: "00:16:3e:5a:00:10", Backend: "user,restrict=on"}, {MAC: DefaultMAC("app", 1), Backend: "user,restrict=on"}},
		Disks: []Disk{{Path: "/tmp/d.img", VDev: "xvda", Format: "raw", ReadOnly: true}}}
	if c.Kernel != want.Kernel || c.Cmdline != want.Cmdline || c.Memory != want.Memory || c.VCPUs != want.VCPUs ||
		c.NoReboot || !slices.Equal(c.Nets, want.Nets) || !slices.Equal(c.Disks, want.Disks) {
		t.Fatalf("got %+v\nwant %+v", c, want)
	}
	if _, err := FromImage(im, "user", nil); !errors.Is(err, ErrConfig) {
		t.Fatalf("no disk given: %v", err)
	}
}

func TestDefaultMAC(t *testing.T) {
	a, b := DefaultMAC("gozen-httpd", 0), DefaultMAC("gozen-httpd", 1)
	if a == b || a != DefaultMAC("gozen-httpd", 0) {
		t.Fatalf("%s %s", a, b)
	}
	for _, mac := range []string{a, b, DefaultMAC("x", 7)} {
		if !strings.HasPrefix(mac, "00:16:3e:") || len(mac) != 17 || mac[9] > '7' {
			t.Errorf("%s is not in 00:16:3e:00:00:00-7f:ff:ff", mac)
		}
	}
}
