// Package appimage turns a Gozen app into an appliance image: a folder
// with the app's ELF, an xl config template (APP.xl.in) and a libvirt
// domain XML template (APP.xml.in, the xenpvh form), both generated from
// the needs the app declares in its folder's gozen.json (memory, vCPUs,
// network interfaces, disks, command line, lifecycle). The parts that
// depend on the Xen host (where the ELF is, the bridge, the disks'
// backing files or devices) are placeholders, @NAME@, filled in on that
// host with Subst (gozen-image subst).
package appimage

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"regexp"
	"strings"
)

// ManifestFile is the name of the file in an app folder that declares its
// needs.
const ManifestFile = "gozen.json"

// ErrManifest is wrapped by every error about a manifest's contents.
var ErrManifest = errors.New("appimage: bad manifest")

// MinMemory is the smallest domain (MiB) a Gozen image boots in: the floor
// of the smallest app, hello (see the README, "Footprint"). Build checks
// each app's memory against its own image's MemoryFloor.
const MinMemory = 14

// Manifest is what an app declares in its gozen.json.
type Manifest struct {
	// Name is the domain name (xl name=, libvirt <name>). Required.
	Name string `json:"name"`
	// Memory is the domain's memory in MiB (at least MinMemory). Required.
	Memory int `json:"memory"`
	// VCPUs is the number of virtual CPUs (default 1).
	VCPUs int `json:"vcpus,omitempty"`
	// Cmdline is the app's command line (xl extra=, libvirt <cmdline>,
	// QEMU -append): the words os.Args gets.
	Cmdline string `json:"cmdline,omitempty"`
	// Networks are the app's network interfaces (vifs), in order.
	Networks []Network `json:"networks,omitempty"`
	// Disks are the app's disks, in order; disk N is placeholder diskN.
	Disks []Disk `json:"disks,omitempty"`
	// OnPoweroff, OnReboot and OnCrash are xl's lifecycle actions; empty
	// leaves the toolstack's default.
	OnPoweroff string `json:"on_poweroff,omitempty"`
	OnReboot   string `json:"on_reboot,omitempty"`
	OnCrash    string `json:"on_crash,omitempty"`
	// Notes are comment lines for the top of the xl config (how to use
	// the app, how to prepare its disk).
	Notes []string `json:"notes,omitempty"`
}

// Network is one network interface.
type Network struct {
	// MAC is the interface's unicast MAC address; empty lets the
	// toolstack choose one (xl: random in 00:16:3e).
	MAC string `json:"mac,omitempty"`
}

// Disk is one disk.
type Disk struct {
	// VDev is the guest's name for it: xvda, xvdb, ...
	VDev string `json:"vdev"`
	// Access is "rw" (default) or "ro".
	Access string `json:"access,omitempty"`
	// Format is the backing file's format: "raw" (default) or "qcow2".
	Format string `json:"format,omitempty"`
}

// FieldError is a bad value in a manifest: the file, the field (JSON
// path, e.g. disks[0].vdev) and what is wrong. It wraps ErrManifest.
type FieldError struct {
	File  string
	Field string
	Err   error
}

func (e *FieldError) Error() string {
	if e.Field == "" {
		return fmt.Sprintf("appimage: %s: %v", e.File, e.Err)
	}
	return fmt.Sprintf("appimage: %s: field %s: %v", e.File, e.Field, e.Err)
}

// Unwrap returns ErrManifest and the cause.
func (e *FieldError) Unwrap() []error { return []error{ErrManifest, e.Err} }

// LoadManifest reads and checks a manifest file.
func LoadManifest(path string) (*Manifest, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("appimage: %w", err)
	}
	return ParseManifest(path, data)
}

var unknownField = regexp.MustCompile(`^json: unknown field "(.*)"$`)

// ParseManifest parses and checks a manifest; file names it in errors.
// Unknown fields are errors (a misspelt field would otherwise be ignored).
func ParseManifest(file string, data []byte) (*Manifest, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	var m Manifest
	if err := dec.Decode(&m); err != nil {
		var te *json.UnmarshalTypeError
		var se *json.SyntaxError
		switch {
		case errors.As(err, &te):
			return nil, &FieldError{file, te.Field, fmt.Errorf("want a %s, found a JSON %s", te.Type, te.Value)}
		case errors.As(err, &se):
			return nil, &FieldError{file, "", fmt.Errorf("JSON syntax error at byte %d: %v", se.Offset, err)}
		case unknownField.MatchString(err.Error()):
			return nil, &FieldError{file, unknownField.FindStringSubmatch(err.Error())[1], errors.New("unknown field")}
		}
		return nil, &FieldError{file, "", err}
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, &FieldError{file, "", errors.New("data after the JSON object")}
	}
	if err := m.check(file); err != nil {
		return nil, err
	}
	return &m, nil
}

