package rig

import (
	"bytes"
	"compress/gzip"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// linuxDomUModules are the Xen device modules a Linux domU loads to run
// libxenvchan: event channels (/dev/xen/evtchn), mapping a peer's grants
// (/dev/xen/gntdev, the client) and granting its own pages
// (/dev/xen/gntalloc, the server). Xenstore (/dev/xen/xenbus) is built in.
var linuxDomUModules = []string{"xen-evtchn", "xen-gntdev", "xen-gntalloc"}

// linuxInitPrelude starts a Linux domU's /init for a Guest with Init: the
// reference initramfs has a handful of busybox links, so it installs the
// rest, mounts the pseudo file systems and loads linuxDomUModules.
const linuxInitPrelude = `#!/bin/sh
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
/bin/busybox --install -s /bin 2>/dev/null
for m in %s; do
	insmod /lib/modules/$m.ko || echo "GOZEN-LINUX-DOMU: insmod $m failed"
done
`

// linuxInitArchive returns the gzipped cpio archive the rig appends to the
// reference Linux domU's initramfs for a guest with Init: /init (the
// prelude, the guest's script, then poweroff), /lib/modules with
// linuxDomUModules and the more asked for, the extra files, and /gozen/vchanpeer (the libxenvchan peer, see
// vchanpeer.go). Linux unpacks the archives in order, so this /init
// replaces the reference one.
func linuxInitArchive(script string, more []string, extra []CPIOFile) ([]byte, error) {
	kver, err := kernelVersion()
	if err != nil {
		return nil, err
	}
	mods := append(append([]string(nil), linuxDomUModules...), more...)
	init := fmt.Sprintf(linuxInitPrelude, strings.Join(mods, " ")) + script + "\npoweroff -f\n"
	files := append([]CPIOFile{{Name: "init", Mode: 0o755, Data: []byte(init)}, vchanPeerFile()}, extra...)
	for _, m := range mods {
		data, err := kernelModule(kver, m)
		if err != nil {
			return nil, err
		}
		files = append(files, CPIOFile{Name: "lib/modules/" + m + ".ko", Mode: 0o644, Data: data})
	}
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if err := WriteCPIO(zw, files); err != nil {
		return nil, fmt.Errorf("linux domU initramfs: %w", err)
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("linux domU initramfs: %w", err)
	}
	return buf.Bytes(), nil
}

// kernelModule returns module name (name.ko or name.ko.xz, decompressed)
// of kernel kver from the Debian kernel unpacked in the rig cache.
func kernelModule(kver, name string) ([]byte, error) {
	dir := filepath.Join(Cache(), "x", "lib", "modules", kver, "kernel")
	var found string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if b := d.Name(); found == "" && (b == name+".ko" || b == name+".ko.xz") {
			found = p
			return filepath.SkipAll
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("looking for kernel module %s in %s: %w", name, dir, err)
	}
	if found == "" {
		return nil, fmt.Errorf("kernel module %s not in %s (run qemu/setup.sh)", name, dir)
	}
	if !strings.HasSuffix(found, ".xz") {
		data, err := os.ReadFile(found)
		if err != nil {
			return nil, fmt.Errorf("kernel module %s: %w", name, err)
		}
		return data, nil
	}
	data, err := exec.Command("xz", "-dc", found).Output()
	if err != nil {
		return nil, fmt.Errorf("kernel module %s: xz -dc %s: %w", name, found, err)
	}
	return data, nil
}
