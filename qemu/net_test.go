package qemu

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gozen-dev/gozen/qemu/rig"
)

// netMAC and netIP are the nettest guest's vif address and the static
// DHCP lease dom0's udhcpd gives it.
const (
	netMAC  = "00:16:3e:5a:00:01"
	netIP   = "10.0.0.10"
	netMAC2 = "00:16:3e:5a:00:02"
	netIP2  = "10.0.0.11"
	netBlob = 64 << 20 // bytes moved each way, checked against the test stream
	// netCycles is how many times the test detaches nettest's vif and
	// attaches a new one, then checks the guest holds no more grants or
	// ports than before
	netCycles = 100
)

// netScript brings up dom0's side of the guest network (qemu/dom0/net-up:
// the bridge xenbr0 at 10.0.0.1, udhcpd with static leases, busybox httpd
// serving /srv), a test-stream blob in /srv, a UDP echo server and a DNS
// server for gozen.test, then runs two guests of qemu/guests/nettest with
// vifs on the bridge: netpeer only serves its blob; nettest runs the
// client cases (dom0's blob over HTTP, DNS, UDP, netpeer's blob across the
// bridge) and then serves. dom0 fetches nettest's blob, measures its CPU
// use while idle, and tells both to quit.
var netScript = fmt.Sprintf(`
# netback offers two queues per vif: nettest takes both (queues=2), netpeer one
echo 2 > /sys/module/xen_netback/parameters/max_queues || echo "GOZEN-NET setting netback's max_queues failed"
net-up %[1]s=%[2]s %[3]s=%[4]s
/gozen/dom0tool blob /srv/blob %[5]d 7
/gozen/dom0tool udpecho 10.0.0.1:7 &
/gozen/dom0tool dns 10.0.0.1:53 gozen.test=10.0.0.1 &
# what xenstore and the kernel say if a vif is not up in 30 s
diag() { ( sleep 30; grep -q 'NETTEST PASS up' /var/log/xen/console/guest-$1.log 2>/dev/null || {
	xenstore-ls -f /local/domain/0/backend/vif; xenstore-ls -f /local/domain/$(xl domid $1)/device/vif
	dmesg | tail -n 30; } 2>&1 | sed "s/^/GOZEN-DIAG $1 /" ) & }
gozen-guest netpeer /gozen/netpeer.cfg 400 &
pp=$!
diag netpeer
wait-for log netpeer 'NETTEST SERVING' 200
gozen-guest nettest /gozen/nettest.cfg 400 &
gp=$!
diag nettest
if wait-for log nettest 'NETTEST SERVING' 300; then
	timeout 300 /gozen/dom0tool fetch http://%[2]s/blob %[5]d 8
	sleep 2
	/gozen/dom0tool cputime nettest 10
	# unplug the vif and plug a new one: the guest's stack follows it
	xl network-detach nettest 0; echo "GOZEN-NET detach rc=$?"
	sleep 2
	xl network-attach nettest mac=%[1]s bridge=xenbr0 script=/etc/xen/scripts/vif-gozen; echo "GOZEN-NET attach rc=$?"
	wait-for log nettest 'net: link up on' 60
	timeout 300 /gozen/dom0tool fetch http://%[2]s/blob %[5]d 8
	# cycles of unplug and plug: the guest must hold what it held before
	echo "GOZEN-LEAKS before $(timeout 20 /gozen/dom0tool get http://%[2]s/leaks)"
	ok=0
	for i in $(seq 1 %[6]d); do
		xl network-detach nettest %[1]s || { echo "GOZEN-NET cycle $i: detach failed"; break; }
		xl network-attach nettest mac=%[1]s bridge=xenbr0 script=/etc/xen/scripts/vif-gozen || { echo "GOZEN-NET cycle $i: attach failed"; break; }
		up=; j=0
		while [ $j -lt 120 ]; do
			timeout 5 /gozen/dom0tool get http://%[2]s/leaks >/dev/null 2>&1 && { up=1; break; }
			sleep 0.5; j=$((j+1))
		done
		[ -n "$up" ] || { echo "GOZEN-NET cycle $i: the guest did not answer on its new vif"; break; }
		ok=$i
	done
	echo "GOZEN-NET cycles $ok"
	sleep 2
	echo "GOZEN-LEAKS after $(timeout 20 /gozen/dom0tool get http://%[2]s/leaks)"
	timeout 30 /gozen/dom0tool get http://%[2]s/quit
fi
timeout 30 /gozen/dom0tool get http://%[4]s/quit
wait $gp $pp
`, netMAC, netIP, netMAC2, netIP2, netBlob, netCycles)

