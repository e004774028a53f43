package appimage

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"libvirt.org/go/libvirtxml"

	"github.com/gozen-dev/gozen/xlcfg"
)

// pvhELF writes a minimal x86-64 ELF with one PT_NOTE segment holding the
// note "Xen" of type typ (18: XEN_ELFNOTE_PHYS32_ENTRY) and one PT_LOAD of
// trimmedSize bytes at 0x10f000, the size of a trimmed hello.
func pvhELF(t *testing.T, typ uint32) string { return pvhELFSized(t, typ, trimmedSize) }

// trimmedSize is how much a trimmed apps/hello loads (0x10f000-0x3adca0).
const trimmedSize = 0x29eca0

func pvhELFSized(t *testing.T, typ uint32, loaded uint64) string {
	t.Helper()
	le := binary.LittleEndian
	const notes = 64 + 2*56
	b := make([]byte, notes+24)
	copy(b, "\x7fELF")
	b[4], b[5], b[6] = 2, 1, 1 // ELFCLASS64, little endian, EV_CURRENT
	le.PutUint16(b[16:], 2)    // ET_EXEC
	le.PutUint16(b[18:], 62)   // EM_X86_64
	le.PutUint32(b[20:], 1)
	le.PutUint64(b[32:], 64) // phoff
	le.PutUint16(b[52:], 64) // ehsize
	le.PutUint16(b[54:], 56) // phentsize
	le.PutUint16(b[56:], 2)  // phnum
	ph := b[64:]
	le.PutUint32(ph[0:], 4)     // PT_NOTE
	le.PutUint64(ph[8:], notes) // offset
	le.PutUint64(ph[32:], 24)   // filesz
	le.PutUint64(ph[40:], 24)   // memsz
	le.PutUint64(ph[48:], 4)    // align
	ph = b[64+56:]
	le.PutUint32(ph[0:], 1) // PT_LOAD
	le.PutUint32(ph[4:], 7)
	le.PutUint64(ph[16:], 0x10f000) // vaddr
	le.PutUint64(ph[24:], 0x10f000) // paddr
	le.PutUint64(ph[32:], uint64(len(b)))
	le.PutUint64(ph[40:], loaded) // memsz
	le.PutUint64(ph[48:], 0x1000)
	n := b[notes:]
	le.PutUint32(n[0:], 4)
	le.PutUint32(n[4:], 8)
	le.PutUint32(n[8:], typ)
	copy(n[12:], "Xen\x00")
	le.PutUint32(n[16:], 0x110000)
	path := filepath.Join(t.TempDir(), "app.elf")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestMemoryFloor(t *testing.T) {
	for _, tt := range []struct {
		name   string
		loaded uint64
		want   int
	}{
		// ends 0x3adca0: + 1 MiB early heap passes 4 MiB, so the first
		// arena is 8-12 MiB, then the 1 MiB + 64 KiB stack area
		{"trimmed hello", trimmedSize, 14},
		{"untrimmed hello", trimmedSize + 1<<25, 46},              // the FIPS buffer back in: arena 40-44
		{"first arena at 4 MiB", 0x300000 - 0x10f000, 10},         // 3 + 1 = 4 MiB exactly: arena 4-8
		{"one byte more", 0x300000 - 0x10f000 + 1, 14},            // arena 8-12
		{"arena at 8 MiB, end of range", 0x700000 - 0x10f000, 14}, // 7 + 1 = 8: still 8-12
	} {
		got, err := MemoryFloor(pvhELFSized(t, xenElfnotePhys32Entry, tt.loaded))
		if err != nil || got != tt.want {
			t.Errorf("%s: MemoryFloor = %d, %v; want %d", tt.name, got, err, tt.want)
		}
	}
	if _, err := MemoryFloor(filepath.Join("..", "apps", "hello", "main.go")); !errors.Is(err, ErrNotPVH) {
		t.Errorf("MemoryFloor of a Go file: %v, want ErrNotPVH", err)
	}
}

// TestBuildBelowFloor: an app declaring less memory than its image needs
// is an error naming gozen.json's memory field.
func TestBuildBelowFloor(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tiny")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, ManifestFile), []byte(`{"name": "tiny", "memory": 16}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Build(dir, pvhELF(t, xenElfnotePhys32Entry), filepath.Join(t.TempDir(), "out")); err != nil {
		t.Fatalf("16 MiB for a trimmed image: %v", err)
	}
	_, err := Build(dir, pvhELFSized(t, xenElfnotePhys32Entry, trimmedSize+1<<25), filepath.Join(t.TempDir(), "out"))
	var fe *FieldError
	if !errors.As(err, &fe) || fe.Field != "memory" || !errors.Is(err, ErrManifest) {
		t.Fatalf("16 MiB for an untrimmed image: %v, want a FieldError on memory", err)
	}
	t.Log(err)
}

