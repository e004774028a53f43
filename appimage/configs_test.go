package appimage

import (
	"fmt"
	"maps"
	"path/filepath"
	"testing"

	"github.com/gozen-dev/gozen/xlcfg"
)

// canonical is an xl config's settings with vif and disk specs parsed, so
// that spacing, quoting, key order and disk spec forms do not matter.
func canonical(t *testing.T, text string) map[string]string {
	t.Helper()
	cfg, err := xlcfg.Parse([]byte(text))
	if err != nil {
		t.Fatalf("%v\n%s", err, text)
	}
	out := map[string]string{}
	for k, v := range cfg.Map() {
		switch k {
		case "vif", "disk":
			specs, err := v.Strings()
			if err != nil {
				t.Fatalf("%s: %v", k, err)
			}
			var parsed []map[string]string
			for _, s := range specs {
				parse := xlcfg.ParseVif
				if k == "disk" {
					parse = xlcfg.ParseDisk
				}
				p, err := parse(s)
				if err != nil {
					t.Fatal(err)
				}
				parsed = append(parsed, p)
			}
			out[k] = fmt.Sprint(parsed) // fmt sorts map keys
		default:
			out[k] = fmt.Sprintf("%d:%s", v.Kind, v.String())
		}
	}
	return out
}

// rigConfig is the xl config qemu/rig.BootDomUs writes for a Gozen guest
// (rig.go: name, type, memory, vcpus, kernel /gozen/NAME.elf, extra,
// lifecycle destroy, cpus pinned to pCPU 1, then Guest.Config), with the
// vif and disk lines the tier-B tests use (TestTierBHTTPD and gozen-run's
// -net: vif-gozen; TestTierBBlock: block-gozen on a loop device).
func rigConfig(m *Manifest) string {
	s := fmt.Sprintf("name = %q\ntype = \"pvh\"\nmemory = %d\nvcpus = 1\n", m.Name, m.Memory)
	s += fmt.Sprintf("kernel = \"/gozen/%s.elf\"\n", m.Name)
	if m.Cmdline != "" {
		s += fmt.Sprintf("extra = %q\n", m.Cmdline)
	}
	s += "on_poweroff = \"destroy\"\non_crash = \"destroy\"\non_reboot = \"destroy\"\n"
	s += "cpus = \"1\"\n"
	for _, n := range m.Networks {
		s += "vif = ['mac=" + n.MAC + ",bridge=xenbr0,script=/etc/xen/scripts/vif-gozen']\n"
	}
	for i, d := range m.Disks {
		s += fmt.Sprintf("disk = ['format=%s,vdev=%s,access=%s,script=/etc/xen/scripts/block-gozen,target=/dev/loop%d']\n", d.Format, d.VDev, d.Access, i)
	}
	return s
}

// TestRigConfigs: each image's xl template, filled in with the rig's host
// values (the ELF in /gozen, the bridge xenbr0 with the rig's vif hotplug
// script, loop devices with its block script) and given the rig's own
// lifecycle and pinning settings (as `gozen-image subst -xl` or xl
// create's KEY=VALUE would), is the config the tier-B rig writes.
func TestRigConfigs(t *testing.T) {
	for _, a := range apps {
		t.Run(a.name, func(t *testing.T) {
			im := build(t, a.name)
			m := im.Manifest
			if len(m.Networks) > 1 || len(m.Disks) > 1 {
				t.Skip("the rig's configs have at most one vif and one disk")
			}
			values := map[string]string{Kernel: "/gozen/" + m.Name + ".elf"}
			if len(m.Networks) > 0 {
				values[Bridge] = "xenbr0,script=/etc/xen/scripts/vif-gozen"
			}
			for i := range m.Disks {
				values[DiskPlaceholder(i)] = fmt.Sprintf("script=/etc/xen/scripts/block-gozen,target=/dev/loop%d", i)
			}
			text, err := Subst(read(t, im.XLTemplate()), values)
			if err != nil {
				t.Fatal(err)
			}
			text += "on_poweroff = \"destroy\"\non_crash = \"destroy\"\non_reboot = \"destroy\"\ncpus = \"1\"\n"
			got, want := canonical(t, text), canonical(t, rigConfig(m))
			if !maps.Equal(got, want) {
				t.Fatalf("generated:\n%v\nrig:\n%v", got, want)
			}
		})
	}
}

// TestHandWrittenConfigs: the hand-written apps/APP/APP.cfg (for
// `xl create` from a checkout) says what the generated template says,
// filled in with the values it uses (build/APP.elf, xenbr0, the kvlog
// image path).
func TestHandWrittenConfigs(t *testing.T) {
	for _, a := range apps {
		t.Run(a.name, func(t *testing.T) {
			im := build(t, a.name)
			values := map[string]string{Kernel: "build/" + a.name + ".elf"}
			if len(im.Manifest.Networks) > 0 {
				values[Bridge] = "xenbr0"
			}
			if len(im.Manifest.Disks) > 0 {
				values[DiskPlaceholder(0)] = "/var/lib/gozen/kvlog.img"
			}
			text, err := Subst(read(t, im.XLTemplate()), values)
			if err != nil {
				t.Fatal(err)
			}
			got := canonical(t, text)
			want := canonical(t, read(t, filepath.Join("..", "apps", a.name, a.name+".cfg")))
			if !maps.Equal(got, want) {
				t.Fatalf("generated:\n%v\napps/%s/%s.cfg:\n%v", got, a.name, a.name, want)
			}
		})
	}
}