// netCases are the cases qemu/guests/nettest reports.
var netCases = []string{"up", "dhcp", "ping", "dns", "http-get", "udp", "peer-get", "listen", "serve"}

// netPeerCases are the cases of the guest that only serves.
var netPeerCases = []string{"up", "dhcp", "listen", "serve"}

var (
	fetchRE   = regexp.MustCompile(`^GOZEN-FETCH (PASS|FAIL) (.*)$`)
	cpuTimeRE = regexp.MustCompile(`^GOZEN-CPUTIME nettest (\S+) over (\S+)$`)
	// GOZEN-LEAKS before|after grants=N shares=N mappings=N ports=N up=B switches=N downs=N
	leaksRE = regexp.MustCompile(`GOZEN-LEAKS (before|after) grants=(\d+) shares=(\d+) mappings=(\d+) ports=(\d+) up=true switches=(\d+) downs=(\d+)$`)
)

// TestTierBNet runs the network guest against Linux's netback on dom0's
// bridge: DHCP, ping, DNS, HTTP both ways with checksummed test-stream
// bodies, UDP echo with fragments, and the guest's CPU use while idle
// with the network up.
func TestTierBNet(t *testing.T) {
	elf := buildGuest(t, "./qemu/guests/nettest")
	vif := func(mac string) string {
		return "vif = ['mac=" + mac + ",bridge=xenbr0,script=/etc/xen/scripts/vif-gozen']\n"
	}
	guests := []rig.Guest{
		{Name: "netpeer", ELF: elf, Memory: 128, Timeout: 1500 * time.Second,
			Cmdline: fmt.Sprintf("-serve-only -expect %s -blob %d -serve-seed 12 -serve-for 25m", netIP2, netBlob), Config: vif(netMAC2)},
		{Name: "nettest", ELF: elf, Memory: 128, Timeout: 1500 * time.Second,
			Cmdline: fmt.Sprintf("-expect %s -blob %d -peer-blob http://%s/blob -peer-seed 12 -serve-for 25m queues=2", netIP, netBlob, netIP2), Config: vif(netMAC)},
	}
	run, err := rig.BootDomUs(context.Background(), guests, rig.Script(netScript), rig.Options{Timeout: 30 * time.Minute})
	saveSerial(t, run)
	if err != nil {
		t.Fatalf("FAIL tier B run: %v\n%s", err, run.SerialText())
	}
	checkWaits(t, run)
	g := run.Guests["nettest"]
	if g == nil {
		t.Fatalf("FAIL the guest never started\n%s", run.SerialText())
	}
	checkCases(t, g, "NETTEST", netCases)
	if p := run.Guests["netpeer"]; p == nil {
		t.Errorf("FAIL the peer guest never started")
	} else {
		checkCases(t, p, "NETTEST", netPeerCases)
	}
	var fetched, cpu []string
	var fetches [][]string
	for _, l := range run.Serial {
		if m := fetchRE.FindStringSubmatch(l.Text); m != nil {
			fetches = append(fetches, m)
			if fetched == nil {
				fetched = m
			}
		}
		if m := cpuTimeRE.FindStringSubmatch(l.Text); m != nil {
			cpu = m
		}
	}
	switch {
	case fetched == nil:
		t.Errorf("FAIL dom0 did not fetch the guest's blob")
	case fetched[1] != "PASS":
		t.Errorf("FAIL dom0's fetch of the guest's blob: %s", fetched[2])
	default:
		t.Logf("PASS dom0 fetched the guest's blob: %s", fetched[2])
	}
	serial := run.SerialText()
	switch {
	case !strings.Contains(serial, "GOZEN-NET detach rc=0") || !strings.Contains(serial, "GOZEN-NET attach rc=0"):
		t.Errorf("FAIL xl network-detach / network-attach did not both succeed:\n%s", grepLines(serial, "GOZEN-NET"))
	case len(fetches) < 2 || fetches[1][1] != "PASS":
		t.Errorf("FAIL after the vif was detached and a new one attached, dom0 could not fetch the guest's blob: %v", fetches)
	default:
		t.Logf("PASS xl network-detach and network-attach: the guest's stack moved to the new vif (%s) and served again: %s",
			strings.TrimSpace(grepLines(g.Text(), "net: link up on")), fetches[1][2])
	}
	checkNetCycles(t, serial)
	peerText := ""
	if p := run.Guests["netpeer"]; p != nil {
		peerText = p.Text()
	}
	switch gq, pq := grepLines(g.Text(), "NETTEST queues"), grepLines(peerText, "NETTEST queues"); {
	case !strings.Contains(gq, "NETTEST queues 2") || !strings.Contains(pq, "NETTEST queues 1"):
		t.Errorf("FAIL with netback offering 2 queues, nettest (queues=2) and netpeer (default) used: %q, %q", gq, pq)
	default:
		t.Logf("PASS with netback offering 2 queues, nettest used 2 (%s) and netpeer 1",
			strings.Join(strings.Fields(grepLines(g.Text(), "NETTEST queue ")), " "))
	}
	if cpu == nil {
		t.Errorf("FAIL dom0 did not measure the guest's idle CPU time")
	} else {
		used, _ := strconv.ParseFloat(cpu[1], 64)
		over, _ := strconv.ParseFloat(cpu[2], 64)
		// xl list counts tenths of seconds; an idle guest blocks in
		// SCHEDOP_poll and wakes only for its timers and the network
		if used > 0.05*over {
			t.Errorf("FAIL the idle guest with the network up used %.1f s of CPU in %.1f s (want ~0%%)", used, over)
		} else {
			t.Logf("PASS the idle guest with the network up used %.1f s of CPU in %.1f s", used, over)
		}
	}
	for _, l := range g.Lines {
		if strings.Contains(l.Text, "NETTEST BENCH") || strings.Contains(l.Text, "NETTEST nic") || strings.Contains(l.Text, "net: ") {
			t.Log(strings.TrimSpace(l.Text))
		}
	}
}

