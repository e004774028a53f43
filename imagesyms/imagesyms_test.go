package imagesyms

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/gozen-dev/gozen/boot"
)

// The tests write the record of a host (linux/amd64) program,
// testdata/standin, which links boot's record and three stand-in
// variables (a host runtime has no runtime.blocMax), then run it: the
// record it reads at run time must hold its variables' addresses.

var (
	buildOnce sync.Once
	buildDir  string
	buildErr  error
)

// standIns are testdata/standin's variables in the record's order.
var standIns = []string{"main.standBloc", "main.standBlocMax", "main.standLock"}

// Test programs: testdata/standin, the same without a symbol table,
// testdata/norecord and testdata/other.
const (
	standin  = "standin"
	stripped = "stripped"
	norecord = "norecord"
	other    = "other"
)

// program returns the path of a fresh copy of the test program name
// built for linux/amd64.
func program(t testing.TB, name string) string {
	t.Helper()
	if runtime.GOOS != "linux" || runtime.GOARCH != "amd64" {
		t.Skip("imagesyms' test program is a linux/amd64 executable, run here")
	}
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "imagesyms-test")
		if buildErr != nil {
			return
		}
		for _, b := range []struct{ name, flags, pkg string }{
			{standin, "", "./testdata/standin"},
			{stripped, "-s", "./testdata/standin"},
			{norecord, "", "./testdata/norecord"},
			{other, "", "./testdata/other"},
		} {
			cmd := exec.Command("go", "build", "-ldflags="+b.flags, "-o", filepath.Join(buildDir, b.name), b.pkg)
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64", "GOFLAGS=")
			if out, err := cmd.CombinedOutput(); err != nil {
				buildErr = errors.New("building " + b.pkg + ": " + err.Error() + "\n" + string(out))
				return
			}
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	data, err := os.ReadFile(filepath.Join(buildDir, name))
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, data, 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestMain(m *testing.M) {
	code := m.Run()
	if buildDir != "" {
		os.RemoveAll(buildDir)
	}
	os.Exit(code)
}

// run runs the program at path and returns its two lines: the record as
// it reads at run time and the stand-ins' addresses.
func run(t *testing.T, path string) (record, vars string) {
	t.Helper()
	out, err := exec.Command(path).CombinedOutput()
	if err != nil {
		t.Fatalf("running %s: %v\n%s", path, err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "record ") || !strings.HasPrefix(lines[1], "vars ") {
		t.Fatalf("unexpected output:\n%s", out)
	}
	return strings.TrimPrefix(lines[0], "record "), strings.TrimPrefix(lines[1], "vars ")
}

func TestWriteRunsBack(t *testing.T) {
	path := program(t, standin)
	if rec, _ := run(t, path); rec != "[0x0 0x0 0x0]" {
		t.Fatalf("record before writing = %s, want empty", rec)
	}
	p, err := write(path, standIns)
	if err != nil {
		t.Fatal(err)
	}
	if p.Missing != "" || p.Already {
		t.Fatalf("first write: %+v", p)
	}
	rec, vars := run(t, path)
	if want := fmt.Sprintf("%#x", p.Addrs); rec != want {
		t.Errorf("record at run time = %s, want what was written, %s", rec, want)
	}
	// the program still runs as before: its variables keep their values
	if addrs, _, _ := strings.Cut(vars, "]"); addrs+"]" != rec || !strings.HasSuffix(vars, " 1 2 0 0") {
		t.Errorf("the program's own view: %s, record %s", vars, rec)
	}
	again, err := write(path, standIns)
	if err != nil || !again.Already || again.Addrs != p.Addrs {
		t.Errorf("second write = %+v, %v; want Already with the same addresses", again, err)
	}
}

func TestPlanCases(t *testing.T) {
	tests := []struct {
		name    string
		prog    string
		names   []string
		wantErr bool
		errIs   error
		missing string // a prefix of Result.Missing
		noRec   bool
	}{
		{name: "stand-ins", prog: standin, names: standIns},
		{name: "absent variable", prog: standin, names: []string{"main.standBloc", "main.nosuch", "main.standLock"}, missing: "main.nosuch is not in the symbol table"},
		{name: "wrong size", prog: standin, names: []string{"main.standBloc", "main.standSmall", "main.standLock"}, missing: "main.standSmall is 4 bytes"},
		{name: "a function", prog: standin, names: []string{"main.standBloc", "main.main", "main.standLock"}, missing: "main.main is a STT_FUNC"},
		{name: "the real runtime's, on a host program", prog: standin, names: boot.RuntimeSymbols[:], missing: "runtime.bloc is not in the symbol table"},
		{name: "more variables than the record holds", prog: standin, names: []string{"a", "b", "c", "d"}, wantErr: true},
		{name: "no symbol table", prog: stripped, names: standIns, wantErr: true, errIs: ErrNotImage},
		{name: "no runtime-symbol record: nothing to write", prog: norecord, names: standIns, noRec: true},
		{name: "not a Gozen program", prog: other, names: standIns, wantErr: true, errIs: ErrNotImage},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := program(t, tc.prog)
			before, _ := os.ReadFile(path)
			r, err := plan(before, tc.names)
			switch {
			case tc.wantErr:
				if err == nil || tc.errIs != nil && !errors.Is(err, tc.errIs) {
					t.Fatalf("plan = %+v, %v; want an error (%v)", r, err, tc.errIs)
				}
				return
			case err != nil:
				t.Fatal(err)
			case r.NoRecord != tc.noRec:
				t.Fatalf("NoRecord = %v, want %v", r.NoRecord, tc.noRec)
			case r.NoRecord:
				if !r.Already || r.Missing != "" {
					t.Errorf("without a record there is nothing to write: %+v", r)
				}
				return
			case !strings.HasPrefix(r.Missing, tc.missing) || (tc.missing == "") != (r.Missing == ""):
				t.Fatalf("Missing = %q, want %q...", r.Missing, tc.missing)
			}
			if r.Missing != "" {
				if r.Addrs != [len(r.Addrs)]uint64{} || !r.Already {
					t.Errorf("with a variable missing the record must stay empty (and so already be right): %+v", r)
				}
				return
			}
			for i, a := range r.Addrs[:len(tc.names)] {
				if a == 0 || a%8 != 0 {
					t.Errorf("address %d = %#x", i, a)
				}
			}
			after, _ := os.ReadFile(path)
			if !bytes.Equal(before, after) {
				t.Error("plan changed the file")
			}
		})
	}
}

func TestNotImage(t *testing.T) {
	tests := []struct {
		name string
		data []byte
	}{
		{"empty", nil},
		{"not ELF", []byte("#!/bin/sh\necho hi\n")},
		{"truncated ELF header", []byte("\x7fELF\x02\x01\x01")},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := plan(tc.data, standIns); !errors.Is(err, ErrNotImage) {
				t.Fatalf("plan = %v, want ErrNotImage", err)
			}
		})
	}
}

func FuzzPlan(f *testing.F) {
	f.Add([]byte("\x7fELF\x02\x01\x01"))
	if runtime.GOOS == "linux" && runtime.GOARCH == "amd64" {
		data, err := os.ReadFile(program(f, standin))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
		f.Add(data[:4096])
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := plan(data, standIns)
		if err == nil && !r.Already {
			// a plan must be applicable to the bytes it came from
			d := append([]byte(nil), data...)
			apply(d, r, len(standIns))
			again, err := plan(d, standIns)
			if err != nil || !again.Already {
				t.Fatalf("applied plan does not read back: %+v, %v", again, err)
			}
		}
	})
}
