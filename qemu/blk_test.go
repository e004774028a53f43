package qemu

import (
	"context"
	"fmt"
	"hash/crc32"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/gozen-dev/gozen/internal/teststream"
	"github.com/gozen-dev/gozen/qemu/rig"
)

// blkSize is what qemu/guests/blktest writes to xvda and dom0 checks.
const blkSize = 64 << 20

// blkScript makes blktest's three disks in dom0's tmpfs on loop devices:
// xvda (data, blkSize + 16 MiB), xvdb (read-only) and xvdc (FAT32 made by
// Debian's mkfs.fat, holding config.txt), and a small read-only image for
// hot-plugging; runs the guest, attaching and detaching xvdd blkCycles
// times while it follows; then checks what it wrote: the data (test
// stream), the discarded MiB (zeros), and the FAT image with fsck.fat and
// by reading log.txt and d/big.bin. Then it reloads Linux's blkback with
// its module parameters turning persistent grants off and rings to one
// page, and four queues, and runs blkvar (blktest with indirect requests
// off on its side, asking for four queues) on fresh images.
var blkScript = fmt.Sprintf(`
T=/gozen/dom0tool
%[1]s
dd if=/dev/zero of=/tmp/hp.img bs=1M count=8 2>/dev/null
printf GOZEN-HOTPLUG | dd of=/tmp/hp.img conv=notrunc 2>/dev/null
losetup /dev/loop0 /tmp/data.img && losetup -r /dev/loop1 /tmp/ro.img && losetup /dev/loop2 /tmp/fat.img && losetup -r /dev/loop3 /tmp/hp.img || echo "GOZEN-BLK losetup failed"
echo "GOZEN-BLK ro-sum $(md5sum < /tmp/ro.img | cut -c1-32)"
gozen-guest blktest /gozen/blktest.cfg 1200 &
gp=$!
if wait-for log blktest 'BLKTEST HOTPLUG READY' 120; then
	ok=0
	for i in $(seq 1 %[3]d); do
		t0=$(cut -d' ' -f1 /proc/uptime)
		xl block-attach blktest 'format=raw,vdev=xvdd,access=ro,script=/etc/xen/scripts/block-gozen,target=/dev/loop3' || { echo "GOZEN-BLK cycle $i: block-attach failed"; break; }
		t1=$(cut -d' ' -f1 /proc/uptime)
		wait-for log blktest "BLKTEST hotplug $i ok" 60 || break
		t2=$(cut -d' ' -f1 /proc/uptime)
		xl block-detach blktest xvdd || { echo "GOZEN-BLK cycle $i: block-detach failed"; break; }
		t3=$(cut -d' ' -f1 /proc/uptime)
		wait-for log blktest "BLKTEST hotplug $i gone" 60 || break
		[ $i -le 3 ] && echo "GOZEN-BLK cycle $i times: attach $t0-$t1 connected $t2 detached $t3 gone $(cut -d' ' -f1 /proc/uptime)"
		ok=$i
	done
	echo "GOZEN-BLK-CYCLES $ok"
fi
wait $gp
sync
losetup -d /dev/loop0; losetup -d /dev/loop1; losetup -d /dev/loop2; losetup -d /dev/loop3
%[2]s
# blkback's module parameters: no persistent grants, one-page rings, four queues
rmmod xen-blkback && insmod /lib/modules/xen-blkback.ko feature_persistent=0 max_ring_page_order=0 max_queues=4 || echo "GOZEN-BLK reloading xen-blkback failed"
echo "GOZEN-BLK blkback persistent=$(cat /sys/module/xen_blkback/parameters/feature_persistent) ring-order=$(cat /sys/module/xen_blkback/parameters/max_ring_page_order) queues=$(cat /sys/module/xen_blkback/parameters/max_queues)"
rm -f /tmp/data.img /tmp/ro.img /tmp/fat.img
%[1]s
losetup /dev/loop0 /tmp/data.img && losetup -r /dev/loop1 /tmp/ro.img && losetup /dev/loop2 /tmp/fat.img || echo "GOZEN-BLK losetup failed"
gozen-guest blkvar /gozen/blkvar.cfg 400
sync
losetup -d /dev/loop0; losetup -d /dev/loop1; losetup -d /dev/loop2
`, blkMakeImages, blkCheckImages, blkCycles)

// blkCycles is how many times blkScript attaches and detaches xvdd.
const blkCycles = 100

// blkVarSize is what blkvar writes and reads back.
const blkVarSize = 16 << 20

