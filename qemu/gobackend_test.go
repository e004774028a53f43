package qemu

import (
	"fmt"
	"hash/crc32"
	"strings"
	"testing"
	"time"

	"github.com/gozen-dev/gozen/internal/teststream"
	"github.com/gozen-dev/gozen/qemu/rig"
)

// Addresses of the guests whose devices Gozen's Go backends serve.
const (
	goBackMACLinux = "00:16:3e:5a:00:31"
	goBackIPLinux  = "10.0.0.31"
	goBackMACGozen = "00:16:3e:5a:00:32"
	goBackIPGozen  = "10.0.0.32"
	goBackBlob     = 1 << 20  // bytes fetched over each Go netback (see TestTierBGoBackendLinux)
	goBackFile     = 16 << 20 // bytes of the file the Linux domU writes on FAT
	goBackSeed     = 21       // its test-stream seed
)

// goBackLinuxInit is the Linux domU's part: its address and an HTTP GET
// of dom0's blob over Linux's netfront and Gozen's netback, then the FAT32
// file system dom0 made on xvda (Debian's mkfs.fat: busybox's mkdosfs
// writes volume labels fsck.fat rejects) mounted through Linux's blkfront
// and Gozen's blkback, a test-stream file written, unmounted.
var goBackLinuxInit = fmt.Sprintf(`
ip link set dev lo up
ip link set dev eth0 up && ip addr add %[1]s/24 dev eth0 || echo "GOZEN-GBL no eth0"
echo "GOZEN-GBL net $(/gozen/dom0tool fetch http://10.0.0.1/blob %[2]d 7)"
mkdir -p /mnt && mount -t vfat /dev/xvda /mnt && echo "GOZEN-GBL mount rc=0" || echo "GOZEN-GBL mount failed"
/gozen/dom0tool blob /mnt/big.bin %[3]d %[4]d && echo "hello from Linux" > /mnt/hello.txt && echo "GOZEN-GBL write rc=0" || echo "GOZEN-GBL write failed"
umount /mnt && echo "GOZEN-GBL umount rc=0" || echo "GOZEN-GBL umount failed"
sync
`, goBackIPLinux, goBackBlob, goBackFile, goBackSeed)

// goBackHook writes a gozen-guest hook that starts Go backends for the
// domain given as $1 (the backend directories under the classes gozen-vbd
// and gozen-vif, beside the kernel's backends) and waits until they are
// in InitWait. The disk's backend polls its ring up to 10 ms (a cap
// scaled to the rig's emulation, as in BenchmarkGoBackend).
func goBackHook(file, tag, mac string, disk bool) string {
	lines := []string{"#!/bin/sh", "B=/gozen/gozen-backend"}
	if disk {
		lines = append(lines,
			fmt.Sprintf("$B vbd -domid $1 -file /tmp/%s.img -vdev xvda -persistent -indirect 64 -ring-order 2 -poll 10ms -backend-class gozen-vbd >/tmp/%s-vbd.log 2>&1 &", tag, tag),
			"wait-for xs /local/domain/0/backend/gozen-vbd/$1/51712/state 2 90 || echo \"GOZEN-GB "+tag+" vbd failed to start\"")
	}
	lines = append(lines,
		fmt.Sprintf("$B vif -domid $1 -mac %s -tap %st -bridge xenbr0 -backend-class gozen-vif >/tmp/%s-vif.log 2>&1 &", mac, tag, tag),
		"wait-for xs /local/domain/0/backend/gozen-vif/$1/0/state 2 90 || echo \"GOZEN-GB "+tag+" vif failed to start\"")
	var b strings.Builder
	b.WriteString("printf '%s\\n'")
	for _, l := range lines {
		b.WriteString(" '" + strings.ReplaceAll(l, "'", `'\''`) + "'")
	}
	fmt.Fprintf(&b, " > %[1]s\nchmod +x %[1]s\n", file)
	return b.String()
}

