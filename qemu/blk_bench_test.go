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

// benchBlkScript gives each guest the same disks on loop devices over
// files in dom0's tmpfs (xvda data, xvdb read-only, xvdc FAT32, as
// blktest wants), then runs the Gozen guest (qemu/guests/blktest) and the
// Linux PVH domU (dom0tool blkbench, O_DIRECT on /dev/xvda) in turn, alone
// on their vCPU, against the same dom0 blkback.
var benchBlkScript = fmt.Sprintf(`
mk() {
	dd if=/dev/zero of=/tmp/$1-data.img bs=1M count=0 seek=%[1]d 2>/dev/null
	dd if=/dev/zero of=/tmp/$1-ro.img bs=1M count=0 seek=8 2>/dev/null
	dd if=/dev/zero of=/tmp/$1-fat.img bs=1M count=0 seek=64 2>/dev/null
	mkfs.fat -F 32 /tmp/$1-fat.img >/dev/null
	/gozen/dom0tool fatput /tmp/$1-fat.img config.txt "greeting=hello from dom0"
	losetup /dev/loop$2 /tmp/$1-data.img; losetup -r /dev/loop$(($2+1)) /tmp/$1-ro.img; losetup /dev/loop$(($2+2)) /tmp/$1-fat.img
}
mk gzb 0
mk lxb 3
gozen-guest gzb /gozen/gzb.cfg 600
gozen-guest lxb /gozen/lxb.cfg 600
`, blkSize>>20+16)

var (
	blktestBenchRE = regexp.MustCompile(`BLKTEST BENCH (\S+) (\S+) `)
	blkBenchRE     = regexp.MustCompile(`GOZEN-BLKBENCH (\S+) (\S+) `)
)

// BenchmarkBlock compares a Gozen PVH domU's disk (blkfront with
// persistent grants, indirect segments, ring order 2) with a Linux PVH
// domU's (xen-blkfront, O_DIRECT) of the same memory and vCPUs, on the
// same dom0 blkback, in one rig run: sequential write and read MB/s (1 MiB
// requests, four in flight) and 4 KiB random-read IOPS at queue depth 1
// and 32.
func BenchmarkBlock(b *testing.B) {
	elf := buildGuest(b, "./qemu/guests/blktest")
	tool, err := rig.BuildDom0Tool()
	if err != nil {
		b.Fatal(err)
	}
	disks := func(first int) string {
		d := func(vdev, access string, loop int) string {
			return fmt.Sprintf("'format=raw,vdev=%s,access=%s,script=/etc/xen/scripts/block-gozen,target=/dev/loop%d'", vdev, access, loop)
		}
		return "disk = [" + d("xvda", "rw", first) + ", " + d("xvdb", "ro", first+1) + ", " + d("xvdc", "rw", first+2) + "]\n"
	}
	guests := []rig.Guest{
		{Name: "gzb", ELF: elf, Memory: benchIOMemory, Config: disks(0)},
		{Name: "lxb", Linux: true, Memory: benchIOMemory, Config: disks(3),
			Init:    fmt.Sprintf("/gozen/dom0tool blkbench /dev/xvda %d || echo GOZEN-BLKBENCH failed", blkSize),
			Modules: []string{"xen-blkfront"}, Files: []rig.CPIOFile{{Name: "gozen/dom0tool", Mode: 0o755, Data: tool}}},
	}
	for i := 0; i < b.N; i++ {
		run := bootBench(b, guests, benchBlkScript, rig.Options{Timeout: 25 * time.Minute})
		gz, lx := map[string]float64{}, map[string]float64{}
		for _, l := range run.Serial {
			if m := blktestBenchRE.FindStringSubmatch(l.Text); m != nil && strings.Contains(l.Text, "GZ|gzb|") {
				gz[m[1]], _ = strconv.ParseFloat(m[2], 64)
			}
			if m := blkBenchRE.FindStringSubmatch(l.Text); m != nil && strings.Contains(l.Text, "GZ|lxb|") {
				lx[m[1]], _ = strconv.ParseFloat(m[2], 64)
			}
		}
		for _, k := range []string{"write-mbs", "read-mbs", "randread-4k-qd1", "randread-4k-qd32"} {
			if gz[k] == 0 || lx[k] == 0 {
				b.Fatalf("FAIL missing %s: gozen %v linux %v\n%s", k, gz, lx, run.SerialText())
			}
			b.ReportMetric(gz[k], "gozen-"+k)
			b.ReportMetric(lx[k], "linux-"+k)
			b.ReportMetric(gz[k]/lx[k], "gozen/linux("+k+")")
		}
	}
}

