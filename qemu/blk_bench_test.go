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
		run, err := rig.BootDomUs(context.Background(), guests, rig.Script(benchBlkScript), rig.Options{Timeout: 25 * time.Minute})
		saveSerial(b, run)
		if err != nil {
			b.Fatalf("FAIL rig run: %v\n%s", err, run.SerialText())
		}
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