// checkNetCycles checks the detach/attach cycles of netScript: all
// netCycles done, each attach seen by the guest's link, and the guest's
// grants, shares, mappings and ports what they were before.
func checkNetCycles(t *testing.T, serial string) {
	t.Helper()
	if !strings.Contains(serial, fmt.Sprintf("GOZEN-NET cycles %d\n", netCycles)) {
		t.Errorf("FAIL %d cycles of xl network-detach and network-attach did not all complete:\n%s", netCycles, grepLines(serial, "GOZEN-NET"))
		return
	}
	got := map[string][]int{}
	for _, l := range strings.Split(serial, "\n") {
		if m := leaksRE.FindStringSubmatch(strings.TrimSpace(l)); m != nil {
			var v []int
			for _, x := range m[2:] {
				n, _ := strconv.Atoi(x)
				v = append(v, n)
			}
			got[m[1]] = v
		}
	}
	b, a := got["before"], got["after"]
	switch {
	case b == nil || a == nil:
		t.Errorf("FAIL the guest's /leaks was not read before and after the cycles (up, with the same format):\n%s", grepLines(serial, "GOZEN-LEAKS"))
	case a[0] != b[0] || a[1] != b[1] || a[2] != b[2] || a[3] != b[3]:
		t.Errorf("FAIL after %d detach/attach cycles the guest holds grants/shares/mappings/ports %v, before %v", netCycles, a[:4], b[:4])
	case a[4]-b[4] != netCycles || a[5]-b[5] != netCycles:
		t.Errorf("FAIL the guest's link saw %d attachments and %d departures in %d cycles", a[4]-b[4], a[5]-b[5], netCycles)
	default:
		t.Logf("PASS %d cycles of xl network-detach and network-attach: the guest's link followed each, and it holds %d grants, %d shares, %d mappings and %d ports, as before",
			netCycles, a[0], a[1], a[2], a[3])
	}
}

