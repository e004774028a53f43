package appimage

import (
	"errors"
	"strings"
	"testing"
)

func TestManifestErrors(t *testing.T) {
	cases := []struct {
		name, json, field string
	}{
		{"no name", `{"memory": 64}`, "name"},
		{"bad name", `{"name": "a b", "memory": 64}`, "name"},
		{"no memory", `{"name": "a"}`, "memory"},
		{"small memory", `{"name": "a", "memory": 12}`, "memory"},
		{"memory string", `{"name": "a", "memory": "64"}`, "memory"},
		{"vcpus", `{"name": "a", "memory": 64, "vcpus": 200}`, "vcpus"},
		{"negative vcpus", `{"name": "a", "memory": 64, "vcpus": -1}`, "vcpus"},
		{"unknown field", `{"name": "a", "memory": 64, "memroy": 64}`, "memroy"},
		{"cmdline quote", `{"name": "a", "memory": 64, "cmdline": "-x \"y\""}`, "cmdline"},
		{"cmdline at", `{"name": "a", "memory": 64, "cmdline": "@kernel@"}`, "cmdline"},
		{"cmdline long", `{"name": "a", "memory": 64, "cmdline": "` + strings.Repeat("x", 1025) + `"}`, "cmdline"},
		{"mac", `{"name": "a", "memory": 64, "networks": [{"mac": "00:16:3e"}]}`, "networks[0].mac"},
		{"multicast mac", `{"name": "a", "memory": 64, "networks": [{}, {"mac": "01:16:3e:00:00:01"}]}`, "networks[1].mac"},
		{"same mac", `{"name": "a", "memory": 64, "networks": [{"mac": "00:16:3e:00:00:01"}, {"mac": "00:16:3E:00:00:01"}]}`, "networks[1].mac"},
		{"network field", `{"name": "a", "memory": 64, "networks": [{"bridge": "xenbr0"}]}`, "bridge"},
		{"vdev", `{"name": "a", "memory": 64, "disks": [{"vdev": "sda"}]}`, "disks[0].vdev"},
		{"same vdev", `{"name": "a", "memory": 64, "disks": [{"vdev": "xvda"}, {"vdev": "xvda"}]}`, "disks[1].vdev"},
		{"access", `{"name": "a", "memory": 64, "disks": [{"vdev": "xvda", "access": "w"}]}`, "disks[0].access"},
		{"format", `{"name": "a", "memory": 64, "disks": [{"vdev": "xvda", "format": "vmdk"}]}`, "disks[0].format"},
		{"lifecycle", `{"name": "a", "memory": 64, "on_crash": "explode"}`, "on_crash"},
		{"note", `{"name": "a", "memory": 64, "notes": ["mail me@example.org"]}`, "notes[0]"},
		{"syntax", `{"name": "a", "memory": 64,}`, ""},
		{"trailing", `{"name": "a", "memory": 64} {}`, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := ParseManifest("apps/x/gozen.json", []byte(c.json))
			var fe *FieldError
			if !errors.Is(err, ErrManifest) || !errors.As(err, &fe) {
				t.Fatalf("got %v, want a FieldError", err)
			}
			if fe.File != "apps/x/gozen.json" || fe.Field != c.field {
				t.Fatalf("got file %q field %q, want field %q (%v)", fe.File, fe.Field, c.field, err)
			}
			if !strings.Contains(err.Error(), "apps/x/gozen.json") || !strings.Contains(err.Error(), c.field) {
				t.Fatalf("message %q names neither file nor field", err)
			}
		})
	}
}

