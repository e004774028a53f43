//go:build tamago

// Command bootmark is the boot-time benchmark's guest: the first thing its
// main does is print "G" on port 0xE9, which Xen shows at once on its
// serial line; then it powers off.
package main

import "github.com/gozen-dev/gozen/boot"

func main() {
	boot.EarlyPrint("G\n")
}
