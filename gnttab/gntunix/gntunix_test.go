//go:build !tamago

package gntunix_test

import (
	"encoding/binary"
	"errors"
	"os"
	"runtime/debug"
	"testing"

	"github.com/gozen-dev/gozen/domid"
	"github.com/gozen-dev/gozen/gnttab"
	"github.com/gozen-dev/gozen/gnttab/gnttabtest"
	"github.com/gozen-dev/gozen/gnttab/gntunix"
)

// open opens domain id in dir, shutting it down when the test ends.
func open(t testing.TB, dir string, id domid.ID) gnttabtest.Domain {
	d, err := gntunix.Open(dir, id, 64)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Shutdown() })
	return gnttabtest.Domain{Svc: d, ID: id, Leftovers: func() string { return d.Stats().String() }}
}

func tempDir(t testing.TB) string {
	dir, err := os.MkdirTemp("", "gz")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

// TestConformance runs the suite with both domains in this process, over
// real shared-memory files.
func TestConformance(t *testing.T) {
	gnttabtest.Run(t, func(t *testing.T) (a, b gnttabtest.Domain) {
		dir := tempDir(t)
		return open(t, dir, 1), open(t, dir, 2)
	})
}

// TestConformanceProcesses runs the suite with domain B in a child process.
func TestConformanceProcesses(t *testing.T) {
	gnttabtest.RunProcesses(t, func(t *testing.T, dir string, id domid.ID) gnttabtest.Domain {
		return open(t, dir, id)
	})
}

// TestReadOnlyMappingFaults checks that a read-only grant is mapped without
// write permission.
func TestReadOnlyMappingFaults(t *testing.T) {
	dir := tempDir(t)
	a, b := open(t, dir, 1), open(t, dir, 2)
	sh, err := a.Svc.Share(2, 1, false)
	if err != nil {
		t.Fatal(err)
	}
	m, err := b.Svc.Map(1, sh.Refs, false)
	if err != nil {
		t.Fatal(err)
	}
	faulted := func() (faulted bool) {
		defer debug.SetPanicOnFault(debug.SetPanicOnFault(true))
		defer func() { faulted = recover() != nil }()
		m.Buf[10] = 1
		return false
	}()
	if !faulted {
		t.Errorf("store into a read-only mapping did not fault")
	}
	if sh.Buf[10] != 0 {
		t.Errorf("store into a read-only mapping reached the page")
	}
	b.Svc.Unmap(m)
	a.Svc.Unshare(sh)
}

// TestMapAnyOrder maps refs of two shares in reverse order: the unix
// implementation assembles any refs into one buffer.
func TestMapAnyOrder(t *testing.T) {
	dir := tempDir(t)
	a, b := open(t, dir, 1), open(t, dir, 2)
	s1, _ := a.Svc.Share(2, 2, true)
	s2, _ := a.Svc.Share(2, 1, true)
	s1.Buf[0], s1.Buf[gnttab.PageSize], s2.Buf[0] = 1, 2, 3
	refs := []gnttab.Ref{s2.Refs[0], s1.Refs[1], s1.Refs[0], s1.Refs[0]}
	m, err := b.Svc.Map(1, refs, true)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []byte{3, 2, 1, 1} {
		if got := m.Buf[i*gnttab.PageSize]; got != want {
			t.Errorf("page %d: %d, want %d", i, got, want)
		}
	}
	m.Buf[2*gnttab.PageSize+1] = 9 // s1 page 0, seen through its alias too
	if s1.Buf[1] != 9 || m.Buf[3*gnttab.PageSize+1] != 9 {
		t.Errorf("aliases of one page are not coherent")
	}
	if err := b.Svc.Unmap(m); err != nil {
		t.Fatal(err)
	}
	if err := a.Svc.Unshare(s1); err != nil {
		t.Fatal(err)
	}
	if err := a.Svc.Unshare(s2); err != nil {
		t.Fatal(err)
	}
}

func TestOpen(t *testing.T) {
	dir := tempDir(t)
	d, err := gntunix.Open(dir, 1, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := gntunix.Open(dir, 1, 0); err == nil {
		t.Errorf("second Open of a live domain succeeded")
	}
	d.Shutdown()
	// A stale file (no lock holder) is replaced.
	if err := os.WriteFile(gntunix.GrantPath(dir, 3), []byte("garbage"), 0o600); err != nil {
		t.Fatal(err)
	}
	d3, err := gntunix.Open(dir, 3, 1)
	if err != nil {
		t.Fatalf("Open over a stale file: %v", err)
	}
	d3.Shutdown()
	bad := []struct {
		name  string
		id    domid.ID
		pages int
	}{
		{"DomIDSelf", domid.Self, 1},
		{"negative pages", 4, -1},
		{"too many pages", 4, gntunix.MaxPages + 1},
	}
	for _, b := range bad {
		if d, err := gntunix.Open(dir, b.id, b.pages); err == nil {
			t.Errorf("Open(%s) succeeded", b.name)
			d.Shutdown()
		}
	}
}

// TestBadPeerFiles checks that malformed grant files of a peer are
// rejected, not trusted.
func TestBadPeerFiles(t *testing.T) {
	dir := tempDir(t)
	d := open(t, dir, 1)
	good := func() []byte {
		b := make([]byte, 2*gnttab.PageSize)
		le := binary.LittleEndian
		le.PutUint32(b[0:], 0x746e4747)
		le.PutUint32(b[4:], 1)
		le.PutUint32(b[8:], 5)
		le.PutUint32(b[12:], 1)
		le.PutUint32(b[16:], 1)
		// entry 0: granted writable to domain 1
		le.PutUint64(b[64:], 1|1<<16|1<<17)
		return b
	}
	tests := []struct {
		name   string
		mangle func(b []byte) []byte
		ok     bool
	}{
		{"good", func(b []byte) []byte { return b }, true},
		{"bad magic", func(b []byte) []byte { b[0]++; return b }, false},
		{"bad version", func(b []byte) []byte { b[4] = 9; return b }, false},
		{"wrong owner", func(b []byte) []byte { b[8] = 6; return b }, false},
		{"zero pages", func(b []byte) []byte { b[12] = 0; return b }, false},
		{"huge table", func(b []byte) []byte { binary.LittleEndian.PutUint32(b[12:], 1<<30); return b }, false},
		{"lying header size", func(b []byte) []byte { b[16] = 0; return b }, false},
		{"truncated", func(b []byte) []byte { return b[:gnttab.PageSize+100] }, false},
		{"tiny", func(b []byte) []byte { return b[:10] }, false},
		{"empty", func(b []byte) []byte { return nil }, false},
	}
	for _, tc := range tests {
		path := gntunix.GrantPath(dir, 5)
		os.Remove(path)
		if err := os.WriteFile(path, tc.mangle(good()), 0o600); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 8)
		err := d.Svc.CopyFrom(5, 0, 0, buf)
		if tc.ok && err != nil {
			t.Errorf("%s: CopyFrom: %v", tc.name, err)
		}
		if !tc.ok && !errors.Is(err, gnttab.ErrBadRef) {
			t.Errorf("%s: CopyFrom: err = %v, want ErrBadRef", tc.name, err)
		}
		m, err := d.Svc.Map(5, []gnttab.Ref{0}, true)
		if tc.ok != (err == nil) {
			t.Errorf("%s: Map: err = %v", tc.name, err)
		}
		if err == nil {
			d.Svc.Unmap(m)
		}
	}
}

// FuzzPeerHeader feeds Map and the copies with a peer's grant file whose
// header is fuzzed; pad is how many bytes of file follow it.
func FuzzPeerHeader(f *testing.F) {
	dir, err := os.MkdirTemp("", "gz")
	if err != nil {
		f.Fatal(err)
	}
	defer os.RemoveAll(dir)
	d, err := gntunix.Open(dir, 1, 1)
	if err != nil {
		f.Fatal(err)
	}
	defer d.Shutdown()
	seed := make([]byte, 72)
	binary.LittleEndian.PutUint32(seed[0:], 0x746e4747)
	binary.LittleEndian.PutUint32(seed[4:], 1)
	binary.LittleEndian.PutUint32(seed[8:], 5)
	binary.LittleEndian.PutUint32(seed[12:], 1)
	binary.LittleEndian.PutUint32(seed[16:], 1)
	binary.LittleEndian.PutUint64(seed[64:], 1|1<<16|1<<17)
	f.Add(seed, uint16(2*gnttab.PageSize-72), uint32(0), 0, 8)
	f.Add(seed[:20], uint16(100), uint32(3), 4000, 200)
	f.Fuzz(func(t *testing.T, hdr []byte, pad uint16, ref uint32, off, n int) {
		if len(hdr) > 4*gnttab.PageSize {
			return
		}
		path := gntunix.GrantPath(dir, 5)
		os.Remove(path)
		if err := os.WriteFile(path, append(hdr, make([]byte, pad)...), 0o600); err != nil {
			t.Fatal(err)
		}
		if n < 0 || n > 2*gnttab.PageSize {
			n = 8
		}
		buf := make([]byte, n)
		d.CopyFrom(5, gnttab.Ref(ref), off, buf)
		d.CopyTo(5, gnttab.Ref(ref), off, buf)
		if m, err := d.Map(5, []gnttab.Ref{gnttab.Ref(ref)}, ref%2 == 0); err == nil {
			_ = m.Buf[0]
			if err := d.Unmap(m); err != nil {
				t.Fatal(err)
			}
		}
		if s := d.Stats().String(); s != "" {
			t.Fatalf("leftovers: %s", s)
		}
	})
}

func BenchmarkShareUnshare(b *testing.B) {
	dir := tempDir(b)
	gnttabtest.BenchmarkShareUnshare(b, open(b, dir, 1).Svc, 2)
}

func BenchmarkMapUnmap(b *testing.B) {
	dir := tempDir(b)
	gnttabtest.BenchmarkMapUnmap(b, open(b, dir, 1), open(b, dir, 2))
}
