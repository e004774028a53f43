package report

import (
	"errors"
	"io"
	"os"
	"strings"
	"testing"
)

// capture returns what f prints on standard output.
func capture(t *testing.T, f func()) string {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	old := os.Stdout
	os.Stdout = w
	f()
	os.Stdout = old
	w.Close()
	b, _ := io.ReadAll(r)
	return string(b)
}

func TestReport(t *testing.T) {
	tests := []struct {
		name string
		run  func(r *Report)
		want string
		fail int
	}{
		{"pass", func(r *Report) { r.Check("boot", nil, "1.2 s") }, "T PASS boot 1.2 s\nT DONE pass=1 fail=0\n", 0},
		{"fail", func(r *Report) { r.Check("ring", errors.New("bad index"), "") }, "T FAIL ring: bad index\nT DONE pass=0 fail=1\n", 1},
		{"bench", func(r *Report) { r.Bench("copy", 12.5, "MB/s") }, "T BENCH copy 12.500 MB/s\nT DONE pass=0 fail=0\n", 0},
		{"mixed", func(r *Report) {
			r.Check("a", nil, "x")
			r.Check("b", errors.New("no"), "")
			r.Check("c", nil, "y")
		}, "T PASS a x\nT FAIL b: no\nT PASS c y\nT DONE pass=2 fail=1\n", 1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := New("T")
			var fail int
			got := capture(t, func() {
				tc.run(r)
				fail = r.Done()
			})
			if got != tc.want || fail != tc.fail {
				t.Fatalf("printed %q, failed %d; want %q, %d", got, fail, strings.TrimSpace(tc.want), tc.fail)
			}
		})
	}
}
