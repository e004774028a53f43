package qemu

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gozen-dev/gozen/qemu/rig"
)

// benchIOMemory is the memory of both guests of the network and block
// benchmarks: the reference Linux domU ran out of memory ("System is
// deadlocked on memory") at benchMemory with xen-netfront and dom0tool in
// its initramfs; both get the same.
const benchIOMemory = 192

// Addresses of the network benchmark's guests on dom0's bridge.
const (
	benchNetMACGozen = "00:16:3e:5a:00:21"
	benchNetIPGozen  = "10.0.0.21"
	benchNetMACLinux = "00:16:3e:5a:00:22"
	benchNetIPLinux  = "10.0.0.22"
	benchWebMACGozen = "00:16:3e:5a:00:23"
	benchWebIPGozen  = "10.0.0.23"
	benchWebMACLinux = "00:16:3e:5a:00:24"
	benchWebIPLinux  = "10.0.0.24"
)

// benchWebSeconds and benchWebConns shape the HTTP load: keep-alive GETs
// of apps/httpd's page from this many connections for this long.
const (
	benchWebSeconds = 15
	benchWebConns   = 8
)

// benchNetScript runs the same work against each guest in turn, alone on
// its vCPU, against the same dom0 peer: the guest GETs dom0's 64 MiB blob
// from busybox httpd (dom0 to guest) with Go's net/http client, then
// serves its own 64 MiB blob with Go's net/http server and dom0 fetches it
// (guest to dom0). The Gozen guest is qemu/guests/nettest; the Linux PVH
// domU runs dom0tool (fetch, then serveblob), built from the same Go code
// paths (net/http, the test stream), over Linux's netfront.
var benchNetScript = fmt.Sprintf(`
net-up %[1]s=%[2]s %[3]s=%[4]s
/gozen/dom0tool blob /srv/blob %[5]d 7
/gozen/dom0tool udpecho 10.0.0.1:7 &
/gozen/dom0tool dns 10.0.0.1:53 gozen.test=10.0.0.1 &
gozen-guest gzb /gozen/gzb.cfg 600 &
gp=$!
if wait-for log gzb 'NETTEST SERVING' 400; then
	echo "GOZEN-BN gozen $(timeout 300 /gozen/dom0tool fetch http://%[2]s/blob %[5]d 8)"
	timeout 30 /gozen/dom0tool get http://%[2]s/quit >/dev/null
fi
wait $gp
gozen-guest lxb /gozen/lxb.cfg 600 &
gp=$!
if wait-for log lxb 'GOZEN-SERVING' 400; then
	echo "GOZEN-BN linux $(timeout 300 /gozen/dom0tool fetch http://%[4]s/blob %[5]d 8)"
	timeout 30 /gozen/dom0tool get http://%[4]s/quit >/dev/null
fi
wait $gp
gozen-guest gzh /gozen/gzh.cfg 600 &
gp=$!
if wait-for log gzh 'listening on :80' 400; then
	echo "GOZEN-BW gozen $(/gozen/dom0tool hload http://%[6]s/ %[8]d %[9]d)"
fi
xl shutdown -w gzh >/dev/null 2>&1 || xl destroy gzh
wait $gp
gozen-guest lxh /gozen/lxh.cfg 600 &
gp=$!
if wait-for log lxh 'listening on :80' 400; then
	echo "GOZEN-BW linux $(/gozen/dom0tool hload http://%[7]s/ %[8]d %[9]d)"
fi
xl destroy lxh
wait $gp
`, benchNetMACGozen, benchNetIPGozen, benchNetMACLinux, benchNetIPLinux, netBlob,
	benchWebIPGozen, benchWebIPLinux, benchWebConns, benchWebSeconds)

// benchWebLinuxInit is the Linux HTTP guest's part: its address, then
// apps/httpd built for linux/amd64 (it logs "listening on :80" like the
// Gozen build) until dom0 destroys the domain.
var benchWebLinuxInit = fmt.Sprintf(`
ip link set dev lo up
ip link set dev eth0 up && ip addr add %[1]s/24 dev eth0 || echo "GOZEN-LINUX-DOMU: no eth0"
/gozen/httpd
`, benchWebIPLinux)

// benchNetLinuxInit is the Linux guest's part: its address, the same GET,
// then serving.
var benchNetLinuxInit = fmt.Sprintf(`
ip link set dev lo up
ip link set dev eth0 up && ip addr add %[1]s/24 dev eth0 || echo "GOZEN-LINUX-DOMU: no eth0"
echo "GOZEN-LBN $(/gozen/dom0tool fetch http://10.0.0.1/blob %[2]d 7)"
/gozen/dom0tool serveblob :80 %[2]d 8
`, benchNetIPLinux, netBlob)

