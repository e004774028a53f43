package qemu

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gozen-dev/gozen/qemu/rig"
)

// Addresses of the survive guest.
const (
	surviveMAC = "00:16:3e:5a:00:41"
	surviveIP  = "10.0.0.41"

	surviveHTTPDMAC = "00:16:3e:5a:00:42"
	surviveHTTPDIP  = "10.0.0.42"
)

// surviveScript runs qemu/guests/survive with a vif on dom0's bridge and a
// disk (a loop device over a file in dom0's tmpfs) through xl save and
// xl restore, xl save -c (a checkpoint) and xl migrate to this same host
// (xl migrate with an empty -s runs its "host" argument, xl migrate-receive, as the
// receiving command: no ssh). Meanwhile dom0 GETs /ping every 100 ms over
// one keep-alive TCP connection (dom0tool keepalive) and the guest writes
// numbered records to its disk. Then dom0 stops the guest's loop over
// HTTP and checks every record it wrote (dom0tool seqcheck).
//
// A vchancat in dom0 (vchan over /dev/xen) reads the guest's vchan line
// stream throughout: session a until the save, b from the restore on
// through the checkpoint (which must not end it) until the migration, c
// after it. Sessions a and b must end with the peer's domain gone and
// the guest must report each loss as vchan.ErrResumed and listen again.
//
// apps/httpd, unchanged, goes through xl save and xl restore too, with a
// keep-alive client of its own.
var surviveScript = xlHelpers + fmt.Sprintf(`
T=/gozen/dom0tool
net-up
# vcstart DOMAIN TAG: read the guest's vchan stream into /tmp/vc-TAG.out
vcstart() {
	d=$(xl domid $1)
	/gozen/vchancat -xen -n -peer $d sv </dev/null >/tmp/vc-$2.out 2>/tmp/vc-$2.err &
	echo $! >/tmp/vc-$2.pid
	echo "GOZEN-SV vc $2 started domid=$d"
}
# vcend TAG SECONDS: wait for that vchancat to end, then report its stream
vcend() {
	p=$(cat /tmp/vc-$1.pid 2>/dev/null); i=0
	while kill -0 $p 2>/dev/null && [ $i -lt $(($2*10)) ]; do sleep 0.1; i=$((i+1)); done
	if kill -0 $p 2>/dev/null; then echo "GOZEN-SV vc $1 still-running"; kill $p; fi
	wait $p 2>/dev/null
	vclines $1 end
	sed "s/^/GOZEN-SV vc $1 err| /" /tmp/vc-$1.err
}
# vclines TAG WHEN: the stream so far: lines, first, last, in order or not
vclines() {
	sed '$d' /tmp/vc-$1.out | awk -v t=$1 -v w=$2 'NR==1{f=$1} $1!=f+NR-1{bad++} END{printf "GOZEN-SV vc %%s %%s lines=%%d first=%%s last=%%s order=%%s\n", t, w, NR, f, $1, (bad?"gaps":"ok")}'
}
start httpd
wait-for log httpd 'httpd: listening' 120
$T keepalive http://%[2]s/ 600 100 /tmp/kah.stop >/tmp/kah.log 2>/tmp/kah.err &
kh=$!
dd if=/dev/zero of=/tmp/sv.img bs=1M count=0 seek=256 2>/dev/null
losetup /dev/loop0 /tmp/sv.img || echo "GOZEN-SV losetup failed"
start survive
wait-for log survive 'SURVIVE ready' 120
wait-for log survive 'SURVIVE vchan listening' 60
vcstart survive a
rm -f /tmp/ka.stop
$T keepalive http://%[1]s/ping 600 100 /tmp/ka.stop >/tmp/ka.log 2>/tmp/ka.err &
kp=$!
sleep 5
xlrun save xl save survive /tmp/sv.save
echo "GOZEN-SUS save-file size=$(stat -c %%s /tmp/sv.save 2>/dev/null)"
vcend a 30
xlrun restore xl restore /tmp/sv.save
rm -f /tmp/sv.save
wait-for log survive 'SURVIVE resumed' 60
wait-for log survive 'SURVIVE vchan listening' 60 2
vcstart survive b
sleep 5
vclines b before-checkpoint
xlrun checkpoint xl save -c survive /tmp/sv.ckpt
rm -f /tmp/sv.ckpt
wait-for log survive 'SURVIVE resumed' 60 2
sleep 5
vclines b after-checkpoint
kill -0 $(cat /tmp/vc-b.pid) && echo "GOZEN-SV vc b alive-after-checkpoint"
( i=0; while [ ! -e $C/guest-survive--incoming.log ] && [ $i -lt 1200 ]; do sleep 0.1; i=$((i+1)); done
  tail -n +1 -f $C/guest-survive--incoming.log | while IFS= read -r l; do echo "GZ|survive| $l"; done ) &
xlrun migrate xl migrate -s '' survive 'xl migrate-receive'
echo "GOZEN-SV after-migrate $(xl list | grep survive | tr -s ' ')"
wait-for log survive--incoming 'SURVIVE resumed' 60
vcend b 30
wait-for log survive--incoming 'SURVIVE vchan listening' 60
vcstart survive c
sleep 5
touch /tmp/ka.stop
wait $kp
sed 's/^/GOZEN-SV ka| /' /tmp/ka.log /tmp/ka.err
r=$(timeout 120 $T get http://%[1]s/stop)
echo "GOZEN-SV stop $r"
wait-for gone survive 60
vcend c 30
xlrun save-httpd xl save httpd /tmp/h.save
xlrun restore-httpd xl restore /tmp/h.save
rm -f /tmp/h.save
wait-for log httpd 'control: resumed' 60
sleep 5
touch /tmp/kah.stop
wait $kh
sed 's/^/GOZEN-SV kah| /' /tmp/kah.log /tmp/kah.err
xl destroy httpd
sync
losetup -d /dev/loop0
$T seqcheck /tmp/sv.img ${r#stopped last=}
xl list
`, surviveIP, surviveHTTPDIP)