// benchGoBackScript gives one Linux PVH domU two disks of the same size
// over files in dom0's tmpfs: xvda from Linux's kernel blkback (a loop
// device), xvdb from Gozen's Go blkback in dom0's user space
// (cmd/gozen-backend, persistent grants, indirect segments, ring order 2);
// the domU benchmarks both in turn with O_DIRECT. The Go blkback polls
// its ring for up to 10 ms after answering (-poll): blkback's default cap
// (50 µs) is for hardware, while under the rig's emulation a Linux
// domU's next request follows a response after 0.5-8 ms.
var benchGoBackScript = fmt.Sprintf(`
dd if=/dev/zero of=/tmp/k.img bs=1M count=0 seek=%[1]d 2>/dev/null
dd if=/dev/zero of=/tmp/g.img bs=1M count=0 seek=%[1]d 2>/dev/null
losetup /dev/loop0 /tmp/k.img
printf '%%s\n' '#!/bin/sh' \
	'/gozen/gozen-backend vbd -domid $1 -file /tmp/g.img -vdev xvdb -persistent -indirect 64 -ring-order 2 -poll 10ms -backend-class gozen-vbd >/tmp/gb.log 2>&1 &' \
	'wait-for xs /local/domain/0/backend/gozen-vbd/$1/51728/state 2 90 || echo "GOZEN-GB failed to start"' > /tmp/gbhook.sh
chmod +x /tmp/gbhook.sh
gozen-guest lxg /gozen/lxg.cfg 900 /tmp/gbhook.sh
sleep 3; pkill -INT -f gozen-backend; sleep 2
sed "s/^/GOZEN-GB | /" /tmp/gb.log
losetup -d /dev/loop0
`, blkSize>>20+16)

// benchGoBackInit runs dom0tool blkbench on each disk, marking its lines.
var benchGoBackInit = fmt.Sprintf(`
echo "GOZEN-BENCH-DISK kernel"; /gozen/dom0tool blkbench /dev/xvda %[1]d || echo "GOZEN-BLKBENCH failed"
echo "GOZEN-BENCH-DISK gozen"; /gozen/dom0tool blkbench /dev/xvdb %[1]d || echo "GOZEN-BLKBENCH failed"
`, blkSize)

// BenchmarkGoBackend compares Gozen's Go blkback in dom0's user space with
// Linux's kernel blkback serving the same Linux PVH domU (its
// xen-blkfront, O_DIRECT), in one rig run: sequential write and read MB/s
// and 4 KiB random-read IOPS at queue depth 1 and 32.
func BenchmarkGoBackend(b *testing.B) {
	needGuest(b, 0)
	tool, err := rig.BuildDom0Tool()
	if err != nil {
		b.Fatal(err)
	}
	guests := []rig.Guest{{Name: "lxg", Linux: true, Memory: benchIOMemory,
		Config:  "disk = ['format=raw,vdev=xvda,access=rw,script=/etc/xen/scripts/block-gozen,target=/dev/loop0']\n",
		Init:    benchGoBackInit,
		Modules: []string{"xen-blkfront"}, Files: []rig.CPIOFile{{Name: "gozen/dom0tool", Mode: 0o755, Data: tool}}}}
	for i := 0; i < b.N; i++ {
		run := bootBench(b, guests, benchGoBackScript, rig.Options{Timeout: 25 * time.Minute})
		g := run.Guests["lxg"]
		if g == nil {
			b.Fatalf("FAIL the Linux domU never started\n%s", run.SerialText())
		}
		figures := map[string]map[string]float64{"kernel": {}, "gozen": {}}
		disk := ""
		for _, l := range g.Lines {
			if d, ok := strings.CutPrefix(strings.TrimSpace(l.Text), "GOZEN-BENCH-DISK "); ok {
				disk = d
			}
			if m := blkBenchRE.FindStringSubmatch(l.Text); m != nil && figures[disk] != nil {
				figures[disk][m[1]], _ = strconv.ParseFloat(m[2], 64)
			}
		}
		k, gz := figures["kernel"], figures["gozen"]
		for _, name := range []string{"write-mbs", "read-mbs", "randread-4k-qd1", "randread-4k-qd32"} {
			if k[name] == 0 || gz[name] == 0 {
				b.Fatalf("FAIL missing %s: kernel %v gozen %v\n%s", name, k, gz, run.SerialText())
			}
			b.ReportMetric(gz[name], "gozenback-"+name)
			b.ReportMetric(k[name], "kernelback-"+name)
			b.ReportMetric(gz[name]/k[name], "gozenback/kernelback("+name+")")
		}
	}
}
