package qemu

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gozen-dev/gozen/appimage"
	"github.com/gozen-dev/gozen/qemu/rig"
)

// imageScript boots two appliance images with their generated xl configs
// (placeholders filled in as a user on a Xen host would): apps/httpd on
// dom0's bridge (its declared vif, the static DHCP lease of its MAC),
// fetched over HTTP, then shut down with xl shutdown; and apps/kvlog with
// its declared disk, a FAT32 image made in dom0 holding config.txt, whose
// log.txt dom0 reads after the guest powered off.
const imageScript = `
T=/gozen/dom0tool
net-up 00:16:3e:5a:00:10=10.0.0.10
gozen-guest gozen-httpd /gozen/gozen-httpd.cfg 300 &
gp=$!
if wait-for log gozen-httpd 'listening on :80' 120; then
	echo "GOZEN-IMG page $(timeout 30 $T get http://10.0.0.10/hello)"
	timeout 30 $T get http://10.0.0.10/status | tr -d '\n' | sed 's/^/GOZEN-IMG status /'; echo
fi
xl shutdown -w gozen-httpd >/dev/null 2>&1 || xl destroy gozen-httpd
wait $gp
dd if=/dev/zero of=/tmp/kv.img bs=1M count=0 seek=64 2>/dev/null
mkfs.fat -F 32 /tmp/kv.img >/dev/null || echo "GOZEN-IMG mkfs.fat failed"
$T fatput /tmp/kv.img config.txt "greeting=hello from the image test"
losetup /dev/loop0 /tmp/kv.img || echo "GOZEN-IMG losetup failed"
gozen-guest gozen-kvlog /gozen/gozen-kvlog.cfg 120
sync
losetup -d /dev/loop0
$T fatcat /tmp/kv.img log.txt
`

// TestTierBImage builds the appliance images of apps/httpd and apps/kvlog
// as make image does (package appimage), fills in their xl config
// templates' placeholders (kernel, bridge, disk target) and boots them in
// tier B with exactly those configs.
func TestTierBImage(t *testing.T) {
	xl := func(app string, values map[string]string) (string, string) {
		t.Helper()
		elf := buildGuest(t, "./apps/"+app)
		im, err := appimage.Build(filepath.Join("..", "apps", app), elf, t.TempDir())
		if err != nil {
			t.Fatalf("FAIL building the %s image: %v", app, err)
		}
		tmpl, err := os.ReadFile(im.XLTemplate())
		if err != nil {
			t.Fatal(err)
		}
		values["kernel"] = "/gozen/gozen-" + app + ".elf"
		cfg, err := appimage.Subst(string(tmpl), values)
		if err != nil {
			t.Fatalf("FAIL filling in %s: %v", im.XLTemplate(), err)
		}
		t.Logf("%s's xl config:\n%s", app, grepLinesNot(cfg, "#"))
		return im.ELF(), cfg
	}
	httpdELF, httpdXL := xl("httpd", map[string]string{"bridge": "xenbr0,script=/etc/xen/scripts/vif-gozen"})
	kvlogELF, kvlogXL := xl("kvlog", map[string]string{"disk0": "script=/etc/xen/scripts/block-gozen,target=/dev/loop0"})
	guests := []rig.Guest{
		{Name: "gozen-httpd", ELF: httpdELF, XL: httpdXL, Timeout: 300 * time.Second},
		{Name: "gozen-kvlog", ELF: kvlogELF, XL: kvlogXL, Timeout: 120 * time.Second},
	}
	run, err := rig.BootDomUs(context.Background(), guests, rig.Script(imageScript), rig.Options{Timeout: 10 * time.Minute})
	saveSerial(t, run)
	if err != nil {
		t.Fatalf("FAIL tier B run: %v\n%s", err, run.SerialText())
	}
	checkWaits(t, run)
	serial := run.SerialText()
	if strings.Contains(serial, "GOZEN-IMG page Hello from Gozen at 10.0.0.10/24: you asked for /hello") &&
		strings.Contains(serial, `"source": "dhcp"`) {
		t.Logf("PASS the httpd image booted from its generated xl config, took its DHCP lease and served:\n%s", grepLines(serial, "GOZEN-IMG page"))
	} else {
		t.Errorf("FAIL the httpd image:\n%s", grepLines(serial, "GOZEN-IMG"))
	}
	if g := run.Guests["gozen-httpd"]; g == nil || g.Reason != rig.ReasonPoweroff {
		t.Errorf("FAIL the httpd image did not power off on xl shutdown: %+v", g)
	}
	if strings.Contains(serial, "GOZEN-FAT log.txt| ") && run.Guests["gozen-kvlog"] != nil && run.Guests["gozen-kvlog"].Has("greeting=hello from the image test") {
		t.Logf("PASS the kvlog image booted from its generated xl config with its declared disk: read config.txt, appended to log.txt:\n%s", grepLines(serial, "GOZEN-FAT log.txt|"))
	} else {
		t.Errorf("FAIL the kvlog image:\n%s%s", grepLines(serial, "GOZEN-FAT"), grepLines(serial, "GZ|gozen-kvlog|"))
	}
}

// grepLinesNot returns the lines of text that do not start with prefix.
func grepLinesNot(text, prefix string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if !strings.HasPrefix(l, prefix) && l != "" {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
