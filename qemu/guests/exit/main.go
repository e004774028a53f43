//go:build tamago

// Command exit is a guest-test program: it ends the way its flags say, so
// the rig can check how each ending reaches Xen.
//
//	-code N      os.Exit(N)
//	-panic       panic with a message
//	-fault KIND  a CPU exception: nilwrite (a write through a nil pointer),
//	             divzero (IDIV by zero in assembly), ud (UD2), gp (a
//	             non-canonical address), stack (RSP run into the null page)
//	(none)       return from main
package main

import (
	"flag"
	"fmt"
	"os"

	"github.com/gozen-dev/gozen/internal/phys"
	_ "github.com/gozen-dev/gozen/platform"
)

func main() {
	code := flag.Int("code", -1, "exit with this status")
	doPanic := flag.Bool("panic", false, "panic")
	fault := flag.String("fault", "", "raise this CPU exception")
	flag.Parse()
	fmt.Println("exit-test: args", os.Args[1:])
	switch {
	case *fault != "":
		fmt.Println("exit-test: raising fault", *fault)
		raise(*fault)
		fmt.Println("exit-test: FAIL fault: the fault returned")
	case *doPanic:
		panic("exit-test: deliberate panic")
	case *code >= 0:
		fmt.Println("exit-test: calling os.Exit", *code)
		os.Exit(*code)
	}
	fmt.Println("exit-test: returning from main")
}

func divideByZero()
func invalidOpcode()
func nonCanonical()
func stackOverflow()

var sink *int

//go:noinline
func nilWrite() {
	*(*int)(phys.Pointer(8)) = 1 // the null page is unmapped
	sink = nil
}

func raise(kind string) {
	switch kind {
	case "nilwrite":
		nilWrite()
	case "divzero":
		divideByZero()
	case "ud":
		invalidOpcode()
	case "gp":
		nonCanonical()
	case "stack":
		stackOverflow()
	default:
		fmt.Println("exit-test: unknown fault", kind)
	}
}
