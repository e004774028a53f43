package smp

import (
	"bytes"
	"encoding/hex"
	"strings"
	"testing"
)

// notesleepCode is runtime.notesleep as tamago-go1.26.0 compiled it for
// qemu/guests/smp, at notesleepBase.
const (
	notesleepCode = "493b66100f86f5000000554889e54883ec28498b4e304c89f20f1f80000000004839110f85c40000004889c331c0f0480fb10b0f94c184c974394889542418488b4a30c681e500000001488b0d3727280048833900740e48895c24200f1f4000e97e00000048c7c0ffffffffe80f880200eb1d48833b0175064883c4285dc3488d052f5b1500bb1d000000e8d08c0500488b442418488b4030c680e5000000004883c4285dc3b880969800e8d0870200488b0dd1262800488b0948890c2448c744240800000000e854f10500450f57ff644c8b3425f8ffffff488b542418488b5c2420488b0b4885c974bbeba3488d05b42a1500bb13000000e8628c0500904889442408e837da0500488b442408e9edfeffff"
	notesleepBase = 0x1276a0
	// the loop at 0x127746, mended by hand from the plan in notesleep.go
	mendedLoop = "b880969800" + "e8d0870200" + "4885c0" + "7ddb" +
		"488b0dcc262800" + "488b09" + "48890c24" + "48c744240800000000" + "e84ff10500" +
		"450f57ff" + "644c8b3425f8ffffff" + "ebc6" + "909090" + "ebc1" + "9090909090909090"
)

func TestMendNotesleep(t *testing.T) {
	code, _ := hex.DecodeString(notesleepCode)
	want, _ := hex.DecodeString(mendedLoop)
	off, m, err := MendNotesleep(code, notesleepBase)
	if err != nil {
		t.Fatal(err)
	}
	if off != 0x127746-notesleepBase {
		t.Errorf("loop at offset %#x, want %#x", off, 0x127746-notesleepBase)
	}
	if !bytes.Equal(m, want) {
		t.Errorf("mended loop\n got %x\nwant %x", m, want)
	}
	// the same code elsewhere: the displacements follow
	if _, m2, err := MendNotesleep(code, notesleepBase+0x1000); err != nil || !bytes.Equal(m2, want) {
		t.Errorf("at another address: %x, %v; want the same bytes (all jumps are relative to the code)", m2, err)
	}
}

func TestMendNotesleepRefuses(t *testing.T) {
	code, _ := hex.DecodeString(notesleepCode)
	loop := strings.Index(notesleepCode, "b880969800e8")
	tests := []struct {
		name string
		code []byte
		want string
	}{
		{"empty", nil, "not found"},
		{"other code", code[:0xa0], "not found"},
		{"the loop twice", append(append([]byte(nil), code...), code[loop/2:loop/2+sleepLoopBytes]...), "twice"},
		{"a loop that calls another function", edit(code, loop/2+6, 0x11), "semasleep(-1)"},
		{"a loop that loads another hook", edit(code, loop/2+13, 0x11), "_cgo_yield"},
		{"a loop that exits forward", edit(code, loop/2+70, 0x10), "outside"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := MendNotesleep(tc.code, notesleepBase)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one saying %q", err, tc.want)
			}
		})
	}
}

// edit returns a copy of code with the byte at i set to b.
func edit(code []byte, i int, b byte) []byte {
	c := append([]byte(nil), code...)
	c[i] = b
	return c
}

func FuzzMendNotesleep(f *testing.F) {
	code, _ := hex.DecodeString(notesleepCode)
	f.Add(code)
	f.Add(code[0xa0:])
	f.Fuzz(func(t *testing.T, code []byte) {
		off, m, err := MendNotesleep(code, notesleepBase)
		if err == nil && (off < 0 || off+len(m) > len(code) || len(m) != sleepLoopBytes) {
			t.Fatalf("mended %d bytes at %d of %d", len(m), off, len(code))
		}
	})
}