// blkMakeImages makes blktest's three images in dom0's tmpfs: data
// (blkSize + 16 MiB), read-only (random), and FAT32 by mkfs.fat with
// config.txt.
var blkMakeImages = fmt.Sprintf(`dd if=/dev/zero of=/tmp/data.img bs=1M count=0 seek=%[1]d 2>/dev/null
dd if=/dev/urandom of=/tmp/ro.img bs=1M count=8 2>/dev/null
dd if=/dev/zero of=/tmp/fat.img bs=1M count=0 seek=64 2>/dev/null
mkfs.fat -F 32 -n GOZEN /tmp/fat.img >/dev/null || echo "GOZEN-BLK mkfs.fat failed"
$T fatput /tmp/fat.img config.txt "greeting=hello from dom0" || echo "GOZEN-BLK fatput failed"
fsck.fat -n /tmp/fat.img >/tmp/fsck0.log 2>&1 || { echo "GOZEN-BLK fsck of dom0's own image failed"; sed 's/^/GOZEN-BLK fsck0| /' /tmp/fsck0.log; }`, blkSize>>20+16)

// blkCheckImages checks in dom0 what blktest wrote.
var blkCheckImages = fmt.Sprintf(`echo "GOZEN-BLK ro-sum $(md5sum < /tmp/ro.img | cut -c1-32)"
$T datacheck /tmp/data.img %[1]d 9
$T zero /tmp/data.img %[1]d 1048576
fsck.fat -n /tmp/fat.img >/tmp/fsck.log 2>&1; echo "GOZEN-BLK fsck rc=$?"
sed 's/^/GOZEN-BLK fsck| /' /tmp/fsck.log
$T fatcat /tmp/fat.img log.txt
$T fatcrc /tmp/fat.img d/big.bin
`, blkSize)

// goBackendScript is blkScript with dom0's disks served by Gozen's own Go
// blkback in dom0's user space (cmd/gozen-backend, over /dev/xen through
// evlinux, gntlinux and xslinux) instead of Linux's blkback: the guest is
// created paused, the three backends create and serve its devices (under
// the backend class gozen-vbd, as the kernel's blkback holds vbd), then
// the guest runs. xvda's backend polls its ring up to 10 ms (a cap
// scaled to the rig's emulation, as in BenchmarkGoBackend), xvdb's
// with blkback's default cap (50 µs: under emulation its window closes),
// xvdc's not at all.
var goBackendScript = fmt.Sprintf(`
T=/gozen/dom0tool
%[1]s
echo "GOZEN-BLK ro-sum $(md5sum < /tmp/ro.img | cut -c1-32)"
printf '%%s\n' '#!/bin/sh' \
	'B="/gozen/gozen-backend vbd -domid $1 -backend-class gozen-vbd"' \
	'$B -file /tmp/data.img -vdev xvda -persistent -indirect 64 -ring-order 2 -poll 10ms >/tmp/gb-a.log 2>&1 &' \
	'$B -file /tmp/ro.img -vdev xvdb -ro >/tmp/gb-b.log 2>&1 &' \
	'$B -file /tmp/fat.img -vdev xvdc -persistent -poll 0 >/tmp/gb-c.log 2>&1 &' \
	'for v in 51712 51728 51744; do wait-for xs /local/domain/0/backend/gozen-vbd/$1/$v/state 2 90 || { echo "GOZEN-BLK gozen-backend for $v failed to start"; cat /tmp/gb-*.log; }; done' > /tmp/gbhook.sh
chmod +x /tmp/gbhook.sh
gozen-guest blktest /gozen/blktest.cfg 400 /tmp/gbhook.sh
sleep 3; pkill -INT -f gozen-backend; sleep 2
for f in gb-a gb-b gb-c; do sed "s/^/GOZEN-GB $f| /" /tmp/$f.log; done
sync
%[2]s`, blkMakeImages, blkCheckImages)

// blkCases are the cases qemu/guests/blktest reports.
var blkCases = []string{"disks", "write", "read", "discard", "readonly", "fat"}

var blkROSumRE = regexp.MustCompile(`^GOZEN-BLK ro-sum (\S+)$`)

