//go:build tamago

// Command idle is a guest-test program: it sleeps, so the rig can check
// that an idle Gozen domain blocks instead of spinning.
package main

import (
	"flag"
	"fmt"
	"time"

	_ "github.com/gozen-dev/gozen/platform"
)

func main() {
	d := flag.Duration("sleep", 6*time.Second, "how long to sleep")
	flag.Parse()
	fmt.Println("idle: sleeping", *d)
	start := time.Now()
	time.Sleep(*d)
	fmt.Println("idle: woke after", time.Since(start))
}
