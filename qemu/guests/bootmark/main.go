//go:build tamago

// Command bootmark is the boot-time benchmark's guest: the first thing its
// main does is take the time since the domain's PVH entry
// (boot.SinceEntry), then print "G" on port 0xE9, which Xen shows at once
// on its serial line, then "BOOTMARK entry-to-main-ns=N", Gozen's own part
// of the boot; then it powers off.
package main

import (
	"strconv"

	"github.com/gozen-dev/gozen/boot"
)

func main() {
	own := boot.SinceEntry()
	boot.EarlyPrint("G\n")
	boot.EarlyPrint("BOOTMARK entry-to-main-ns=" + strconv.FormatInt(own.Nanoseconds(), 10) + "\n")
}
