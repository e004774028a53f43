// Command standin is a host stand-in for a Gozen image in imagesyms'
// tests: it links boot's runtime-symbol record and three 8-byte
// variables that stand for the runtime's (a host runtime has no
// runtime.blocMax), and prints the record as it reads at run time and
// the variables' addresses.
package main

import (
	"fmt"

	"github.com/gozen-dev/gozen/boot"
)

var (
	standBloc    uint64 = 1
	standBlocMax uint64 = 2
	standLock    uintptr
	standSmall   uint32 // the wrong shape for the record
)

func main() {
	fmt.Printf("record %#x\n", boot.SymbolRecord())
	fmt.Printf("vars [%#x %#x %#x] %d %d %d %d\n", &standBloc, &standBlocMax, &standLock, standBloc, standBlocMax, standLock, standSmall)
}