// goBackScript runs a Linux PVH domU, then a Gozen domU, each with its
// devices served by cmd/gozen-backend in dom0's user space: the Linux
// domU's vif and disk, the Gozen domU's vif (its disks are
// TestTierBGoBackend's). After each guest the backends are stopped and
// print their counters and leftovers; dom0 then checks the FAT image the
// Linux domU made with fsck.fat and reads its file back.
var goBackScript = fmt.Sprintf(`
T=/gozen/dom0tool
net-up %[1]s=%[2]s %[3]s=%[4]s
$T blob /srv/blob %[5]d 7
$T udpecho 10.0.0.1:7 &
$T dns 10.0.0.1:53 gozen.test=10.0.0.1 &
dd if=/dev/zero of=/tmp/gl.img bs=1M count=0 seek=64 2>/dev/null
mkfs.fat -F 32 -n GOZEN /tmp/gl.img >/dev/null || echo "GOZEN-GBL mkfs.fat failed"
%[6]s
gozen-guest lgb /gozen/lgb.cfg 400 /tmp/glhook.sh
sleep 3; pkill -INT -f gozen-backend; sleep 2
for f in gl-vbd gl-vif; do sed "s/^/GOZEN-GB $f| /" /tmp/$f.log; done
fsck.fat -n /tmp/gl.img >/tmp/glfsck.log 2>&1; echo "GOZEN-GBL fsck rc=$?"
sed 's/^/GOZEN-GBL fsck| /' /tmp/glfsck.log
$T fatcrc /tmp/gl.img big.bin
$T fatcat /tmp/gl.img hello.txt
%[7]s
gozen-guest gnt /gozen/gnt.cfg 400 /tmp/gnhook.sh &
gp=$!
if wait-for log gnt 'NETTEST SERVING' 300; then
	timeout 300 $T fetch http://%[4]s/blob %[5]d 8
	timeout 30 $T get http://%[4]s/quit >/dev/null
fi
wait $gp
sleep 3; pkill -INT -f gozen-backend; sleep 2
sed "s/^/GOZEN-GB gn-vif| /" /tmp/gn-vif.log
`, goBackMACLinux, goBackIPLinux, goBackMACGozen, goBackIPGozen, goBackBlob,
	goBackHook("/tmp/glhook.sh", "gl", goBackMACLinux, true),
	goBackHook("/tmp/gnhook.sh", "gn", goBackMACGozen, false))