func TestCheckPVH(t *testing.T) {
	if err := CheckPVH(pvhELF(t, xenElfnotePhys32Entry)); err != nil {
		t.Fatal(err)
	}
	for name, path := range map[string]string{
		"other note": pvhELF(t, 5),
		"not an ELF": filepath.Join("..", "apps", "hello", "main.go"),
		"missing":    filepath.Join(t.TempDir(), "none.elf"),
	} {
		if err := CheckPVH(path); !errors.Is(err, ErrNotPVH) {
			t.Errorf("%s: got %v, want ErrNotPVH", name, err)
		}
	}
}

// apps are the apps in ../apps with a manifest, and what each declares.
var apps = []struct {
	name     string
	domain   string
	memory   int
	cmdline  string
	networks int
	disks    int
}{
	{"cpupolicy", "gozen-cpupolicy", 48, "-hold 60s", 0, 0},
	{"hello", "gozen-hello", 16, "", 0, 0},
	{"httpd", "gozen-httpd", 64, "", 1, 0},
	{"kvlog", "gozen-kvlog", 64, "", 0, 1},
	{"shell", "gozen-shell", 48, "", 0, 0},
	{"v4v-ping", "v4v-server", 64, "-serve", 0, 0},
	{"vchan-echo", "gozen-vchan-echo", 64, "-peer 0 -port echo", 0, 0},
}

func TestEveryAppHasAManifest(t *testing.T) {
	dirs, err := os.ReadDir(filepath.Join("..", "apps"))
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, d := range dirs {
		if d.IsDir() {
			names = append(names, d.Name())
		}
	}
	if len(names) != len(apps) {
		t.Fatalf("apps/ has %v, the test knows %d apps: add the new one to apps", names, len(apps))
	}
	for i, n := range names {
		if apps[i].name != n {
			t.Fatalf("apps/ has %v, the test knows %v", names, apps[i].name)
		}
	}
}

// build makes the image of ../apps/app in a temporary folder.
func build(t *testing.T, app string) *Image {
	t.Helper()
	im, err := Build(filepath.Join("..", "apps", app), pvhELF(t, xenElfnotePhys32Entry), filepath.Join(t.TempDir(), app))
	if err != nil {
		t.Fatal(err)
	}
	return im
}

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// hostValues are placeholder values as a Xen host would give them.
func hostValues(im *Image) map[string]string {
	v := map[string]string{Kernel: "/srv/gozen/" + im.App + ".elf"}
	if len(im.Manifest.Networks) > 0 {
		v[Bridge] = "xenbr0"
	}
	for i := range im.Manifest.Disks {
		v[DiskPlaceholder(i)] = fmt.Sprintf("/dev/loop%d", i)
	}
	return v
}