var (
	keepAliveRE = regexp.MustCompile(`GOZEN-KEEPALIVE requests=(\d+) errors=(\d+) dials=(\d+) maxgap_ms=(\d+)`)
	svStopRE    = regexp.MustCompile(`GOZEN-SV stop stopped last=(\d+)`)
	svResumedRE = regexp.MustCompile(`SURVIVE resumed kind=(\S+) seq=(\d+) link=(\S+)`)
)

// TestTierBSurvive runs the survive guest through xl save and restore, a
// checkpoint and xl migrate to the same host with its network and disk in
// use: dom0's TCP connection to the guest's HTTP server stays open
// throughout (one connection carried every request, none failed), and the
// disk loop loses nothing (every record the guest counted is on the disk,
// in order, in dom0's file).
func TestTierBSurvive(t *testing.T) {
	elf := buildGuest(t, "./qemu/guests/survive")
	httpd := buildGuest(t, "./apps/httpd")
	guests := []rig.Guest{{Name: "survive", ELF: elf, Memory: 128,
		Cmdline: "-vchan sv ip=" + surviveIP + "/24",
		Config: "vif = ['mac=" + surviveMAC + ",bridge=xenbr0,script=/etc/xen/scripts/vif-gozen']\n" +
			"disk = ['format=raw,vdev=xvda,access=rw,script=/etc/xen/scripts/block-gozen,target=/dev/loop0']\n"},
		{Name: "httpd", ELF: httpd, Memory: 64, Cmdline: "ip=" + surviveHTTPDIP + "/24",
			Config: "vif = ['mac=" + surviveHTTPDMAC + ",bridge=xenbr0,script=/etc/xen/scripts/vif-gozen']\n"}}
	run, err := rig.BootDomUs(context.Background(), guests, rig.Script(surviveScript), rig.Options{Timeout: 20 * time.Minute, Stream: liveLog(t)})
	saveSerial(t, run)
	if err != nil {
		t.Fatalf("FAIL tier B run: %v", err)
	}
	checkWaits(t, run)
	serial := run.SerialText()
	for _, l := range strings.Split(serial, "\n") {
		if strings.Contains(l, "SURVIVE FAIL") || strings.Contains(l, "GOZEN-SV losetup failed") {
			t.Errorf("FAIL %s", strings.TrimSpace(l))
		}
	}
	steps := map[string]string{}
	for _, l := range run.Serial {
		if m := susLineRE.FindStringSubmatch(strings.TrimSpace(l.Text)); m != nil {
			t0, _ := strconv.ParseInt(m[3], 10, 64)
			t1, _ := strconv.ParseInt(m[4], 10, 64)
			steps[m[1]] = m[2]
			t.Logf("xl %s: rc=%s in %.2f s", m[1], m[2], float64(t1-t0)/1e9)
		}
	}
	for _, s := range []string{"save", "restore", "checkpoint", "migrate"} {
		if steps[s] != "0" {
			t.Errorf("FAIL xl %s: rc=%q\n%s", s, steps[s], grepLines(serial, "GOZEN-SUS xl-"+s+"|"))
		}
	}
	var kinds []string
	for _, m := range svResumedRE.FindAllStringSubmatch(serial, -1) {
		kinds = append(kinds, m[1]+"(link up="+m[3]+")")
	}
	if len(kinds) != 3 {
		t.Errorf("FAIL the guest reported %d resumes, want 3 (restore, checkpoint, migration): %v", len(kinds), kinds)
	} else {
		t.Logf("PASS the guest resumed three times: %v", kinds)
	}
	switch m := keepAliveRE.FindStringSubmatch(grepLines(serial, "GOZEN-SV ka|")); {
	case m == nil:
		t.Errorf("FAIL dom0's keep-alive client printed no summary:\n%s", grepLines(serial, "GOZEN-SV ka|"))
	case m[2] != "0" || m[3] != "1" || m[1] == "0":
		t.Errorf("FAIL dom0's TCP connection did not survive: %s\n%s", m[0], grepLines(serial, "GOZEN-SV ka|"))
	default:
		t.Logf("PASS one TCP connection from dom0 carried all %s requests across save/restore, checkpoint and migration, none failed; longest gap between answers %s ms", m[1], m[4])
	}
	switch m := keepAliveRE.FindStringSubmatch(grepLines(serial, "GOZEN-SV kah|")); {
	case m == nil:
		t.Errorf("FAIL dom0's keep-alive client of apps/httpd printed no summary:\n%s", grepLines(serial, "GOZEN-SV kah|"))
	case m[2] != "0" || m[3] != "1" || m[1] == "0":
		t.Errorf("FAIL dom0's TCP connection to apps/httpd did not survive xl save and restore: %s\n%s", m[0], grepLines(serial, "GOZEN-SV kah|"))
	default:
		t.Logf("PASS apps/httpd went through xl save and xl restore with one TCP connection from dom0 open: %s requests, none failed, longest gap %s ms", m[1], m[4])
	}
	checkSurviveVchan(t, serial)
	checkRelease(t, serial, 4) // save, checkpoint, migration, httpd's save
	stop := svStopRE.FindStringSubmatch(grepLines(serial, "GOZEN-SV stop"))
	switch check := grepLines(serial, "GOZEN-SEQCHECK"); {
	case stop == nil:
		t.Errorf("FAIL the guest's disk loop did not stop on request:\n%s", grepLines(serial, "GOZEN-SV stop"))
	case !strings.Contains(check, "GOZEN-SEQCHECK PASS "+stop[1]+" records"):
		t.Errorf("FAIL the guest counted %s records; dom0 found:\n%s", stop[1], check)
	default:
		t.Logf("PASS the disk loop lost nothing: %s", strings.TrimSpace(check))
	}
}

