package appimage

import (
	"errors"
	"fmt"

	"libvirt.org/go/libvirtxml"
)

// The libvirt form of a PVH domain (libvirt's libxl driver): domain type
// xen, OS type xenpvh on machine xenpvh.
const (
	libvirtDomainType = "xen"
	libvirtOSType     = "xenpvh"
	libvirtArch       = "x86_64"
)

// Domain returns the app's libvirt domain (the template: kernel, bridge
// and disk sources are placeholders).
func (m *Manifest) Domain() *libvirtxml.Domain {
	port := uint(0)
	d := &libvirtxml.Domain{
		Type:   libvirtDomainType,
		Name:   m.Name,
		Memory: &libvirtxml.DomainMemory{Value: uint(m.Memory), Unit: "MiB"},
		VCPU:   &libvirtxml.DomainVCPU{Value: uint(m.VCPUs)},
		OS: &libvirtxml.DomainOS{
			Type:    &libvirtxml.DomainOSType{Arch: libvirtArch, Machine: libvirtOSType, Type: libvirtOSType},
			Kernel:  ph(Kernel),
			Cmdline: m.Cmdline,
		},
		OnPoweroff: lifecycle[m.OnPoweroff],
		OnReboot:   lifecycle[m.OnReboot],
		OnCrash:    lifecycle[m.OnCrash],
		Devices: &libvirtxml.DomainDeviceList{
			Consoles: []libvirtxml.DomainConsole{{
				Source: &libvirtxml.DomainChardevSource{Pty: &libvirtxml.DomainChardevSourcePty{}},
				Target: &libvirtxml.DomainConsoleTarget{Type: "xen", Port: &port},
			}},
		},
	}
	for _, n := range m.Networks {
		i := libvirtxml.DomainInterface{
			Source: &libvirtxml.DomainInterfaceSource{Bridge: &libvirtxml.DomainInterfaceSourceBridge{Bridge: ph(Bridge)}},
		}
		if n.MAC != "" {
			i.MAC = &libvirtxml.DomainInterfaceMAC{Address: n.MAC}
		}
		d.Devices.Interfaces = append(d.Devices.Interfaces, i)
	}
	for i, dk := range m.Disks {
		disk := libvirtxml.DomainDisk{
			Device: "disk",
			Driver: &libvirtxml.DomainDiskDriver{Type: dk.Format},
			Source: &libvirtxml.DomainDiskSource{File: &libvirtxml.DomainDiskSourceFile{File: ph(DiskPlaceholder(i))}},
			Target: &libvirtxml.DomainDiskTarget{Dev: dk.VDev, Bus: "xen"},
		}
		if dk.Format == "qcow2" {
			disk.Driver.Name = "qemu" // only QEMU's qdisk backend reads qcow2
		}
		if dk.Access == "ro" {
			disk.ReadOnly = &libvirtxml.DomainDiskReadOnly{}
		}
		d.Devices.Disks = append(d.Devices.Disks, disk)
	}
	return d
}

// LibvirtXML returns the app's libvirt domain XML template (APP.xml.in),
// checked by parsing it back with CheckLibvirtXML.
func (m *Manifest) LibvirtXML() (string, error) {
	doc, err := m.Domain().Marshal()
	if err != nil {
		return "", fmt.Errorf("appimage: libvirt XML: %w", err)
	}
	doc += "\n"
	if err := m.CheckLibvirtXML(doc); err != nil {
		return "", err
	}
	return doc, nil
}

// ErrLibvirt is wrapped by CheckLibvirtXML's errors.
var ErrLibvirt = errors.New("appimage: libvirt XML does not match the manifest")

