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

	"github.com/gozen-dev/gozen/arch/amd64/smp"
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

// standFields are testdata/standin's struct fields in the order of the
// runtime-offset record.
var standFields = []smp.Field{
	{Type: "main.standM", Path: "p", Size: 8},
	{Type: "main.standM", Path: "standMOS.waitsemacount", Size: 4},
	{Type: "main.standP", Path: "status", Size: 4},
}

// standFuncs are testdata/standin's functions in the order of the
// runtime-offset record.
var standFuncs = []string{"main.standFunc"}

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

// output is what testdata/standin prints, a line each.
type output struct {
	record  string // the runtime-symbol record as it reads at run time
	vars    string // the stand-in variables' addresses and values
	offsets string // the runtime-offset record (smp.OffsetRecord)
	fields  string // the stand-in fields' offsets (unsafe.Offsetof)
}

// run runs the program at path and returns what it printed.
func run(t *testing.T, path string) output {
	t.Helper()
	out, err := exec.Command(path).CombinedOutput()
	if err != nil {
		t.Fatalf("running %s: %v\n%s", path, err, out)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	prefixes := []string{"record ", "vars ", "offsets ", "fields "}
	if len(lines) != len(prefixes) {
		t.Fatalf("unexpected output:\n%s", out)
	}
	for i, p := range prefixes {
		if !strings.HasPrefix(lines[i], p) {
			t.Fatalf("unexpected output:\n%s", out)
		}
		lines[i] = strings.TrimPrefix(lines[i], p)
	}
	return output{lines[0], lines[1], lines[2], lines[3]}
}

func TestWriteRunsBack(t *testing.T) {
	path := program(t, standin)
	if o := run(t, path); o.record != "[0x0 0x0 0x0]" || o.offsets != "[0 0 0] false 0x0 0" {
		t.Fatalf("records before writing = %s, %s; want empty", o.record, o.offsets)
	}
	p, err := write(path, standIns, standFields, standFuncs)
	if err != nil {
		t.Fatal(err)
	}
	if p.Missing != "" || p.OffsetsMissing != "" || p.Already {
		t.Fatalf("first write: %+v", p)
	}
	o := run(t, path)
	rec, vars := o.record, o.vars
	if offs, _, _ := strings.Cut(o.fields, "]"); o.offsets != fmt.Sprintf("%s] true %#x %d", offs, p.Funcs[0][0], p.Funcs[0][1]) || p.Funcs[0][0] == 0 {
		t.Errorf("runtime-offset record at run time = %s, want the fields' offsets %s and the function at %#x", o.offsets, o.fields, p.Funcs[0])
	}
	if want := fmt.Sprintf("%#x", p.Addrs); rec != want {
		t.Errorf("record at run time = %s, want what was written, %s", rec, want)
	}
	// the program still runs as before: its variables keep their values
	if addrs, _, _ := strings.Cut(vars, "]"); addrs+"]" != rec || !strings.HasSuffix(vars, " 1 2 0 0") {
		t.Errorf("the program's own view: %s, record %s", vars, rec)
	}
	again, err := write(path, standIns, standFields, standFuncs)
	if err != nil || !again.Already || again.Addrs != p.Addrs || again.Offsets != p.Offsets {
		t.Errorf("second write = %+v, %v; want Already with the same addresses", again, err)
	}
}

func TestPlanCases(t *testing.T) {
	tests := []struct {
		name        string
		prog        string
		names       []string
		fields      []smp.Field // standFields if nil
		funcs       []string    // standFuncs if nil
		wantErr     bool
		errIs       error
		missing     string // a prefix of Result.Missing
		noRec       bool
		offMissing  string // a prefix of Result.OffsetsMissing
		noOffsetRec bool
	}{
		{name: "stand-ins", prog: standin, names: standIns},
		{name: "absent variable", prog: standin, names: []string{"main.standBloc", "main.nosuch", "main.standLock"}, missing: "main.nosuch is not in the symbol table"},
		{name: "wrong size", prog: standin, names: []string{"main.standBloc", "main.standSmall", "main.standLock"}, missing: "main.standSmall is 4 bytes"},
		{name: "a function", prog: standin, names: []string{"main.standBloc", "main.main", "main.standLock"}, missing: "main.main is a STT_FUNC"},
		{name: "the real runtime's, on a host program", prog: standin, names: boot.RuntimeSymbols[:], missing: "runtime.bloc is not in the symbol table"},
		{name: "more variables than the record holds", prog: standin, names: []string{"a", "b", "c", "d"}, wantErr: true},
		{name: "no symbol table", prog: stripped, names: standIns, wantErr: true, errIs: ErrNotImage},
		{name: "no runtime-symbol record: nothing to write", prog: norecord, names: standIns, noRec: true, noOffsetRec: true},
		{name: "absent type", prog: standin, names: standIns, fields: []smp.Field{{Type: "main.nosuch", Path: "p", Size: 8}}, offMissing: "type main.nosuch is not in the DWARF"},
		{name: "absent member", prog: standin, names: standIns, fields: []smp.Field{{Type: "main.standM", Path: "standMOS.nosuch", Size: 4}}, offMissing: "main.standM.standMOS.nosuch is not in the DWARF"},
		{name: "a member's wrong size", prog: standin, names: standIns, fields: []smp.Field{{Type: "main.standP", Path: "status", Size: 8}}, offMissing: "main.standP.status is 4 bytes, want 8"},
		{name: "a path through a non-struct", prog: standin, names: standIns, fields: []smp.Field{{Type: "main.standM", Path: "p.x", Size: 8}}, offMissing: "main.standM.p.x is not inside a struct"},
		{name: "the real runtime's fields, on a host program", prog: standin, names: standIns, fields: smp.RuntimeFields[:], offMissing: "runtime.m.mOS.waitsemacount is not in the DWARF"},
		{name: "more fields than the record holds", prog: standin, names: standIns, fields: make([]smp.Field, 4), wantErr: true},
		{name: "absent function", prog: standin, names: standIns, funcs: []string{"main.nosuch"}, offMissing: "function main.nosuch is not in the symbol table"},
		{name: "a variable for a function", prog: standin, names: standIns, funcs: []string{"main.standBloc"}, offMissing: "main.standBloc is a STT_OBJECT"},
		{name: "not a Gozen program", prog: other, names: standIns, wantErr: true, errIs: ErrNotImage},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			path := program(t, tc.prog)
			before, _ := os.ReadFile(path)
			fields, funcs := tc.fields, tc.funcs
			if fields == nil {
				fields = standFields
			}
			if funcs == nil {
				funcs = standFuncs
			}
			r, err := plan(before, tc.names, fields, funcs)
			switch {
			case tc.wantErr:
				if err == nil || tc.errIs != nil && !errors.Is(err, tc.errIs) {
					t.Fatalf("plan = %+v, %v; want an error (%v)", r, err, tc.errIs)
				}
				return
			case err != nil:
				t.Fatal(err)
			case r.NoRecord != tc.noRec || r.NoOffsets != tc.noOffsetRec:
				t.Fatalf("NoRecord, NoOffsets = %v, %v; want %v, %v", r.NoRecord, r.NoOffsets, tc.noRec, tc.noOffsetRec)
			case !strings.HasPrefix(r.OffsetsMissing, tc.offMissing) || (tc.offMissing == "") != (r.OffsetsMissing == ""):
				t.Fatalf("OffsetsMissing = %q, want %q...", r.OffsetsMissing, tc.offMissing)
			case r.OffsetsMissing != "" && r.Offsets != [len(r.Offsets)]uint64{}:
				t.Fatalf("with a field missing the record must stay empty: %+v", r)
			case r.NoRecord:
				if !r.Already || r.Missing != "" {
					t.Errorf("without a record there is nothing to write: %+v", r)
				}
				return
			case !strings.HasPrefix(r.Missing, tc.missing) || (tc.missing == "") != (r.Missing == ""):
				t.Fatalf("Missing = %q, want %q...", r.Missing, tc.missing)
			}
			if r.Missing != "" {
				if r.Addrs != [len(r.Addrs)]uint64{} {
					t.Errorf("with a variable missing the record must stay empty: %+v", r)
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
			if _, err := plan(tc.data, standIns, standFields, standFuncs); !errors.Is(err, ErrNotImage) {
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
		r, err := plan(data, standIns, standFields, standFuncs)
		if err == nil && !r.Already {
			// a plan must be applicable to the bytes it came from
			d := append([]byte(nil), data...)
			apply(d, r, len(standIns), len(standFields))
			again, err := plan(d, standIns, standFields, standFuncs)
			if err != nil || !again.Already {
				t.Fatalf("applied plan does not read back: %+v, %v", again, err)
			}
		}
	})
}