// TestTierBBlock runs the block guest against Linux's blkback on loop
// devices: 64 MiB written, flushed and checked in dom0 after the guest
// powered off; read back; a discarded MiB is zeros in dom0's file; a
// read-only disk refuses writes and stays unchanged; a FAT32 image made by
// mkfs.fat is read and written by the guest, then passes fsck.fat and
// holds what the guest wrote.
func TestTierBBlock(t *testing.T) {
	elf := buildGuest(t, "./qemu/guests/blktest")
	disk := func(vdev, access string, loop int) string {
		return fmt.Sprintf("'format=raw,vdev=%s,access=%s,script=/etc/xen/scripts/block-gozen,target=/dev/loop%d'", vdev, access, loop)
	}
	disks := "disk = [" + disk("xvda", "rw", 0) + ", " + disk("xvdb", "ro", 1) + ", " + disk("xvdc", "rw", 2) + "]\n"
	guests := []rig.Guest{
		{Name: "blktest", ELF: elf, Memory: 128, Timeout: 1200 * time.Second, Config: disks,
			Cmdline: fmt.Sprintf("-hotplug %d", blkCycles)},
		{Name: "blkvar", ELF: elf, Memory: 128, Timeout: 400 * time.Second, Config: disks,
			Cmdline: fmt.Sprintf("-size %d -indirect 0 -queues 4", blkVarSize)},
	}
	run, err := rig.BootDomUs(context.Background(), guests, rig.Script(blkScript), rig.Options{Timeout: 30 * time.Minute})
	saveSerial(t, run)
	if err != nil {
		t.Fatalf("FAIL tier B run: %v\n%s", err, run.SerialText())
	}
	checkBlock(t, run, append(slices.Clone(blkCases), "hotplug"))
	serial := run.SerialText()
	if !strings.Contains(serial, fmt.Sprintf("GOZEN-BLK-CYCLES %d\n", blkCycles)) {
		t.Errorf("FAIL %d cycles of xl block-attach and block-detach did not all complete:\n%s", blkCycles,
			grepLines(serial, "GOZEN-BLK-CYCLES")+grepLines(serial, "GOZEN-WAIT")+grepLines(run.Guests["blktest"].Text(), "hotplug"))
	} else {
		t.Logf("PASS %d cycles of xl block-attach and block-detach of xvdd followed by the guest, which then held what it held before (%s)",
			blkCycles, strings.TrimSpace(grepLines(run.Guests["blktest"].Text(), "BLKTEST HOTPLUG holdings")))
	}
	checkNegotiated(t, run, "blktest", "persistent=true indirect=true segments=64 ring-order=2 queues=1")
	v := run.Guests["blkvar"]
	if v == nil {
		t.Fatalf("FAIL the variant guest never started")
	}
	checkCases(t, v, "BLKTEST", blkCases)
	checkNegotiated(t, run, "blkvar", "persistent=false indirect=false segments=11 ring-order=0 queues=4")
	used := 0
	for _, l := range v.Lines {
		if m := blkQueueRE.FindStringSubmatch(l.Text); m != nil && m[1] != "0" {
			used++
		}
	}
	if used != 4 {
		t.Errorf("FAIL blkvar's requests went to %d of its 4 queues:\n%s", used, grepLines(v.Text(), "BLKTEST queue"))
	} else {
		t.Logf("PASS blkvar's requests went to all 4 queues:\n%s", grepLines(v.Text(), "BLKTEST queue"))
	}
}

// blkInfoRE matches blktest's line on what xvda negotiated.
var blkInfoRE = regexp.MustCompile(`BLKTEST xvda \d+ bytes, sector \d+, (persistent=\S+ indirect=\S+ segments=\d+ ring-order=\d+ queues=\d+)`)

// blkQueueRE matches blktest's count of requests per queue.
var blkQueueRE = regexp.MustCompile(`BLKTEST queue \d+ requests=(\d+)`)

// checkNegotiated checks what guest name's xvda negotiated with blkback.
func checkNegotiated(t *testing.T, run *rig.Run, name, want string) {
	t.Helper()
	g := run.Guests[name]
	if g == nil {
		t.Errorf("FAIL guest %s never started", name)
		return
	}
	m := blkInfoRE.FindStringSubmatch(g.Text())
	switch {
	case m == nil:
		t.Errorf("FAIL guest %s printed no negotiation line", name)
	case m[1] != want:
		t.Errorf("FAIL guest %s negotiated %s, want %s", name, m[1], want)
	default:
		t.Logf("PASS guest %s negotiated %s", name, m[1])
	}
}