// CheckLibvirtXML parses a domain XML (a template or one with its
// placeholders filled in) and checks that it is the manifest's xenpvh
// domain: type, OS, kernel present, command line, memory, vCPUs, lifecycle,
// a Xen console, the interfaces (MACs) and disks (vdev, format, access) in
// order.
func (m *Manifest) CheckLibvirtXML(doc string) error {
	var d libvirtxml.Domain
	if err := d.Unmarshal(doc); err != nil {
		return fmt.Errorf("%w: %v", ErrLibvirt, err)
	}
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: %s", ErrLibvirt, fmt.Sprintf(format, args...))
	}
	switch {
	case d.Type != libvirtDomainType:
		return bad("domain type %q, want %q", d.Type, libvirtDomainType)
	case d.Name != m.Name:
		return bad("name %q, want %q", d.Name, m.Name)
	case d.OS == nil || d.OS.Type == nil:
		return bad("no <os><type>")
	case d.OS.Type.Type != libvirtOSType || d.OS.Type.Machine != libvirtOSType || d.OS.Type.Arch != libvirtArch:
		return bad("os type %q machine %q arch %q, want %s %s %s", d.OS.Type.Type, d.OS.Type.Machine, d.OS.Type.Arch, libvirtOSType, libvirtOSType, libvirtArch)
	case d.OS.Kernel == "":
		return bad("no <kernel>")
	case d.OS.Cmdline != m.Cmdline:
		return bad("cmdline %q, want %q", d.OS.Cmdline, m.Cmdline)
	case d.Memory == nil || d.Memory.Unit != "MiB" || d.Memory.Value != uint(m.Memory):
		return bad("memory %+v, want %d MiB", d.Memory, m.Memory)
	case d.VCPU == nil || d.VCPU.Value != uint(m.VCPUs):
		return bad("vcpu %+v, want %d", d.VCPU, m.VCPUs)
	case d.OnPoweroff != lifecycle[m.OnPoweroff] || d.OnReboot != lifecycle[m.OnReboot] || d.OnCrash != lifecycle[m.OnCrash]:
		return bad("lifecycle %q/%q/%q, want %q/%q/%q", d.OnPoweroff, d.OnReboot, d.OnCrash,
			lifecycle[m.OnPoweroff], lifecycle[m.OnReboot], lifecycle[m.OnCrash])
	case d.Devices == nil:
		return bad("no <devices>")
	case len(d.Devices.Consoles) != 1 || d.Devices.Consoles[0].Target == nil || d.Devices.Consoles[0].Target.Type != "xen":
		return bad("want one console with target type xen")
	case len(d.Devices.Interfaces) != len(m.Networks):
		return bad("%d interfaces, want %d", len(d.Devices.Interfaces), len(m.Networks))
	case len(d.Devices.Disks) != len(m.Disks):
		return bad("%d disks, want %d", len(d.Devices.Disks), len(m.Disks))
	}
	for i, n := range m.Networks {
		in := d.Devices.Interfaces[i]
		if in.Source == nil || in.Source.Bridge == nil || in.Source.Bridge.Bridge == "" {
			return bad("interface %d is not on a bridge", i)
		}
		mac := ""
		if in.MAC != nil {
			mac = in.MAC.Address
		}
		if mac != n.MAC {
			return bad("interface %d has MAC %q, want %q", i, mac, n.MAC)
		}
	}
	for i, dk := range m.Disks {
		x := d.Devices.Disks[i]
		switch {
		case x.Device != "disk":
			return bad("disk %d device %q, want disk", i, x.Device)
		case x.Target == nil || x.Target.Dev != dk.VDev || x.Target.Bus != "xen":
			return bad("disk %d target %+v, want %s on bus xen", i, x.Target, dk.VDev)
		case x.Source == nil || (x.Source.File == nil || x.Source.File.File == "") && (x.Source.Block == nil || x.Source.Block.Dev == ""):
			return bad("disk %d has no source", i)
		case x.Driver == nil || x.Driver.Type != dk.Format:
			return bad("disk %d driver %+v, want type %s", i, x.Driver, dk.Format)
		case (x.ReadOnly != nil) != (dk.Access == "ro"):
			return bad("disk %d readonly is %v, want access %s", i, x.ReadOnly != nil, dk.Access)
		}
	}
	return nil
}