// releaseReportRE matches a guest's report of its zero-page release
// (xenbus/control): what it left out and the runtime's break it went by.
var releaseReportRE = regexp.MustCompile(`gozen: control: (\d+) heap pages .* above the runtime's break (\S+) `)

// checkRelease checks that each of the want suspends in serial left zero
// pages out of the saved image and went by the runtime's break (the
// image's runtime-symbol record, written by gozen-image symbols, read
// back): with it, the frames above the break are given back unread.
func checkRelease(t *testing.T, serial string, want int) {
	t.Helper()
	lines := grepLines(serial, "gozen: control: ")
	ms := releaseReportRE.FindAllStringSubmatch(lines, -1)
	if len(ms) < want {
		t.Errorf("FAIL %d zero-page release reports, want %d:\n%s", len(ms), want, lines)
		return
	}
	for _, m := range ms {
		if m[1] == "0" || !strings.HasPrefix(m[2], "0x") {
			t.Errorf("FAIL a suspend released %s pages, runtime break %s (want pages and a known break):\n%s", m[1], m[2], lines)
			return
		}
	}
	t.Logf("PASS %d suspends left zero pages out of the saved image, each by the runtime's break", len(ms))
}

// benchSRScript saves and restores a Gozen domU (survive, no disk) and a
// Linux PVH domU (dom0tool serveblob) of the same memory, each with a vif
// and dom0 GETting from it every 100 ms over one keep-alive connection:
// xl save and xl restore times, and the longest gap between answers (the
// downtime dom0 saw), in one rig run.
var benchSRScript = xlHelpers + fmt.Sprintf(`
T=/gozen/dom0tool
net-up
echo "GOZEN-SR room: $(xl info | grep -E 'total_memory|free_memory' | tr -s ' ' | tr '\n' ' ')dom0: $(grep MemTotal /proc/meminfo | tr -s ' ')"
# sr NAME URL READY IP: start, load, save, restore, report
sr() {
	start $1
	wait-for log $1 "$3" 180
	rm -f /tmp/ka.stop
	$T keepalive $2 600 100 /tmp/ka.stop >/tmp/ka-$1.log 2>/dev/null &
	kp=$!
	$T pinggap $4 600 50 /tmp/ka.stop >/tmp/pg-$1.log 2>&1 &
	pp=$!
	sleep 5
	xlrun save-$1 xl save $1 /tmp/$1.save
	xlrun restore-$1 xl restore /tmp/$1.save
	rm -f /tmp/$1.save
	sleep 8
	touch /tmp/ka.stop
	wait $kp $pp
	sed "s/^/GOZEN-SR $1 /" /tmp/ka-$1.log /tmp/pg-$1.log
	xl destroy $1
}
sr gzsr http://%[1]s/ping 'SURVIVE ready' %[1]s
sr lxsr http://%[2]s/blob 'GOZEN-SERVING' %[2]s
`, benchSRIPGozen, benchSRIPLinux)

