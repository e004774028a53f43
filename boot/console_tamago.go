//go:build tamago

package boot

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"syscall"
	"unsafe"

	"github.com/gozen-dev/gozen/arch/amd64/smp"
	"github.com/gozen-dev/gozen/evtchn"
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
	// ringOut writes the PV console ring's output side.
	ringOut consoleOut
)

// consoleOwner is 0 or the vCPU (id + 1) writing the console: with more
// than one vCPU (package arch/amd64/smp) two of them may print at once,
// and the ring indices and dom0's line buffer take one writer at a time.
var consoleOwner atomic.Uint32

// lockConsole takes the console for this vCPU and reports whether it did:
// a vCPU already holding it (a fault report while it printed, or another
// goroutine it switched to) writes without taking it again.
//
//go:nosplit
func lockConsole() bool {
	me := uint32(smp.Current()) + 1
	if consoleOwner.Load() == me {
		return false
	}
	for !consoleOwner.CompareAndSwap(0, me) {
	}
	return true
}

//go:linkname printk runtime/goos.Printk
func printk(c byte) {
	if lockConsole() {
		defer consoleOwner.Store(0)
	}
	switch consoleMode {
	case consoleXen:
		lineBuf[lineLen] = c
		lineLen++
		if c == '\n' || lineLen == len(lineBuf) {
			flushLine()
		}
	case consoleRing:
		// TamaGo runs one goroutine at a time and switches only at
		// calls that may grow the stack or block. Between loading the
		// indices and storing out_prod the ring makes no such call, and
		// it loads them again after every wait, so two printk callers
		// cannot interleave inside an update.
		if !ringOut.put(c) {
			consoleRingDead()
			outb(0xe9, c)
			return
		}
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

// consoleRingDead moves the console off a ring found corrupt (its indices
// claim more than it holds): from now on output goes to port 0xE9, which
// Xen prints on its own console, starting with a line that says why.
func consoleRingDead() {
	consoleMode = consoleEarly
	e9string("\ngozen: console ring corrupt (out_prod ")
	var prod, cons uint32
	if ce := ringOut.corrupt(); ce != nil {
		prod, cons = ce.Prod, ce.Cons
	}
	e9uint(prod)
	e9string(", out_cons ")
	e9uint(cons)
	e9string("); console output continues on port 0xE9\n")
}

func e9string(s string) {
	for i := 0; i < len(s); i++ {
		outb(0xe9, s[i])
	}
}

func e9uint(v uint32) {
	var b [10]byte
	i := len(b)
	for {
		i--
		b[i] = byte('0' + v%10)
		if v /= 10; v == 0 {
			break
		}
	}
	for ; i < len(b); i++ {
		outb(0xe9, b[i])
	}
}

func consoleNow() int64 { return int64(SystemTime()) }
func consoleKick()      { hypercall.EvtchnSend(consolePort) }
func consoleYield()     { hypercall.Yield() }

// flushConsole pushes out buffered output before a shutdown.
func flushConsole() {
	switch consoleMode {
	case consoleXen:
		flushLine()
	case consoleRing:
		// give xenconsoled a moment to drain what is left
		ringOut.drain(consoleLineBudget)
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
	out := unsafe.Slice((*byte)(unsafeAdd(consolePage+consOut)), consOutSize)
	err = ringOut.init(out, u32(consolePage+consOutCons), u32(consolePage+consOutProd), consoleNow, consoleKick, consoleYield)
	if err != nil {
		print("gozen: PV console: ", err.Error(), "; staying on port 0xE9\n")
		return
	}
	consoleMode = consoleRing
}

func errString(err error) string {
	if err == nil {
		return "none"
	}
	return err.Error()
}

// Console input.
//
// TamaGo's syscall layer keeps a file table whose descriptor 0 is an
// unconnected pipe (reads fail with EINVAL), and os.Stdin is a plain
// *os.File on descriptor 0 whose reads go through syscall.Read to that
// table, not to the runtime. So boot makes an in-memory pipe with
// syscall.Pipe, moves its read end onto descriptor 0 with syscall.Dup2,
// and feeds the write end from the console ring's input side. After
// ConnectStdin, os.Stdin, bufio.Scanner(os.Stdin) and fmt.Scan work as on
// any OS. The pipe holds
// 4 KiB; while the app does not read, input waits in the ring and then in
// xenconsoled (back-pressure, nothing is dropped).
//
// The ring's indices are hostile input (see consoleIn): if xenconsoled's
// side is found corrupt, one line says so, the input side is dead for good
// and os.Stdin reads end of input, as after a terminal hangs up.
//
// By default a small line discipline runs, like a terminal in cooked mode
// (xenconsoled's pty is raw, so `xl console` sends keys as typed): typed
// characters are echoed, CR or LF (or CR LF) ends a line, which reaches
// os.Stdin with a trailing '\n', and backspace/DEL erases. SetConsoleRaw
// turns it off: bytes go to os.Stdin as they come, without echo.

// ConsoleInput counts what the console input side did.
var ConsoleInput struct {
	// Bytes counts bytes taken from the ring. Errors counts the times
	// the input side was found unusable: at most 1, since it is then
	// dead (corrupt indices) and nothing more is read.
	Bytes, Errors atomic.Uint64
}

var consoleRaw atomic.Bool

// SetConsoleRaw switches console input between raw (true: no echo, bytes
// passed on as they come) and the default line mode.
func SetConsoleRaw(raw bool) { consoleRaw.Store(raw) }

var (
	stdinW  int = -1 // write end of the stdin pipe
	inputLD lineDisc
	ringIn  consoleIn // the PV console ring's input side
)

var stdinOnce struct {
	sync.Once
	err error
}

// StdinEvents is what console input needs of the domain's event channels:
// the portable interface, and Adopt to track the console's port, which
// the toolstack bound before boot.
type StdinEvents interface {
	evtchn.Events
	Adopt(port evtchn.Port) error
}

var (
	stdinEvents  StdinEvents
	stdinRunning atomic.Bool // consoleInputLoop is running
)

// ConnectStdin connects the console's input side to os.Stdin (domU with a
// PV console only) and starts the goroutine that feeds it; later calls
// return the first call's result. It is opt-in: apps that read os.Stdin
// call it first (apps/shell does). Before it, reads of os.Stdin fail.
//
// Why not for every app: apps that do not read input should not pay for a
// goroutine and wake-ups on the console port; and in the tier-B V4V test
// (two domUs, Argo ping-pong) runs with this goroutine started at boot
// were slow (median round trip 3-32 ms, 3 runs) where runs without it
// were not (1.1 ms, 2 runs), though that port stayed quiet. Not yet
// understood; the machine was shared and loaded.
//
// Package platform calls it for apps (platform.ConnectStdin), with the
// domain's event channels.
func ConnectStdin(ev StdinEvents) error {
	stdinOnce.Do(func() { stdinOnce.err = connectStdin(ev) })
	return stdinOnce.err
}

func connectStdin(ev StdinEvents) error {
	if consoleMode != consoleRing || ev == nil {
		return errors.New("boot: no console input here (dom0 or no PV console)")
	}
	stdinEvents = ev
	in := unsafe.Slice((*byte)(unsafeAdd(consolePage+consIn)), consInSize)
	report := func(line string) { print(line) }
	if err := ringIn.init(in, u32(consolePage+consInCons), u32(consolePage+consInProd), consoleKick, report); err != nil {
		return err
	}
	var fds [2]int
	if err := syscall.Pipe(fds[:]); err != nil {
		return fmt.Errorf("boot: console input: pipe: %w", err)
	}
	if err := syscall.Dup2(fds[0], 0); err != nil {
		return fmt.Errorf("boot: console input: dup2: %w", err)
	}
	syscall.Close(fds[0])
	stdinW = fds[1]
	return startStdin()
}

// startStdin adopts the console's port and starts the input goroutine.
func startStdin() error {
	port := evtchn.Port(consolePort)
	if err := stdinEvents.Adopt(port); err != nil {
		return fmt.Errorf("boot: console input: %w", err)
	}
	stdinRunning.Store(true)
	go consoleInputLoop(port)
	return nil
}

// ResumeStdin re-attaches console input after ResumeConsole, if it was
// connected and its goroutine ended because its port was lost by the
// resume (in a domain that did not move, it goes on by itself).
func ResumeStdin() error {
	if stdinEvents == nil || stdinW < 0 || stdinRunning.Load() {
		return nil
	}
	in := unsafe.Slice((*byte)(unsafeAdd(consolePage+consIn)), consInSize)
	report := func(line string) { print(line) }
	if err := ringIn.init(in, u32(consolePage+consInCons), u32(consolePage+consInProd), consoleKick, report); err != nil {
		return fmt.Errorf("boot: resume: console input: %w", err)
	}
	return startStdin()
}

func consoleInputLoop(port evtchn.Port) {
	defer stdinRunning.Store(false)
	var seen evtchn.Generation
	for {
		before := ringIn.bytes
		err := ringIn.drain(consoleInput)
		ConsoleInput.Bytes.Add(ringIn.bytes - before)
		if err != nil {
			// The input side is dead (drain said so on the console):
			// os.Stdin reads end of input from now on.
			ConsoleInput.Errors.Add(1)
			inputLD.reset()
			syscall.Close(stdinW)
			return
		}
		if seen, err = stdinEvents.Wait(context.Background(), port, seen); err != nil {
			if !errors.Is(err, evtchn.ErrResumed) { // else ResumeStdin restarts it
				print("gozen: console input stopped: ", err.Error(), "\n")
			}
			return
		}
	}
}

// consoleInput passes input on to os.Stdin, through the line discipline
// unless raw.
func consoleInput(b []byte) {
	if consoleRaw.Load() {
		inputLD.reset()
		stdinWrite(b)
		return
	}
	if inputLD.feed(b, printk, stdinWrite) {
		hypercall.EvtchnSend(consolePort) // printk notifies only at newlines
	}
}

func stdinWrite(b []byte) {
	for len(b) > 0 {
		n, err := syscall.Write(stdinW, b)
		if err != nil || n <= 0 {
			return // the app closed os.Stdin: input is dropped
		}
		b = b[n:]
	}
}
