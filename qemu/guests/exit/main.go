//go:build tamago

// Command exit is a guest-test program: it ends the way its flags say, so
// the rig can check how each ending reaches Xen.
//
//	-code N   os.Exit(N)
//	-panic    panic with a message
//	(none)    return from main
package main

import (
	"flag"
	"fmt"
	"os"

	_ "github.com/gozen-dev/gozen/boot"
)

func main() {
	code := flag.Int("code", -1, "exit with this status")
	doPanic := flag.Bool("panic", false, "panic")
	flag.Parse()
	fmt.Println("exit-test: args", os.Args[1:])
	switch {
	case *doPanic:
		panic("exit-test: deliberate panic")
	case *code >= 0:
		fmt.Println("exit-test: calling os.Exit", *code)
		os.Exit(*code)
	}
	fmt.Println("exit-test: returning from main")
}