// TestTierBGoBackendLinux serves a Linux PVH domU's disk and vif, and a
// Gozen domU's vif, with Gozen's Go backends in dom0's user space
// (cmd/gozen-backend over /dev/xen): Linux's own blkfront and netfront,
// the strictest clients there are, write files on a FAT32 file system
// (checked in dom0 with fsck.fat, the files read back) and fetch over
// HTTP; the Gozen
// guest runs the network cases; every backend ends with no leftovers.
//
// The blobs are small: Gozen's netback in dom0 moves frames through a TAP
// device in user space, and under the rig's emulation that path is slow
// (dom0 to a Linux domU 1.1 MB/s, to a Gozen domU 0.57 MB/s, ping 88 ms;
// from the Gozen domU to dom0 8 MiB did not arrive within 120 s); these
// tests check that it works, BenchmarkGoBackend measures the block path.
func TestTierBGoBackendLinux(t *testing.T) {
	elf := buildGuest(t, "./qemu/guests/nettest")
	tool, err := rig.BuildDom0Tool()
	if err != nil {
		t.Fatal(err)
	}
	guests := []rig.Guest{
		{Name: "lgb", Linux: true, Memory: 128, Init: goBackLinuxInit,
			Modules: []string{"xen-blkfront", "xen-netfront", "fat", "vfat", "nls_cp437", "nls_ascii", "nls_utf8"},
			Files:   []rig.CPIOFile{{Name: "gozen/dom0tool", Mode: 0o755, Data: tool}}},
		{Name: "gnt", ELF: elf, Memory: 128, Timeout: 400 * time.Second,
			Cmdline: fmt.Sprintf("-expect %s -blob %d", goBackIPGozen, goBackBlob)},
	}
	run, err := bootLinux(t, guests, goBackScript, rig.Options{Timeout: 15 * time.Minute})
	if err != nil {
		t.Fatalf("FAIL tier B run: %v\n%s", err, run.SerialText())
	}
	checkWaits(t, run)
	serial := run.SerialText()
	if strings.Contains(serial, "failed to start") {
		t.Errorf("FAIL a Go backend did not start:\n%s", grepLines(serial, "GOZEN-GB"))
	}
	l := run.Guests["lgb"]
	if l == nil {
		t.Fatalf("FAIL the Linux domU never started")
	}
	lt := l.Text()
	for _, step := range []string{"mount", "write", "umount"} {
		if strings.Contains(lt, "GOZEN-GBL "+step+" rc=0") {
			t.Logf("PASS Linux domU on Gozen's blkback: %s", step)
		} else {
			t.Errorf("FAIL Linux domU on Gozen's blkback: %s:\n%s", step, grepLines(lt, "GOZEN-GBL"))
		}
	}
	if m := grepLines(lt, "GOZEN-GBL net GOZEN-FETCH PASS"); m != "" {
		t.Logf("PASS Linux domU fetched dom0's blob through Gozen's netback: %s", strings.TrimSpace(m))
	} else {
		t.Errorf("FAIL Linux domU's fetch through Gozen's netback:\n%s", grepLines(lt, "GOZEN-GBL net"))
	}
	if strings.Contains(serial, "GOZEN-GBL fsck rc=0") {
		t.Logf("PASS fsck.fat in dom0 finds the Linux domU's file system clean")
	} else {
		t.Errorf("FAIL fsck.fat of the Linux domU's file system:\n%s", grepLines(serial, "GOZEN-GBL fsck"))
	}
	want := fmt.Sprintf("GOZEN-FATCRC big.bin %d %08x", goBackFile, crc32.ChecksumIEEE(teststream.Bytes(goBackSeed, goBackFile)))
	if strings.Contains(serial, want) && strings.Contains(serial, "GOZEN-FAT hello.txt| hello from Linux") {
		t.Logf("PASS dom0 reads the Linux domU's files as written (%s)", want)
	} else {
		t.Errorf("FAIL the Linux domU's files in dom0: want %q and the hello line:\n%s%s", want, grepLines(serial, "GOZEN-FATCRC"), grepLines(serial, "GOZEN-FAT"))
	}
	g := run.Guests["gnt"]
	if g == nil {
		t.Fatalf("FAIL the Gozen domU never started")
	}
	checkCases(t, g, "NETTEST", []string{"up", "dhcp", "ping", "dns", "http-get", "udp", "listen", "serve"})
	if m := grepLines(serial, "GOZEN-FETCH PASS http://"+goBackIPGozen); m != "" {
		t.Logf("PASS dom0 fetched the Gozen domU's blob through Gozen's netback: %s", strings.TrimSpace(m))
	} else {
		t.Errorf("FAIL dom0's fetch from the Gozen domU:\n%s", grepLines(serial, "GOZEN-FETCH"))
	}
	for _, b := range []string{"gl-vbd", "gl-vif", "gn-vif"} {
		lines := grepLines(serial, "GOZEN-GB "+b+"|")
		if !strings.Contains(lines, "leftovers: none") {
			t.Errorf("FAIL gozen-backend %s did not end with no leftovers:\n%s", b, lines)
		} else {
			t.Logf("PASS gozen-backend %s served and ended with no leftovers", b)
		}
	}
	t.Logf("gozen-backend gl-vbd: %s", strings.TrimSpace(grepLines(grepLines(serial, "GOZEN-GB gl-vbd|"), "polling (")))
}