// pingGapRE matches dom0tool pinggap's summary.
var pingGapRE = regexp.MustCompile(`GOZEN-PINGGAP sent=(\d+) replies=(\d+) maxgap_ms=(\d+)`)

// Addresses of the save/restore benchmark's guests.
const (
	benchSRMACGozen = "00:16:3e:5a:00:43"
	benchSRIPGozen  = "10.0.0.43"
	benchSRMACLinux = "00:16:3e:5a:00:44"
	benchSRIPLinux  = "10.0.0.44"
)

// BenchmarkSaveRestore compares xl save and xl restore of a Gozen PVH domU
// with a Linux PVH domU of the same memory (both with a vif in use), in
// one rig run: the time of each command; the downtime, the longest time
// the guest did not answer dom0's pings (ICMP echo every 50 ms); and the
// longest gap a TCP client in dom0 saw between answers over one
// keep-alive connection, which adds the client's retransmission back-off.
// It also reports the Gozen guest's own release and repopulation of its
// zero pages (from its console). Two sizes: 128 MiB in the rig's usual
// machine (2 GiB, dom0 1 GiB, 1000 MiB free for domUs), and 512 MiB in a
// larger one (3 GiB, dom0 1.5 GiB), so that dom0 keeps the Linux domU's
// 512 MiB save file in its root file system (in RAM) with room to spare:
// Linux saves every page of its memory, Gozen only those in use.
func BenchmarkSaveRestore(b *testing.B) {
	for _, size := range []struct {
		memory int
		opts   rig.Options
	}{
		{128, rig.Options{}},
		{512, rig.Options{Memory: 3072, Dom0Memory: 1536}},
	} {
		b.Run(fmt.Sprintf("%dMiB", size.memory), func(b *testing.B) {
			size.opts.Timeout = 20 * time.Minute
			benchSaveRestore(b, size.memory, size.opts)
		})
	}
}

