// Command dom0tool is the rig's helper inside the tier-B Linux dom0 (a
// static Linux binary the harness adds to dom0's initramfs).
//
//	dom0tool now   print the wall clock in Unix nanoseconds
package main

import (
	"fmt"
	"os"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: dom0tool now")
		os.Exit(2)
	}
	switch os.Args[1] {
	case "now":
		fmt.Println(time.Now().UnixNano())
	default:
		fmt.Fprintln(os.Stderr, "dom0tool: unknown command", os.Args[1])
		os.Exit(2)
	}
}