func TestManifestDefaults(t *testing.T) {
	m, err := ParseManifest("x", []byte(`{"name": "a", "memory": 64, "networks": [{"mac": "00:16:3E:00:00:0A"}], "disks": [{"vdev": "xvdb"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if m.VCPUs != 1 || m.Disks[0].Access != "rw" || m.Disks[0].Format != "raw" || m.Networks[0].MAC != "00:16:3e:00:00:0a" {
		t.Fatalf("defaults not filled in: %+v", m)
	}
}

func TestSubst(t *testing.T) {
	tmpl := "kernel = \"@kernel@\"\nvif = ['bridge=@bridge@']\n# @kernel@ again\n"
	cases := []struct {
		name   string
		values map[string]string
		want   string
		err    error
	}{
		{"all", map[string]string{"kernel": "/k.elf", "bridge": "xenbr0"},
			"kernel = \"/k.elf\"\nvif = ['bridge=xenbr0']\n# /k.elf again\n", nil},
		{"missing", map[string]string{"kernel": "/k.elf"}, "", ErrMissing},
		{"unknown", map[string]string{"kernel": "/k.elf", "bridge": "b", "disk0": "/d"}, "", ErrUnknown},
		{"empty", map[string]string{"kernel": "", "bridge": "b"}, "", ErrValue},
		{"quote", map[string]string{"kernel": "/k\".elf", "bridge": "b"}, "", ErrValue},
		{"newline", map[string]string{"kernel": "/k\n", "bridge": "b"}, "", ErrValue},
		{"xml", map[string]string{"kernel": "/k&", "bridge": "b"}, "", ErrValue},
		{"placeholder in value", map[string]string{"kernel": "@bridge@", "bridge": "b"}, "", ErrValue},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, err := Subst(tmpl, c.values)
			if !errors.Is(err, c.err) || got != c.want {
				t.Fatalf("got %q, %v; want %q, %v", got, err, c.want, c.err)
			}
		})
	}
	_, err := Subst(tmpl, map[string]string{})
	if err == nil || !strings.Contains(err.Error(), "bridge, kernel") {
		t.Fatalf("missing placeholders not all named: %v", err)
	}
}

func TestCheckLibvirtXMLRejects(t *testing.T) {
	m, err := ParseManifest("x", []byte(`{"name": "a", "memory": 64, "cmdline": "-v", "networks": [{"mac": "00:16:3e:00:00:01"}], "disks": [{"vdev": "xvda", "access": "ro"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	doc, err := m.LibvirtXML()
	if err != nil {
		t.Fatal(err)
	}
	edits := []struct{ name, from, to string }{
		{"domain type", `type="xen"`, `type="kvm"`},
		{"os type", `>xenpvh<`, `>hvm<`},
		{"machine", `machine="xenpvh"`, `machine="pc"`},
		{"name", `<name>a<`, `<name>b<`},
		{"memory", `>64</memory>`, `>65</memory>`},
		{"memory unit", `unit="MiB"`, `unit="KiB"`},
		{"vcpu", `<vcpu>1<`, `<vcpu>2<`},
		{"cmdline", `<cmdline>-v<`, `<cmdline>-w<`},
		{"mac", `00:16:3e:00:00:01`, `00:16:3e:00:00:02`},
		{"vdev", `dev="xvda"`, `dev="xvdb"`},
		{"readonly", `<readonly></readonly>`, ``},
		{"console", `type="xen" port="0"`, `type="serial" port="0"`},
		{"not XML", `<domain`, `<<domain`},
	}
	for _, e := range edits {
		bad := strings.Replace(doc, e.from, e.to, 1)
		if bad == doc {
			t.Fatalf("%s: %q not in\n%s", e.name, e.from, doc)
		}
		if err := m.CheckLibvirtXML(bad); !errors.Is(err, ErrLibvirt) {
			t.Errorf("%s: got %v, want ErrLibvirt", e.name, err)
		}
	}
}

// FuzzManifest: a manifest parses or fails with ErrManifest; one that
// parses makes templates that pass their own checks.
func FuzzManifest(f *testing.F) {
	f.Add([]byte(`{"name": "gozen-httpd", "memory": 64, "networks": [{"mac": "00:16:3e:5a:00:10"}]}`))
	f.Add([]byte(`{"name": "k", "memory": 64, "cmdline": "-a b", "disks": [{"vdev": "xvda", "access": "ro", "format": "qcow2"}], "on_reboot": "soft-reset"}`))
	f.Add([]byte(`{"name": "x", "memory": 1e3}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := ParseManifest("fuzz.json", data)
		if err != nil {
			if !errors.Is(err, ErrManifest) {
				t.Fatalf("error without ErrManifest: %v", err)
			}
			return
		}
		if err := m.CheckXL("app", m.XL("app")); err != nil {
			t.Fatalf("%v\n%s", err, m.XL("app"))
		}
		if _, err := m.LibvirtXML(); err != nil {
			t.Fatal(err)
		}
	})
}
