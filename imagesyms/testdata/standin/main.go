// Command standin is a host stand-in for a Gozen image in imagesyms'
// tests: it links boot's runtime-symbol record and three 8-byte
// variables that stand for the runtime's (a host runtime has no
// runtime.blocMax), and package smp's runtime-offset record and two
// struct types that stand for the runtime's m and p. It prints both
// records as they read at run time, the variables' addresses and the
// stand-in fields' offsets.
package main

import (
	"fmt"
	"unsafe"

	"github.com/gozen-dev/gozen/arch/amd64/smp"
	"github.com/gozen-dev/gozen/boot"
)

var (
	standBloc    uint64 = 1
	standBlocMax uint64 = 2
	standLock    uintptr
	standSmall   uint32 // the wrong shape for the record
)

// standM stands for runtime.m: p, and waitsemacount in an embedded mOS.
type standM struct {
	id    int64
	flags [3]byte
	p     uintptr
	standMOS
	tail uint16
}

// standMOS stands for runtime.mOS.
type standMOS struct {
	pad           uint8
	waitsemacount uint32
}

// standP stands for runtime.p.
type standP struct {
	id     int32
	status uint32
}

var (
	anM standM
	aP  standP
)

// standFunc stands for runtime.notesleep.
//
//go:noinline
func standFunc(x int) int { return x*3 + 1 }

func main() {
	fmt.Printf("record %#x\n", boot.SymbolRecord())
	fmt.Printf("vars [%#x %#x %#x] %d %d %d %d\n", &standBloc, &standBlocMax, &standLock, standBloc, standBlocMax, standLock, standSmall)
	offs, ok := smp.OffsetRecord()
	addr, size := smp.FuncRecord(0)
	fmt.Printf("offsets %v %v %#x %d\n", offs, ok, addr, size)
	fmt.Printf("fields [%d %d %d] %d %d\n", unsafe.Offsetof(anM.p), unsafe.Offsetof(anM.waitsemacount), unsafe.Offsetof(aP.status), anM.tail, aP.id+int32(standFunc(0)-1))
}
