//go:build linux

package main

import (
	"bytes"
	"io"
	"os"
	"testing"
)

// TestFastReader reads a file in tmpfs through fastReader (raw reads) and
// one elsewhere (the file itself), to the end, in odd-sized reads.
func TestFastReader(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789abcdef"), 10_000)
	for _, tc := range []struct {
		dir string
		mem bool
	}{{"/dev/shm", true}, {t.TempDir(), false}} {
		f, err := os.CreateTemp(tc.dir, "vchancat")
		if err != nil {
			t.Logf("%s: %v", tc.dir, err)
			continue
		}
		defer os.Remove(f.Name())
		defer f.Close()
		if inMemory(f) != tc.mem {
			t.Logf("%s: not the file system this case wants", tc.dir)
			continue
		}
		if _, err := f.Write(data); err != nil {
			t.Fatal(err)
		}
		f.Seek(0, io.SeekStart)
		r := fastReader(f)
		if _, isMem := r.(memFile); isMem != tc.mem {
			t.Errorf("%s: fastReader gave %T", tc.dir, r)
		}
		var got []byte
		buf := make([]byte, 7777)
		for {
			n, err := r.Read(buf)
			got = append(got, buf[:n]...)
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("%s: %v", tc.dir, err)
			}
		}
		if !bytes.Equal(got, data) {
			t.Errorf("%s: read %d bytes, want the %d written", tc.dir, len(got), len(data))
		}
		if n, err := r.Read(nil); n != 0 || err != nil {
			t.Errorf("%s: empty read: %d, %v", tc.dir, n, err)
		}
	}
}

// TestFastWriter writes through fastWriter to /dev/null and to a file in
// tmpfs (raw writes) and to one elsewhere (the file itself).
func TestFastWriter(t *testing.T) {
	null, err := os.OpenFile(os.DevNull, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer null.Close()
	if w := fastWriter(null); w != (memFile{null}) {
		t.Errorf("fastWriter(/dev/null) = %T", w)
	} else if n, err := w.Write(make([]byte, 100000)); n != 100000 || err != nil {
		t.Errorf("write to /dev/null: %d, %v", n, err)
	}
	data := bytes.Repeat([]byte("xyz"), 50000)
	for _, tc := range []struct {
		dir string
		mem bool
	}{{"/dev/shm", true}, {t.TempDir(), false}} {
		f, err := os.CreateTemp(tc.dir, "vchancat")
		if err != nil {
			t.Logf("%s: %v", tc.dir, err)
			continue
		}
		defer os.Remove(f.Name())
		defer f.Close()
		if inMemory(f) != tc.mem {
			continue
		}
		w := fastWriter(f)
		if _, isMem := w.(memFile); isMem != tc.mem {
			t.Errorf("%s: fastWriter gave %T", tc.dir, w)
		}
		if n, err := w.Write(data); n != len(data) || err != nil {
			t.Fatalf("%s: %d, %v", tc.dir, n, err)
		}
		if got, _ := os.ReadFile(f.Name()); !bytes.Equal(got, data) {
			t.Errorf("%s: file holds %d bytes, want the %d written", tc.dir, len(got), len(data))
		}
	}
}