func TestImages(t *testing.T) {
	for _, a := range apps {
		t.Run(a.name, func(t *testing.T) {
			im := build(t, a.name)
			m := im.Manifest
			if m.Name != a.domain || m.Memory != a.memory || m.VCPUs != 1 || m.Cmdline != a.cmdline ||
				len(m.Networks) != a.networks || len(m.Disks) != a.disks {
				t.Fatalf("manifest %+v does not declare %+v", m, a)
			}
			if _, err := OpenImage(im.Dir); err != nil {
				t.Fatal(err)
			}
			for _, f := range []string{im.ELF(), im.XLTemplate(), im.LibvirtTemplate(), filepath.Join(im.Dir, ImageManifest)} {
				if _, err := os.Stat(f); err != nil {
					t.Fatal(err)
				}
			}
			values := hostValues(im)

			// the xl config, placeholders filled in
			tmpl := read(t, im.XLTemplate())
			if got, want := TemplatePlaceholders(tmpl), sortedKeys(values); !slices.Equal(got, want) {
				t.Fatalf("xl placeholders %v, want %v", got, want)
			}
			text, err := Subst(tmpl, values)
			if err != nil {
				t.Fatal(err)
			}
			cfg, err := xlcfg.Parse([]byte(text))
			if err != nil {
				t.Fatalf("%v\n%s", err, text)
			}
			kv := cfg.Map()
			want := map[string]string{"name": a.domain, "type": "pvh", "kernel": values[Kernel],
				"memory": fmt.Sprint(a.memory), "vcpus": "1", "on_poweroff": "destroy", "on_crash": "preserve"}
			if a.cmdline != "" {
				want["extra"] = a.cmdline
			}
			if m.OnReboot != "" {
				want["on_reboot"] = m.OnReboot
			}
			for k, w := range want {
				if v, ok := kv[k]; !ok || v.Str != w {
					t.Errorf("xl %s = %v, want %q", k, v, w)
				}
			}
			keys := len(want)
			if v, ok := kv["vif"]; ok {
				keys++
				specs, err := v.Strings()
				if err != nil || len(specs) != a.networks {
					t.Fatalf("vif = %v, want %d specs", v, a.networks)
				}
				for i, s := range specs {
					p, err := xlcfg.ParseVif(s)
					if err != nil {
						t.Fatal(err)
					}
					if p["bridge"] != "xenbr0" || p["mac"] != m.Networks[i].MAC {
						t.Errorf("vif %d = %v", i, p)
					}
				}
			} else if a.networks > 0 {
				t.Error("no vif")
			}
			if v, ok := kv["disk"]; ok {
				keys++
				specs, err := v.Strings()
				if err != nil || len(specs) != a.disks {
					t.Fatalf("disk = %v, want %d specs", v, a.disks)
				}
				for i, s := range specs {
					p, err := xlcfg.ParseDisk(s)
					if err != nil {
						t.Fatal(err)
					}
					d := m.Disks[i]
					w := map[string]string{"format": d.Format, "vdev": d.VDev, "access": d.Access, "target": values[DiskPlaceholder(i)]}
					if !maps.Equal(p, w) {
						t.Errorf("disk %d = %v, want %v", i, p, w)
					}
				}
			} else if a.disks > 0 {
				t.Error("no disk")
			}
			if len(kv) != keys {
				t.Errorf("xl config has keys %v, want %d", sortedKeys(kv), keys)
			}

			// the libvirt XML, placeholders filled in, parsed back
			doc, err := Subst(read(t, im.LibvirtTemplate()), values)
			if err != nil {
				t.Fatal(err)
			}
			if err := m.CheckLibvirtXML(doc); err != nil {
				t.Fatal(err)
			}
			var d libvirtxml.Domain
			if err := d.Unmarshal(doc); err != nil {
				t.Fatal(err)
			}
			if d.Type != "xen" || d.OS.Type.Type != "xenpvh" || d.OS.Type.Machine != "xenpvh" || d.OS.Type.Arch != "x86_64" ||
				d.OS.Kernel != values[Kernel] || d.OS.Cmdline != a.cmdline || d.Name != a.domain ||
				d.Memory.Value != uint(a.memory) || d.Memory.Unit != "MiB" || d.VCPU.Value != 1 ||
				d.OnPoweroff != "destroy" || d.OnCrash != "preserve" || d.OnReboot != m.OnReboot {
				t.Errorf("domain XML:\n%s", doc)
			}
			if len(d.Devices.Interfaces) != a.networks || len(d.Devices.Disks) != a.disks {
				t.Fatalf("domain XML devices:\n%s", doc)
			}
			for i, in := range d.Devices.Interfaces {
				if in.Source.Bridge.Bridge != "xenbr0" || in.MAC.Address != m.Networks[i].MAC {
					t.Errorf("interface %d: %+v", i, in)
				}
			}
			for i, dk := range d.Devices.Disks {
				if dk.Source.File.File != values[DiskPlaceholder(i)] || dk.Target.Dev != m.Disks[i].VDev ||
					dk.Target.Bus != "xen" || dk.Driver.Type != "raw" || dk.ReadOnly != nil {
					t.Errorf("disk %d: %+v", i, dk)
				}
			}
		})
	}
}

func sortedKeys[V any](m map[string]V) []string { return slices.Sorted(maps.Keys(m)) }