// TestTierBGoBackend runs the block guest with its disks served by
// Gozen's Go blkback from dom0's user space (cmd/gozen-backend over
// /dev/xen), with the same checks as TestTierBBlock, and each backend
// must end with no grant mapped and no port bound.
func TestTierBGoBackend(t *testing.T) {
	elf := buildGuest(t, "./qemu/guests/blktest")
	guests := []rig.Guest{{Name: "blktest", ELF: elf, Memory: 128, Timeout: 400 * time.Second}}
	run, err := rig.BootDomUs(context.Background(), guests, rig.Script(goBackendScript), rig.Options{Timeout: 12 * time.Minute})
	saveSerial(t, run)
	if err != nil {
		t.Fatalf("FAIL tier B run: %v\n%s", err, run.SerialText())
	}
	checkBlock(t, run, blkCases)
	serial := run.SerialText()
	for _, b := range []string{"gb-a", "gb-b", "gb-c"} {
		lines := grepLines(serial, "GOZEN-GB "+b+"|")
		if !strings.Contains(lines, "leftovers: none") {
			t.Errorf("FAIL gozen-backend %s did not end with no leftovers:\n%s", b, lines)
		} else {
			t.Logf("PASS gozen-backend %s served and ended with no leftovers", b)
		}
		t.Logf("gozen-backend %s: %s", b, strings.TrimSpace(grepLines(lines, "polling (")))
	}
}

// checkBlock checks a run of blkScript or goBackendScript.
func checkBlock(t *testing.T, run *rig.Run, cases []string) {
	t.Helper()
	checkWaits(t, run)
	g := run.Guests["blktest"]
	if g == nil {
		t.Fatalf("FAIL the guest never started\n%s", run.SerialText())
	}
	checkCases(t, g, "BLKTEST", cases)
	serial := run.SerialText()
	for _, l := range strings.Split(serial, "\n") {
		if strings.Contains(l, "GOZEN-BLK") && strings.Contains(l, "failed") {
			t.Errorf("FAIL dom0: %s", l)
		}
	}
	expect := func(what, prefix string) {
		t.Helper()
		for _, l := range run.Serial {
			if strings.HasPrefix(l.Text, prefix+" PASS") {
				t.Logf("PASS %s: %s", what, l.Text)
				return
			}
			if strings.HasPrefix(l.Text, prefix+" FAIL") {
				t.Errorf("FAIL %s: %s", what, l.Text)
				return
			}
		}
		t.Errorf("FAIL %s: dom0 printed no %s line", what, prefix)
	}
	expect("dom0 finds the 64 MiB written and flushed by the guest", "GOZEN-DATA")
	expect("the discarded MiB is zeros in dom0's file", "GOZEN-ZERO")

	var sums []string
	var logLines []string
	fsck, bigCRC := "", ""
	for _, l := range run.Serial {
		if m := blkROSumRE.FindStringSubmatch(l.Text); m != nil {
			sums = append(sums, m[1])
		}
		if s, ok := strings.CutPrefix(l.Text, "GOZEN-FAT log.txt| "); ok {
			logLines = append(logLines, s)
		}
		if s, ok := strings.CutPrefix(l.Text, "GOZEN-BLK fsck rc="); ok {
			fsck = s
		}
		if s, ok := strings.CutPrefix(l.Text, "GOZEN-FATCRC d/big.bin "); ok {
			bigCRC = s
		}
	}
	if len(sums) != 2 || sums[0] != sums[1] {
		t.Errorf("FAIL the read-only disk's file changed or was not summed: %v", sums)
	} else {
		t.Logf("PASS the read-only disk is unchanged (md5 %s)", sums[0])
	}
	if fsck != "0" {
		t.Errorf("FAIL fsck.fat -n on the guest's FAT image: rc=%s\n%s", fsck, grepLines(serial, "GOZEN-BLK fsck|"))
	} else {
		t.Log("PASS fsck.fat -n finds the guest's FAT image clean")
	}
	if len(logLines) != 100 || logLines[0] != "line 0 from the guest" || logLines[99] != "line 99 from the guest" {
		t.Errorf("FAIL log.txt in dom0 has %d lines, want the guest's 100: %q", len(logLines), logLines)
	} else {
		t.Log("PASS dom0 reads the guest's 100 log lines")
	}
	if want := fmt.Sprintf("%d %08x", 1<<20, crc32.ChecksumIEEE(teststream.Bytes(11, 1<<20))); bigCRC != want {
		t.Errorf("FAIL d/big.bin in dom0: %q, want %q", bigCRC, want)
	} else {
		t.Log("PASS dom0 reads d/big.bin as the guest wrote it")
	}
	for _, l := range g.Lines {
		if strings.Contains(l.Text, "BLKTEST BENCH") || strings.Contains(l.Text, "BLKTEST xvda") {
			t.Log(strings.TrimSpace(l.Text))
		}
	}
}

// grepLines returns the lines of text that contain s.
func grepLines(text, s string) string {
	var out []string
	for _, l := range strings.Split(text, "\n") {
		if strings.Contains(l, s) {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}