var (
	nameRE = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)
	vdevRE = regexp.MustCompile(`^xvd[a-z]$`)
)

// maxCmdline is Xen's limit on a guest command line (MAX_GUEST_CMDLINE).
const maxCmdline = 1024

// lifecycle are the actions xl.cfg(5) allows, with libvirt's name for
// each (empty: libvirt has none).
var lifecycle = map[string]string{
	"destroy": "destroy", "restart": "restart", "rename-restart": "rename-restart",
	"preserve": "preserve", "coredump-destroy": "coredump-destroy",
	"coredump-restart": "coredump-restart", "soft-reset": "",
}

// plainText reports the first character of s that cannot go into a quoted
// xl string, an XML document or next to a placeholder.
func plainText(s string) error {
	for _, r := range s {
		if r < ' ' || r == 0x7f || strings.ContainsRune(`"'\@<>&`, r) {
			return fmt.Errorf("%q contains %q (quotes, backslash, @, <, >, & and control characters are not allowed)", s, r)
		}
	}
	return nil
}

func (m *Manifest) check(file string) error {
	bad := func(field string, format string, args ...any) error {
		return &FieldError{file, field, fmt.Errorf(format, args...)}
	}
	if !nameRE.MatchString(m.Name) {
		return bad("name", "%q is not a domain name (1-64 of A-Z a-z 0-9 . _ -, not starting with . _ -)", m.Name)
	}
	if m.Memory < MinMemory || m.Memory > 1<<20 {
		return bad("memory", "%d MiB is outside %d..%d (a Gozen image needs at least %d MiB)", m.Memory, MinMemory, 1<<20, MinMemory)
	}
	if m.VCPUs == 0 {
		m.VCPUs = 1
	}
	if m.VCPUs < 1 || m.VCPUs > 128 {
		return bad("vcpus", "%d is outside 1..128", m.VCPUs)
	}
	if len(m.Cmdline) > maxCmdline {
		return bad("cmdline", "%d bytes, more than Xen's %d", len(m.Cmdline), maxCmdline)
	}
	if err := plainText(m.Cmdline); err != nil {
		return bad("cmdline", "%v", err)
	}
	macs := map[string]int{}
	for i := range m.Networks {
		n := &m.Networks[i]
		if n.MAC == "" {
			continue
		}
		field := fmt.Sprintf("networks[%d].mac", i)
		hw, err := net.ParseMAC(n.MAC)
		if err != nil || len(hw) != 6 {
			return bad(field, "%q is not a MAC address like 00:16:3e:5a:00:10", n.MAC)
		}
		if hw[0]&1 != 0 {
			return bad(field, "%s is a multicast address", n.MAC)
		}
		n.MAC = hw.String()
		if j, dup := macs[n.MAC]; dup {
			return bad(field, "%s is also networks[%d]'s", n.MAC, j)
		}
		macs[n.MAC] = i
	}
	vdevs := map[string]int{}
	for i := range m.Disks {
		d := &m.Disks[i]
		field := fmt.Sprintf("disks[%d]", i)
		if !vdevRE.MatchString(d.VDev) {
			return bad(field+".vdev", "%q is not xvda..xvdz", d.VDev)
		}
		if j, dup := vdevs[d.VDev]; dup {
			return bad(field+".vdev", "%s is also disks[%d]'s", d.VDev, j)
		}
		vdevs[d.VDev] = i
		switch d.Access {
		case "":
			d.Access = "rw"
		case "rw", "ro":
		default:
			return bad(field+".access", "%q is neither rw nor ro", d.Access)
		}
		switch d.Format {
		case "":
			d.Format = "raw"
		case "raw", "qcow2":
		default:
			return bad(field+".format", "%q is neither raw nor qcow2", d.Format)
		}
	}
	for field, v := range map[string]string{"on_poweroff": m.OnPoweroff, "on_reboot": m.OnReboot, "on_crash": m.OnCrash} {
		if _, ok := lifecycle[v]; v != "" && !ok {
			return bad(field, "%q is not an xl action (destroy, restart, rename-restart, preserve, coredump-destroy, coredump-restart, soft-reset)", v)
		}
	}
	for i, n := range m.Notes {
		if strings.ContainsAny(n, "\n\r") || strings.Contains(n, "@") {
			return bad(fmt.Sprintf("notes[%d]", i), "a note is one line without @")
		}
	}
	return nil
}