// httpdScript serves apps/httpd as `make run APP=httpd` does: the guest on
// dom0's bridge, QEMU forwarding a port of 127.0.0.1 to dom0, dom0
// relaying it to the guest's port 80. The host test has a minute to reach
// it; then xl shutdown.
const httpdScript = `
net-up 00:16:3e:5a:00:10=10.0.0.10
ip link set dev eth0 up && ip addr add %[1]s/24 dev eth0 || echo "GOZEN-HTTPD no eth0"
/gozen/dom0tool proxy :%[2]d 10.0.0.10:80 &
gozen-guest httpd /gozen/httpd.cfg 300 &
gp=$!
if wait-for log httpd 'listening on' 120; then
	echo "GOZEN-HTTPD-UP"
	/gozen/dom0tool hload http://10.0.0.10/ 8 10
	sleep 60
fi
xl shutdown -w httpd
wait $gp
`

// TestTierBHTTPD runs apps/httpd the way make run APP=httpd does and GETs
// its page from this machine, through QEMU's port forward on 127.0.0.1 and
// dom0's relay; dom0 also loads it for 10 s with 8 keep-alive clients.
func TestTierBHTTPD(t *testing.T) {
	elf := buildGuest(t, "./apps/httpd")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	guests := []rig.Guest{{Name: "httpd", ELF: elf, Memory: 64, Timeout: 300 * time.Second,
		Config: "vif = ['mac=00:16:3e:5a:00:10,bridge=xenbr0,script=/etc/xen/scripts/vif-gozen']\n"}}
	type result struct {
		run *rig.Run
		err error
	}
	done := make(chan result, 1)
	go func() {
		run, err := rig.BootDomUs(context.Background(), guests, rig.Script(fmt.Sprintf(httpdScript, rig.Dom0UserIP, port)),
			rig.Options{Timeout: 10 * time.Minute, HostPorts: []int{port}})
		done <- result{run, err}
	}()
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)
	var body string
	var r result
	c := &http.Client{Timeout: 10 * time.Second}
poll:
	for {
		select {
		case r = <-done:
			break poll
		case <-time.After(time.Second):
		}
		if body != "" {
			continue
		}
		if resp, err := c.Get(url + "hello"); err == nil {
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				body = string(b)
			}
		}
	}
	saveSerial(t, r.run)
	if r.err != nil {
		t.Fatalf("FAIL tier B run: %v\n%s", r.err, r.run.SerialText())
	}
	checkWaits(t, r.run)
	if !strings.Contains(body, "Hello from Gozen") || !strings.Contains(body, "/hello") {
		t.Errorf("FAIL GET %shello from this machine: %q\n%s", url, body, r.run.SerialText())
	} else {
		t.Logf("PASS GET %shello from this machine through QEMU's forward and dom0: %q", url, strings.TrimSpace(body))
	}
	for _, l := range r.run.Serial {
		if strings.HasPrefix(l.Text, "GOZEN-HLOAD") {
			t.Logf("dom0 load: %s (url requests secs req/s errors)", l.Text)
		}
	}
}
