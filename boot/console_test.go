package boot

import (
	"bytes"
	"strings"
	"testing"
)

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
