package smp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
)

// Mending runtime.notesleep.
//
// With the runtime's _cgo_yield hook set, notesleep (lock_sema.go, the
// notes of GOOS=tamago) is meant to sleep in 10 ms slices and call the
// hook between them, but its loop runs while the note's key is 0, and
// notesleep has just set the key to the sleeping M: the loop never runs
// and notesleep returns at once, unwoken (upstream, only a thread
// sanitizer build on a lock_sema platform would set the hook, and none
// does). stopm then acquires no P and the runtime crashes. MendNotesleep
// rewrites the loop in the compiled code into what notetsleep's untimed
// sleep does with the hook: sleep a slice, leave when semasleep took a
// wake-up, otherwise call the hook and sleep again. Like notesleep
// without the hook (semasleep(-1)), it leaves exactly when it has taken
// the wake-up's semaphore count, so no count is left over for a later
// sleep.
//
// The loop is found by its instructions (those of the TamaGo compiler
// tamago-go1.26.0 for amd64): with the addresses in its calls and loads
// left open, and checked against the function's other call of semasleep
// and load of _cgo_yield. Any other code is left alone and hosting stays
// off.

// sleepLoop is the compiled loop (71 bytes from its first instruction);
// -1 marks the bytes that may differ (32-bit displacements, frame
// offsets, the exit's 8-bit displacement).
var sleepLoop = []int{
	0xb8, 0x80, 0x96, 0x98, 0x00, // MOVL $10e6, AX
	0xe8, -1, -1, -1, -1, // CALL runtime.semasleep
	0x48, 0x8b, 0x0d, -1, -1, -1, -1, // MOVQ runtime.cgo_yield(SB), CX
	0x48, 0x8b, 0x09, // MOVQ 0(CX), CX
	0x48, 0x89, 0x0c, 0x24, // MOVQ CX, 0(SP)
	0x48, 0xc7, 0x44, 0x24, 0x08, 0x00, 0x00, 0x00, 0x00, // MOVQ $0, 8(SP)
	0xe8, -1, -1, -1, -1, // CALL runtime.asmcgocall
	0x45, 0x0f, 0x57, 0xff, // XORPS X15, X15
	0x64, 0x4c, 0x8b, 0x34, 0x25, 0xf8, 0xff, 0xff, 0xff, // MOVQ FS:-8, R14
	0x48, 0x8b, 0x54, 0x24, -1, // MOVQ n(SP), DX
	0x48, 0x8b, 0x5c, 0x24, -1, // MOVQ n(SP), BX
	0x48, 0x8b, 0x0b, // MOVQ 0(BX), CX (n.key): the loop's entry
	0x48, 0x85, 0xc9, // TESTQ CX, CX
	0x74, 0xbb, // JE (the loop's first instruction)
	0xeb, -1, // JMP exit
}

// where things are in sleepLoop
const (
	loopCallSema   = 5
	loopLoadYield  = 10
	loopCallYield  = 33
	loopYieldTail  = 38 // XORPS, MOVQ FS:-8, R14: 13 bytes
	loopEntry      = 61
	loopExitJump   = 69
	sleepLoopBytes = 71
)

// semasleepNeg1 is notesleep's other call of semasleep: MOVQ $-1, AX;
// CALL rel32.
var semasleepNeg1 = []byte{0x48, 0xc7, 0xc0, 0xff, 0xff, 0xff, 0xff, 0xe8}

// MendNotesleep finds the sleep loop in code, runtime.notesleep's
// machine code at address base, and returns where it starts (an offset
// in code) and the bytes to write there.
func MendNotesleep(code []byte, base uint64) (off int, mended []byte, err error) {
	off = -1
	for i := 0; i+sleepLoopBytes <= len(code); i++ {
		if matches(code[i:], sleepLoop) {
			if off >= 0 {
				return 0, nil, errors.New("smp: notesleep's sleep loop appears twice")
			}
			off = i
		}
	}
	if off < 0 {
		return 0, nil, errors.New("smp: notesleep's sleep loop not found (another compiler?)")
	}
	loop := code[off : off+sleepLoopBytes]
	at := func(i int) uint64 { return base + uint64(off+i) }
	rel32 := func(i int) uint64 { // target of the rel32 ending at i+4
		return at(i+4) + uint64(int64(int32(binary.LittleEndian.Uint32(loop[i:]))))
	}
	sema := rel32(loopCallSema + 1)
	yieldVar := rel32(loopLoadYield + 3)
	asmcgocall := rel32(loopCallYield + 1)
	exit := at(sleepLoopBytes) + uint64(int64(int8(loop[loopExitJump+1])))
	// the function's other semasleep call and _cgo_yield load
	j := bytes.Index(code, semasleepNeg1)
	if j < 0 || j+len(semasleepNeg1)+4 > len(code) {
		return 0, nil, errors.New("smp: notesleep's semasleep(-1) not found")
	}
	if t := base + uint64(j+len(semasleepNeg1)+4) + uint64(int64(int32(binary.LittleEndian.Uint32(code[j+len(semasleepNeg1):])))); t != sema {
		return 0, nil, fmt.Errorf("smp: notesleep's loop calls %#x, its semasleep(-1) %#x", sema, t)
	}
	k := bytes.Index(code, []byte{0x48, 0x8b, 0x0d})
	if k < 0 || k+7 > len(code) || base+uint64(k+7)+uint64(int64(int32(binary.LittleEndian.Uint32(code[k+3:])))) != yieldVar {
		return 0, nil, errors.New("smp: notesleep's first _cgo_yield load does not match its loop's")
	}
	if exit < base || exit >= base+uint64(off) {
		return 0, nil, fmt.Errorf("smp: notesleep's loop exits to %#x, outside the code before it", exit)
	}
	if d := int64(exit) - int64(at(loopLoadYield+5)); d < -128 {
		return 0, nil, fmt.Errorf("smp: notesleep's exit is %d bytes away", d)
	}

	m := make([]byte, 0, sleepLoopBytes)
	m = append(m, loop[:loopLoadYield]...)                          // MOVL $10e6, AX; CALL semasleep
	m = append(m, 0x48, 0x85, 0xc0)                                 // TESTQ AX, AX
	m = append(m, 0x7d, rel8(int(int64(exit)-int64(at(len(m)+2))))) // JGE exit: the wake-up taken
	y := len(m)
	m = append(m, loop[loopLoadYield:loopYieldTail+13]...) // the hook's call, moved by 5 bytes
	binary.LittleEndian.PutUint32(m[y+3:], uint32(int32(int64(yieldVar)-int64(at(y+7)))))
	c := y + loopCallYield - loopLoadYield
	binary.LittleEndian.PutUint32(m[c+1:], uint32(int32(int64(asmcgocall)-int64(at(c+5)))))
	m = append(m, 0xeb, rel8(-(len(m) + 2))) // JMP loop
	for len(m) < loopEntry {
		m = append(m, 0x90)
	}
	m = append(m, 0xeb, rel8(-(loopEntry + 2))) // the entry: JMP loop
	for len(m) < sleepLoopBytes {
		m = append(m, 0x90)
	}
	return off, m, nil
}

// rel8 is an 8-bit jump displacement (checked to fit by its callers).
func rel8(d int) byte { return byte(int8(d)) }

// matches reports whether code starts with pattern (-1: any byte).
func matches(code []byte, pattern []int) bool {
	if len(code) < len(pattern) {
		return false
	}
	for i, p := range pattern {
		if p >= 0 && code[i] != byte(p) {
			return false
		}
	}
	return true
}
