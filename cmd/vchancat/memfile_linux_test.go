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
