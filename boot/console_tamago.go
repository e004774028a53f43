//go:build tamago

package boot

import (
	"sync/atomic"
	_ "unsafe"

	"github.com/gozen-dev/gozen/hypercall"
)

// Console modes, in the order boot moves through them.
const (
	consoleEarly = iota // port 0xE9: Xen prints "(dN) ..." lines
	consoleXen          // dom0: console_io writes to Xen's serial
	consoleRing         // domU: the PV console ring, xenconsoled reads it
)

// struct xencons_interface layout.
const (
	consIn      = 0
	consInSize  = 1024
	consOut     = 1024
	consOutSize = 2048
	consInCons  = 3072
	consInProd  = 3076
	consOutCons = 3080
	consOutProd = 3084
)

var (
	consoleMode int
	consolePage uintptr
	consolePort uint32
	// line buffers console_io writes, one hypercall per line.
	lineBuf [256]byte
	lineLen int
)

//go:linkname printk runtime/goos.Printk
func printk(c byte) {
	switch consoleMode {
	case consoleXen:
		lineBuf[lineLen] = c
		lineLen++
		if c == '\n' || lineLen == len(lineBuf) {
			flushLine()
		}
	case consoleRing:
		ringPut(c)
		if c == '\n' {
			hypercall.EvtchnSend(consolePort)
		}
	default:
		outb(0xe9, c)
	}
}

func flushLine() {
	if lineLen > 0 {
		hypercall.ConsoleWrite(lineBuf[:lineLen])
		lineLen = 0
	}
}

// ringPut appends c to the console ring's output, waiting (yielding the
// CPU, at most about a second) for xenconsoled to make room.
func ringPut(c byte) {
	prod := atomic.LoadUint32(u32(consolePage + consOutProd))
	for tries := 0; ; tries++ {
		cons := atomic.LoadUint32(u32(consolePage + consOutCons))
		if prod-cons < consOutSize {
			break
		}
		if tries > 10000 { // nobody drains the ring: drop the byte
			return
		}
		hypercall.EvtchnSend(consolePort)
		hypercall.Yield()
	}
	*(*byte)(unsafeAdd(consolePage + consOut + uintptr(prod%consOutSize))) = c
	atomic.StoreUint32(u32(consolePage+consOutProd), prod+1)
}

// flushConsole pushes out buffered output before a shutdown.
func flushConsole() {
	switch consoleMode {
	case consoleXen:
		flushLine()
	case consoleRing:
		hypercall.EvtchnSend(consolePort)
		// give xenconsoled a moment to drain what is left
		for i := 0; i < 1000; i++ {
			if atomic.LoadUint32(u32(consolePage+consOutCons)) == atomic.LoadUint32(u32(consolePage+consOutProd)) {
				return
			}
			hypercall.Yield()
		}
	}
}

// ConsoleRing returns the PV console page address and its event-channel
// port (zero for dom0, which uses console_io).
func ConsoleRing() (page uintptr, port uint32) { return consolePage, consolePort }

func initConsole() {
	if Start != nil && Start.IsInitDomain() {
		consoleMode = consoleXen
		return
	}
	pfn, err := hypercall.GetParam(hypercall.HVMParamConsolePFN)
	if err != nil || pfn == 0 {
		print("gozen: no PV console (", errString(err), "); staying on port 0xE9\n")
		return
	}
	port, err := hypercall.GetParam(hypercall.HVMParamConsoleEvtchn)
	if err != nil {
		print("gozen: no PV console event channel (", errString(err), "); staying on port 0xE9\n")
		return
	}
	consolePage = uintptr(pfn << 12)
	consolePort = uint32(port)
	consoleMode = consoleRing
}

func errString(err error) string {
	if err == nil {
		return "none"
	}
	return err.Error()
}
