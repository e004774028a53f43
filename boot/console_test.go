package boot

import (
	"bytes"
	"strings"
	"testing"
)

func TestConsoleInAvail(t *testing.T) {
	for _, c := range []struct {
		prod, cons, want uint32
		bad              bool
	}{
		{0, 0, 0, false},
		{10, 3, 7, false},
		{1024, 0, 1024, false},
		{1025, 0, 0, true},
		{5, 0xfffffffe, 7, false}, // wrapped
		{3, 10, 0, true},          // consumer ahead of producer
		{0xffffffff, 0, 0, true},
	} {
		n, err := consoleInAvail(c.prod, c.cons, 1024)
		if (err != nil) != c.bad || n != c.want {
			t.Errorf("consoleInAvail(%d, %d) = %d, %v", c.prod, c.cons, n, err)
		}
	}
}

func feedAll(d *lineDisc, in ...string) (echo string, lines []string) {
	var e bytes.Buffer
	for _, s := range in {
		d.feed([]byte(s), func(c byte) { e.WriteByte(c) }, func(l []byte) { lines = append(lines, string(l)) })
	}
	return e.String(), lines
}

func TestLineDisc(t *testing.T) {
	var d lineDisc
	echo, lines := feedAll(&d, "ech", "o hi\r\n", "ab\x7fc\bd\n", "\b\b\x7fx\r", "\ny\r\rz\n")
	want := []string{"echo hi\n", "ad\n", "x\n", "y\n", "\n", "z\n"}
	if strings.Join(lines, "|") != strings.Join(want, "|") {
		t.Errorf("lines %q, want %q", lines, want)
	}
	if wantEcho := "echo hi\nab\b \bc\b \bd\nx\ny\n\nz\n"; echo != wantEcho {
		t.Errorf("echo %q, want %q", echo, wantEcho)
	}
	// control bytes are kept, not echoed; long lines are cut
	echo, lines = feedAll(&d, "a\x01b\n", strings.Repeat("x", 5000)+"\n")
	if lines[0] != "a\x01b\n" || echo[:3] != "ab\n" || len(lines[1]) != maxInputLine+1 {
		t.Errorf("control/long: %q %d", lines[0], len(lines[1]))
	}
	if pending := d.feed([]byte("abc"), func(byte) {}, func([]byte) {}); !pending {
		t.Error("echo of a partial line not reported pending")
	}
}
