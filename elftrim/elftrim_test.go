package elftrim

import (
	"bytes"
	"debug/elf"
	"encoding/binary"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"

	"github.com/gozen-dev/gozen/boot"
)

// The tests trim host (linux/amd64) programs that link both boot's record
// and Go's FIPS entropy buffer (testdata/plain, testdata/fips): the same
// linker lays them out as it lays out a GOOS=tamago image, and a trimmed
// host program still runs, which shows that crypto/rand outside FIPS mode
// never touches the buffer (the cut-off addresses are not mapped at all).

var (
	buildOnce sync.Once
	buildDir  string
	buildErr  error
)

// program returns the path of a fresh copy of testdata/<name> built for
// linux/amd64.
func program(t testing.TB, name string) string {
	t.Helper()
	if runtime.GOOS != "linux" || runtime.GOARCH != "amd64" {
		t.Skip("elftrim's test programs are linux/amd64 executables, run here")
	}
	buildOnce.Do(func() {
		buildDir, buildErr = os.MkdirTemp("", "elftrim-test")
		if buildErr != nil {
			return
		}
		for _, p := range []string{"plain", "fips"} {
			cmd := exec.Command("go", "build", "-o", filepath.Join(buildDir, p), "./testdata/"+p)
			cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH=amd64", "GOFLAGS=")
			if out, err := cmd.CombinedOutput(); err != nil {
				buildErr = errors.New("building testdata/" + p + ": " + err.Error() + "\n" + string(out))
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

// layout reads back what the trim is about: the last PT_LOAD's end, the
// buffer's address and size, .noptrbss's end and the record.
type layout struct {
	segEnd, scratch, scratchSize, sectEnd, magic, heapStart uint64
}

func readLayout(t *testing.T, path string) layout {
	t.Helper()
	f, err := elf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var l layout
	for _, p := range f.Progs {
		if p.Type == elf.PT_LOAD && p.Vaddr+p.Memsz > l.segEnd {
			l.segEnd = p.Vaddr + p.Memsz
		}
	}
	syms, err := f.Symbols()
	if err != nil {
		t.Fatal(err)
	}
	var rec elf.Symbol
	for _, s := range syms {
		switch s.Name {
		case ScratchSymbol:
			l.scratch, l.scratchSize = s.Value, s.Size
		case boot.TrimSymbol:
			rec = s
		}
	}
	if s := f.Section(".noptrbss"); s != nil {
		l.sectEnd = s.Addr + s.Size
	}
	for _, s := range f.Sections {
		if s.Type != elf.SHT_NOBITS && rec.Value >= s.Addr && rec.Value+16 <= s.Addr+s.Size {
			b := make([]byte, 16)
			if _, err := s.ReadAt(b, int64(rec.Value-s.Addr)); err != nil {
				t.Fatal(err)
			}
			l.magic, l.heapStart = binary.LittleEndian.Uint64(b), binary.LittleEndian.Uint64(b[8:])
		}
	}
	return l
}

func TestTrim(t *testing.T) {
	path := program(t, "plain")
	before := readLayout(t, path)
	if before.scratchSize != 1<<25 || before.scratch+before.scratchSize != before.segEnd || before.sectEnd != before.segEnd {
		t.Fatalf("untrimmed layout %+v: the buffer is not the 32 MiB end of the last segment and .noptrbss", before)
	}
	if before.magic != boot.TrimMagic || before.heapStart != 0 {
		t.Fatalf("untrimmed record %#x %#x, want %#x 0", before.magic, before.heapStart, uint64(boot.TrimMagic))
	}
	orig, _ := os.ReadFile(path)

	plan, err := Plan(path)
	if err != nil {
		t.Fatal(err)
	}
	if now, _ := os.ReadFile(path); !bytes.Equal(now, orig) {
		t.Fatal("Plan changed the file")
	}
	want := Result{Trimmed: true, OldEnd: before.segEnd, NewEnd: before.scratch,
		HeapStart: (before.scratch + 4095) &^ 4095, Saved: 1 << 25}
	if plan.Trimmed != want.Trimmed || plan.OldEnd != want.OldEnd || plan.NewEnd != want.NewEnd ||
		plan.HeapStart != want.HeapStart || plan.Saved != want.Saved || plan.Already {
		t.Fatalf("Plan = %v, want %v", plan, want)
	}

	got, err := Trim(path)
	if err != nil {
		t.Fatal(err)
	}
	if got.String() != plan.String() {
		t.Errorf("Trim = %v, Plan said %v", got, plan)
	}
	after := readLayout(t, path)
	if after.segEnd != before.scratch || after.sectEnd != before.scratch || after.heapStart != want.HeapStart || after.magic != boot.TrimMagic {
		t.Errorf("trimmed layout %+v, want segment and .noptrbss ending at %#x, heap start %#x", after, before.scratch, want.HeapStart)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o755 {
		t.Errorf("trimmed file mode %v (%v), want 0755", fi.Mode(), err)
	}
	if dir, _ := os.ReadDir(filepath.Dir(path)); len(dir) != 1 {
		t.Errorf("Trim left files behind: %v", dir)
	}

	// the trimmed program runs (crypto/rand did not touch the cut-off
	// buffer, which is now unmapped) and reads the record as trimmed
	out, err := exec.Command(path).CombinedOutput()
	if err != nil || !strings.HasSuffix(strings.TrimSpace(string(out)), " true") {
		t.Errorf("the trimmed program: %v, output %q, want a random text and true", err, out)
	}

	trimmed, _ := os.ReadFile(path)
	again, err := Trim(path)
	if err != nil || !again.Already || again.HeapStart != want.HeapStart || again.NewEnd != before.scratch {
		t.Errorf("second Trim = %v, %v; want already trimmed", again, err)
	}
	if now, _ := os.ReadFile(path); !bytes.Equal(now, trimmed) {
		t.Error("a second Trim changed the file")
	}
}

func TestTrimRefusesFIPS(t *testing.T) {
	path := program(t, "fips")
	orig, _ := os.ReadFile(path)
	for name, do := range map[string]func(string) (Result, error){"Plan": Plan, "Trim": Trim} {
		if _, err := do(path); !errors.Is(err, ErrFIPS) || !strings.Contains(err.Error(), "fips140=on") {
			t.Errorf("%s of a fips140=on build: %v, want ErrFIPS naming the setting", name, err)
		}
	}
	if now, _ := os.ReadFile(path); !bytes.Equal(now, orig) {
		t.Error("a refused Trim changed the file")
	}
}

// mutate returns a copy of the plain program's bytes with one change.
type mutation func(t *testing.T, f *elf.File, data []byte) []byte

func symbolOffset(t *testing.T, f *elf.File, name string) (value uint64, nameOff int) {
	t.Helper()
	syms, err := f.Symbols()
	if err != nil {
		t.Fatal(err)
	}
	strtab := f.Section(".strtab")
	for _, s := range syms {
		if s.Name == name {
			b, _ := strtab.Data()
			i := bytes.Index(b, []byte(name+"\x00"))
			if i < 0 {
				t.Fatalf("%s not in .strtab", name)
			}
			return s.Value, int(strtab.Offset) + i
		}
	}
	t.Fatalf("no symbol %s", name)
	return 0, 0
}

func recordOffset(t *testing.T, f *elf.File) int {
	v, _ := symbolOffset(t, f, boot.TrimSymbol)
	off, err := fileOffset(f, 1<<62, v, 16)
	if err != nil {
		t.Fatal(err)
	}
	return int(off)
}

func lastLoad(f *elf.File) int {
	last := -1
	for i, p := range f.Progs {
		if p.Type == elf.PT_LOAD && (last < 0 || p.Vaddr > f.Progs[last].Vaddr) {
			last = i
		}
	}
	return last
}

func TestPlanHostile(t *testing.T) {
	path := program(t, "plain")
	orig, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	le := binary.LittleEndian
	tests := []struct {
		name    string
		mutate  mutation
		want    error // nil: no error
		trimmed bool
	}{
		{"not an ELF", func(t *testing.T, f *elf.File, d []byte) []byte { return []byte("#!/bin/sh\necho hi\n") }, ErrNotImage, false},
		{"truncated", func(t *testing.T, f *elf.File, d []byte) []byte { return d[:len(d)/2] }, ErrNotImage, false},
		{"32-bit class", func(t *testing.T, f *elf.File, d []byte) []byte { d[4] = 1; return d }, ErrNotImage, false},
		{"shared object", func(t *testing.T, f *elf.File, d []byte) []byte { le.PutUint16(d[16:], 3); return d }, ErrNotImage, false},
		{"bad record magic", func(t *testing.T, f *elf.File, d []byte) []byte {
			d[recordOffset(t, f)] ^= 0xff
			return d
		}, ErrNotImage, false},
		{"no record", func(t *testing.T, f *elf.File, d []byte) []byte {
			_, n := symbolOffset(t, f, boot.TrimSymbol)
			d[n+len(boot.TrimSymbol)-1] = 'X'
			return d
		}, ErrNotImage, false},
		{"no buffer", func(t *testing.T, f *elf.File, d []byte) []byte {
			_, n := symbolOffset(t, f, ScratchSymbol)
			d[n+len(ScratchSymbol)-1] = 'X'
			return d
		}, nil, false},
		{"record set, no buffer", func(t *testing.T, f *elf.File, d []byte) []byte {
			_, n := symbolOffset(t, f, ScratchSymbol)
			d[n+len(ScratchSymbol)-1] = 'X'
			le.PutUint64(d[recordOffset(t, f)+8:], 0x5e6000)
			return d
		}, ErrLayout, false},
		{"record set, segment whole", func(t *testing.T, f *elf.File, d []byte) []byte {
			le.PutUint64(d[recordOffset(t, f)+8:], 0x5e6000)
			return d
		}, ErrLayout, true},
		{"segment longer than the buffer", func(t *testing.T, f *elf.File, d []byte) []byte {
			off := int(phdrOffset(d)) + lastLoad(f)*56 + 40
			le.PutUint64(d[off:], le.Uint64(d[off:])+4096)
			return d
		}, ErrLayout, true},
		{"buffer in file data", func(t *testing.T, f *elf.File, d []byte) []byte {
			off := int(phdrOffset(d)) + lastLoad(f)*56 + 32 // p_filesz
			le.PutUint64(d[off:], le.Uint64(d[off+8:]))
			return d
		}, ErrLayout, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := append([]byte(nil), orig...)
			f, err := elf.NewFile(bytes.NewReader(d))
			if err != nil {
				t.Fatal(err)
			}
			d = tt.mutate(t, f, d)
			p := filepath.Join(t.TempDir(), "image")
			if err := os.WriteFile(p, d, 0o644); err != nil {
				t.Fatal(err)
			}
			r, err := Trim(p)
			switch {
			case tt.want == nil && err != nil:
				t.Fatalf("Trim: %v, want no error", err)
			case tt.want != nil && !errors.Is(err, tt.want):
				t.Fatalf("Trim: %v, want %v", err, tt.want)
			case r.Trimmed != tt.trimmed:
				t.Errorf("Trim = %+v, want Trimmed %v", r, tt.trimmed)
			}
			if now, _ := os.ReadFile(p); !bytes.Equal(now, d) {
				t.Error("Trim changed a file it did not trim")
			}
		})
	}
}

// FuzzPlan feeds plan arbitrary bytes (seeded with the test program, whole
// and cut short): it must return, never panic or run off the data.
func FuzzPlan(f *testing.F) {
	f.Add([]byte("\x7fELF\x02\x01\x01"))
	if runtime.GOOS == "linux" && runtime.GOARCH == "amd64" {
		data, err := os.ReadFile(program(f, "plain"))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
		f.Add(data[:4096])
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		r, err := plan(data)
		if err == nil && r.Trimmed && !r.Already {
			// a plan must be applicable to the bytes it came from
			d := append([]byte(nil), data...)
			apply(d, r)
		}
	})
}
