package boot

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/gozen-dev/gozen/internal/bytering"
)

// TestConsoleIn plays xenconsoled on the input side of a console ring,
// honest and hostile. The old input check skipped past corrupt indices:
// it stored in_cons = in_prod, notified the backend, printed a line (up
// to three) and went on reading whatever came next. The dead cases here
// require instead one report, then a ring never touched again.
func TestConsoleIn(t *testing.T) {
	const size = 1024
	tests := []struct {
		name       string
		prod, cons uint32
		want       string // delivered, for a live ring
		dead       string // in the report line, for a corrupt ring
	}{
		{name: "empty", prod: 7, cons: 7},
		{name: "some input", prod: 5, cons: 0, want: "abcde"},
		{name: "wrapped indices", prod: 3, cons: 0xfffffffe, want: "RSabc"},
		{name: "full ring", prod: size + 10, cons: 10, want: strings.Repeat("x", size)},
		{name: "in_cons past in_prod", prod: 3, cons: 10, dead: "in_prod 3, in_cons 10"},
		{name: "in_prod far ahead", prod: size + 1, cons: 0, dead: "in_prod 1025, in_cons 0: 1025 outstanding in a ring of 1024"},
		{name: "in_prod wildly off", prod: 0xffffffff, cons: 0, dead: "in_prod 4294967295, in_cons 0"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			data := make([]byte, size)
			// What the backend wrote: the wanted bytes at their slots,
			// and marks elsewhere that must not be delivered.
			for i := range data {
				data[i] = '.'
			}
			for i := range len(tc.want) {
				data[(tc.cons+uint32(i))%size] = tc.want[i]
			}
			orig := bytes.Clone(data)
			prod, cons := tc.prod, tc.cons
			var kicks int
			var reports []string
			var got []byte
			in := new(consoleIn)
			if err := in.init(data, &cons, &prod, func() { kicks++ }, func(l string) { reports = append(reports, l) }); err != nil {
				t.Fatal(err)
			}
			deliver := func(b []byte) { got = append(got, b...) }

			err := in.drain(deliver)
			if tc.dead == "" {
				if err != nil || string(got) != tc.want || cons != tc.prod || len(reports) != 0 || in.bytes != uint64(len(tc.want)) {
					t.Fatalf("drain: %v; delivered %q, in_cons %d (want %d), %d reports, %d bytes counted", err, got, cons, tc.prod, len(reports), in.bytes)
				}
				if want := min(len(tc.want), 1); kicks != want {
					t.Fatalf("%d notifications, want %d", kicks, want)
				}
				return
			}
			if !errors.Is(err, bytering.ErrCorrupt) || !strings.HasPrefix(err.Error(), "boot: console input: ") {
				t.Fatalf("drain: %v, want a boot error wrapping bytering.ErrCorrupt", err)
			}
			if len(reports) != 1 || !strings.HasPrefix(reports[0], "gozen: console input ring corrupt (") ||
				!strings.Contains(reports[0], tc.dead) || strings.Count(reports[0], "\n") != 1 || !strings.HasSuffix(reports[0], "\n") {
				t.Fatalf("reports %q, want one line naming %q", reports, tc.dead)
			}
			// Dead for good: sane indices do not revive it, and it
			// neither reads, moves in_cons, notifies nor reports again.
			prod, cons = 5, 0
			if err2 := in.drain(deliver); !errors.Is(err2, bytering.ErrCorrupt) {
				t.Fatalf("second drain: %v", err2)
			}
			if len(got) != 0 || kicks != 0 || cons != 0 || prod != 5 || len(reports) != 1 || !bytes.Equal(data, orig) {
				t.Fatalf("dead ring touched: delivered %q, %d notifications, in_cons %d, %d reports", got, kicks, cons, len(reports))
			}
		})
	}
}

// TestConsoleInChunks: input arriving while deliver runs (xenconsoled
// refills the room handed back) is taken in the same drain.
func TestConsoleInChunks(t *testing.T) {
	data := make([]byte, 8)
	var prod, cons uint32
	var kicks int
	in := new(consoleIn)
	if err := in.init(data, &cons, &prod, func() { kicks++ }, func(string) { t.Fatal("reported") }); err != nil {
		t.Fatal(err)
	}
	send := func(s string) {
		for i := range len(s) {
			data[(prod+uint32(i))%8] = s[i]
		}
		prod += uint32(len(s))
	}
	send("12345678")
	var got []string
	err := in.drain(func(b []byte) {
		if len(got) == 0 {
			send("abc") // the room was handed back before deliver
		}
		got = append(got, string(b))
	})
	if err != nil || strings.Join(got, "|") != "12345678|abc" || kicks != 2 || in.bytes != 11 {
		t.Fatalf("drain: %v; chunks %q, %d notifications, %d bytes", err, got, kicks, in.bytes)
	}
}

func TestConsoleInInit(t *testing.T) {
	var a, b uint32
	kick, report := func() {}, func(string) {}
	tests := []struct {
		name   string
		data   []byte
		kick   func()
		report func(string)
		ok     bool
	}{
		{"ok", make([]byte, 1024), kick, report, true},
		{"not a power of two", make([]byte, 1000), kick, report, false},
		{"nil kick", make([]byte, 1024), nil, report, false},
		{"nil report", make([]byte, 1024), kick, nil, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := new(consoleIn).init(tc.data, &a, &b, tc.kick, tc.report)
			if (err == nil) != tc.ok || (err != nil && !strings.HasPrefix(err.Error(), "boot: console input: ")) {
				t.Fatalf("init: %v, want ok=%v", err, tc.ok)
			}
		})
	}
}