// releaseLineRE matches the guest's report of its zero-page release
// (xenbus/control).
var releaseLineRE = regexp.MustCompile(`release (\S+) \(scan (\S+)\), repopulate (\S+)$`)

func benchSaveRestore(b *testing.B, memory int, opts rig.Options) {
	elf := buildGuest(b, "./qemu/guests/survive")
	tool, err := rig.BuildDom0Tool()
	if err != nil {
		b.Fatal(err)
	}
	vif := func(mac string) string {
		return "vif = ['mac=" + mac + ",bridge=xenbr0,script=/etc/xen/scripts/vif-gozen']\n"
	}
	guests := []rig.Guest{
		{Name: "gzsr", ELF: elf, Memory: memory, Config: vif(benchSRMACGozen), Cmdline: "ip=" + benchSRIPGozen + "/24"},
		{Name: "lxsr", Linux: true, Memory: memory, Config: vif(benchSRMACLinux),
			Init: fmt.Sprintf(`
ip link set dev lo up
ip link set dev eth0 up && ip addr add %s/24 dev eth0 || echo "GOZEN-LINUX-DOMU: no eth0"
/gozen/dom0tool serveblob :80 16 1
`, benchSRIPLinux),
			Modules: []string{"xen-netfront"}, Files: []rig.CPIOFile{{Name: "gozen/dom0tool", Mode: 0o755, Data: tool}}},
	}
	for i := 0; i < b.N; i++ {
		run := bootBench(b, guests, benchSRScript, opts)
		secs := map[string]float64{}
		for _, l := range run.Serial {
			if m := susLineRE.FindStringSubmatch(strings.TrimSpace(l.Text)); m != nil && m[2] == "0" {
				t0, _ := strconv.ParseInt(m[3], 10, 64)
				t1, _ := strconv.ParseInt(m[4], 10, 64)
				secs[m[1]] = float64(t1-t0) / 1e9
			}
			if m := keepAliveRE.FindStringSubmatch(l.Text); m != nil && m[2] == "0" && m[3] == "1" {
				for _, g := range []string{"gzsr", "lxsr"} {
					if strings.Contains(l.Text, "GOZEN-SR "+g+" ") {
						gap, _ := strconv.ParseFloat(m[4], 64)
						secs["tcpgap-"+g] = gap / 1000
					}
				}
			}
			if m := pingGapRE.FindStringSubmatch(l.Text); m != nil && m[2] != "0" {
				for _, g := range []string{"gzsr", "lxsr"} {
					if strings.Contains(l.Text, "GOZEN-SR "+g+" ") {
						gap, _ := strconv.ParseFloat(m[3], 64)
						secs["downtime-"+g] = gap / 1000
					}
				}
			}
			if m := releaseLineRE.FindStringSubmatch(strings.TrimSpace(l.Text)); m != nil && strings.Contains(l.Text, "GZ|gzsr|") {
				for j, k := range []string{"release", "scan", "repopulate"} {
					if d, err := time.ParseDuration(m[j+1]); err == nil {
						secs[k] = d.Seconds()
					}
				}
				b.Logf("the guest's zero-page release: %s", strings.TrimSpace(l.Text))
			}
		}
		for _, k := range []string{"save", "restore", "downtime", "tcpgap"} {
			gz, lx := secs[k+"-gzsr"], secs[k+"-lxsr"]
			if gz == 0 || lx == 0 {
				b.Fatalf("FAIL missing %s: %v (a downtime is only taken from a connection that survived with no error)\n%s", k, secs, run.SerialText())
			}
			b.ReportMetric(gz, "gozen-"+k+"-s")
			b.ReportMetric(lx, "linux-"+k+"-s")
			b.ReportMetric(gz/lx, "gozen/linux("+k+")")
		}
		for _, k := range []string{"release", "scan", "repopulate"} {
			b.ReportMetric(secs[k], "gozen-"+k+"-s")
		}
		gz := secs["save-gzsr"] + secs["restore-gzsr"]
		lx := secs["save-lxsr"] + secs["restore-lxsr"]
		b.ReportMetric(gz/lx, "gozen/linux(save+restore)")
	}
}