var (
	// GOZEN-FETCH PASS url N bytes in S s R MB/s status 200
	benchFetchRE = regexp.MustCompile(`GOZEN-FETCH PASS \S+ \d+ bytes in \S+ (\S+) MB/s`)
	nettestGetRE = regexp.MustCompile(`NETTEST BENCH http-get (\S+) MB/s`)
	// GOZEN-HLOAD url requests seconds req/s errors (errors must be 0)
	benchHloadRE = regexp.MustCompile(`GOZEN-HLOAD \S+ \d+ \S+ (\S+) 0$`)
)

// BenchmarkNet compares TCP throughput (HTTP bodies of 64 MiB) of a Gozen
// PVH domU with a Linux PVH domU of the same memory and vCPUs, both ways,
// against the same dom0 over Linux's netback, in one rig run.
func BenchmarkNet(b *testing.B) {
	elf := buildGuest(b, "./qemu/guests/nettest")
	tool, err := rig.BuildDom0Tool()
	if err != nil {
		b.Fatal(err)
	}
	web := buildGuest(b, "./apps/httpd")
	webLinux, err := rig.BuildLinuxTool("httpd-linux", "./apps/httpd")
	if err != nil {
		b.Fatal(err)
	}
	vif := func(mac string) string {
		return "vif = ['mac=" + mac + ",bridge=xenbr0,script=/etc/xen/scripts/vif-gozen']\n"
	}
	guests := []rig.Guest{
		{Name: "gzb", ELF: elf, Memory: benchIOMemory, Config: vif(benchNetMACGozen),
			Cmdline: fmt.Sprintf("-expect %s -blob %d", benchNetIPGozen, netBlob)},
		{Name: "lxb", Linux: true, Memory: benchIOMemory, Config: vif(benchNetMACLinux), Init: benchNetLinuxInit,
			Modules: []string{"xen-netfront"}, Files: []rig.CPIOFile{{Name: "gozen/dom0tool", Mode: 0o755, Data: tool}}},
		{Name: "gzh", ELF: web, Memory: benchIOMemory, Config: vif(benchWebMACGozen),
			Cmdline: "ip=" + benchWebIPGozen + "/24"},
		{Name: "lxh", Linux: true, Memory: benchIOMemory, Config: vif(benchWebMACLinux), Init: benchWebLinuxInit,
			Modules: []string{"xen-netfront"}, Files: []rig.CPIOFile{{Name: "gozen/httpd", Mode: 0o755, Data: webLinux}}},
	}
	for i := 0; i < b.N; i++ {
		run := bootBench(b, guests, benchNetScript, rig.Options{Timeout: 25 * time.Minute})
		rate := func(re *regexp.Regexp, prefix string) float64 {
			for _, l := range run.Serial {
				if strings.Contains(l.Text, prefix) {
					if m := re.FindStringSubmatch(l.Text); m != nil {
						v, _ := strconv.ParseFloat(m[1], 64)
						return v
					}
				}
			}
			return 0
		}
		gzIn := rate(nettestGetRE, "GZ|gzb|")
		gzOut := rate(benchFetchRE, "GOZEN-BN gozen")
		lxIn := rate(benchFetchRE, "GOZEN-LBN")
		lxOut := rate(benchFetchRE, "GOZEN-BN linux")
		gzWeb := rate(benchHloadRE, "GOZEN-BW gozen")
		lxWeb := rate(benchHloadRE, "GOZEN-BW linux")
		if gzIn == 0 || gzOut == 0 || lxIn == 0 || lxOut == 0 || gzWeb == 0 || lxWeb == 0 {
			b.Fatalf("FAIL missing figures: gozen in %.1f out %.1f, linux in %.1f out %.1f MB/s, http gozen %.0f linux %.0f req/s\n%s",
				gzIn, gzOut, lxIn, lxOut, gzWeb, lxWeb, run.SerialText())
		}
		b.ReportMetric(gzIn, "gozen-MB/s(dom0->guest)")
		b.ReportMetric(lxIn, "linux-MB/s(dom0->guest)")
		b.ReportMetric(gzIn/lxIn, "gozen/linux(dom0->guest)")
		b.ReportMetric(gzOut, "gozen-MB/s(guest->dom0)")
		b.ReportMetric(lxOut, "linux-MB/s(guest->dom0)")
		b.ReportMetric(gzOut/lxOut, "gozen/linux(guest->dom0)")
		b.ReportMetric(gzWeb, "gozen-req/s")
		b.ReportMetric(lxWeb, "linux-req/s")
		b.ReportMetric(gzWeb/lxWeb, "gozen/linux(req/s)")
	}
}