var (
	svVcLinesRE = regexp.MustCompile(`GOZEN-SV vc (\w) (\S+) lines=(\d+) first=(\S*) last=(\S*) order=(\S+)`)
	svVcLostRE  = regexp.MustCompile(`SURVIVE vchan lost lines=(\d+) resumed=(\w+) close=(.*?) err=`)
)

// checkSurviveVchan checks the vchan sessions of surviveScript: each
// carried an unbroken stream; a ended at the save and b at the migration
// with dom0's vchancat seeing the peer's domain gone, b ran on across the
// checkpoint; the guest saw both losses as vchan.ErrResumed and closed
// the channel cleanly each time.
func checkSurviveVchan(t *testing.T, serial string) {
	t.Helper()
	streams := map[string]map[string][]string{}
	for _, m := range svVcLinesRE.FindAllStringSubmatch(serial, -1) {
		if streams[m[1]] == nil {
			streams[m[1]] = map[string][]string{}
		}
		streams[m[1]][m[2]] = m
	}
	vcLog := grepLines(serial, "GOZEN-SV vc")
	for _, tag := range []string{"a", "b", "c"} {
		m := streams[tag]["end"]
		switch {
		case m == nil:
			t.Errorf("FAIL vchan session %s: no report from dom0\n%s", tag, vcLog)
		case m[3] == "0" || m[4] != "0" || m[6] != "ok":
			t.Errorf("FAIL vchan session %s: its stream was not whole: %s\n%s", tag, m[0], vcLog)
		default:
			t.Logf("PASS vchan session %s carried %s lines in order", tag, m[3])
		}
	}
	for _, tag := range []string{"a", "b"} {
		if !strings.Contains(grepLines(serial, "GOZEN-SV vc "+tag+" err|"), "the peer's domain is gone") {
			t.Errorf("FAIL vchancat in dom0 did not see the guest's old domain go (session %s):\n%s", tag, vcLog)
		}
	}
	b0, b1 := streams["b"]["before-checkpoint"], streams["b"]["after-checkpoint"]
	switch {
	case b0 == nil || b1 == nil || !strings.Contains(serial, "GOZEN-SV vc b alive-after-checkpoint"):
		t.Errorf("FAIL vchan session b did not run on across the checkpoint\n%s", vcLog)
	default:
		n0, _ := strconv.Atoi(b0[3])
		n1, _ := strconv.Atoi(b1[3])
		if n1 <= n0 || b1[6] != "ok" {
			t.Errorf("FAIL vchan session b across the checkpoint: %s then %s", b0[0], b1[0])
		} else {
			t.Logf("PASS vchan session b ran on across the checkpoint (%d lines before, %d after)", n0, n1)
		}
	}
	lost := svVcLostRE.FindAllStringSubmatch(serial, -1)
	if len(lost) < 2 {
		t.Errorf("FAIL the guest reported %d lost vchans, want 2 (restore, migration):\n%s", len(lost), grepLines(serial, "SURVIVE vchan"))
		return
	}
	ok := true
	for _, m := range lost[:2] {
		if m[2] != "true" || m[3] != "<nil>" {
			ok = false
			t.Errorf("FAIL the guest's vchan after a resume: %s (want resumed=true close=<nil>)", m[0])
		}
	}
	if ok {
		t.Logf("PASS the guest saw its vchan lost by each resume into a new domain (vchan.ErrResumed), closed it cleanly and listened again")
	}
}
