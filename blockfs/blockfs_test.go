package blockfs

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"
	"testing"
	"testing/fstest"
)

// TestStack mounts FAT32 volumes laid out in every supported way through
// blkback and blkfront, reads a config file, appends to a log many
// times, creates directories and files, closes, and checks the image
// with go-diskfs directly.
func TestStack(t *testing.T) {
	for _, tc := range []struct {
		layout string
		part   int
		want   int // the partition index found
	}{
		{layoutWhole, 0, 0},
		{layoutWhole, WholeDisk, 0},
		{layoutMBR, 0, 1},
		{layoutMBR, 1, 1},
		{layoutGPT, 0, 1},
		{layoutGPT, 1, 1},
	} {
		t.Run(fmt.Sprintf("%s/part%d", tc.layout, tc.part), func(t *testing.T) {
			img := newImage(t, tc.layout, 40<<20, map[string]string{"config.txt": "name=gozen\n", "etc/motd": "hello\n"})
			r := serveImage(t, img, false)
			fsys, err := Open(r.disk, Options{Partition: tc.part})
			if err != nil {
				t.Fatal(err)
			}
			if p := fsys.Partition(); p.Index != tc.want || p.Offset != img.start {
				t.Errorf("partition %+v, want index %d at %d", p, tc.want, img.start)
			}
			cfg, err := fsys.ReadFile("config.txt")
			if err != nil || string(cfg) != "name=gozen\n" {
				t.Fatalf("config.txt: %q, %v", cfg, err)
			}
			if _, err := fsys.ReadFile("CONFIG.TXT"); err != nil {
				t.Errorf("case-insensitive name: %v", err)
			}
			var log bytes.Buffer
			for i := range 300 {
				line := fmt.Sprintf("boot %d: %s\n", i, strings.Repeat("x", i%37))
				log.WriteString(line)
				if err := fsys.AppendFile("log.txt", []byte(line)); err != nil {
					t.Fatalf("append %d: %v", i, err)
				}
			}
			if err := fsys.Mkdir("data"); err != nil {
				t.Fatal(err)
			}
			if err := fsys.MkdirAll("data/a/b"); err != nil {
				t.Fatal(err)
			}
			big := bytes.Repeat([]byte("0123456789abcdef"), 20000) // 320 KB, many clusters
			if err := fsys.WriteFile("data/a/b/a-long-file-name.bin", big); err != nil {
				t.Fatal(err)
			}
			if err := fsys.WriteFile("data/gone.txt", []byte("bye")); err != nil {
				t.Fatal(err)
			}
			if err := fsys.Remove("data/gone.txt"); err != nil {
				t.Fatal(err)
			}
			if err := fstest.TestFS(fsys, "config.txt", "log.txt", "etc/motd", "data/a/b/a-long-file-name.bin"); err != nil {
				t.Error(err)
			}
			if err := fsys.Close(); err != nil {
				t.Fatal(err)
			}
			if _, err := fsys.ReadFile("config.txt"); !errors.Is(err, ErrClosed) {
				t.Errorf("read after close: %v, want ErrClosed", err)
			}
			r.close()

			lib := img.library(t)
			for name, want := range map[string][]byte{
				"config.txt": []byte("name=gozen\n"), "log.txt": log.Bytes(),
				"data/a/b/a-long-file-name.bin": big, "etc/motd": []byte("hello\n"),
			} {
				got, err := lib.ReadFile(name)
				if err != nil || !bytes.Equal(got, want) {
					t.Errorf("%s read back with go-diskfs: %d bytes, %v; want %d bytes", name, len(got), err, len(want))
				}
			}
			if _, err := lib.ReadFile("data/gone.txt"); err == nil {
				t.Error("removed file still there")
			}
			ents, err := lib.ReadDir("data/a")
			if err != nil || len(ents) != 1 || ents[0].Name() != "b" || !ents[0].IsDir() {
				t.Errorf("data/a read back: %v, %v", ents, err)
			}
		})
	}
}

// TestErrors checks the errors of the API on a writable volume.
func TestErrors(t *testing.T) {
	img := newImage(t, layoutWhole, 40<<20, map[string]string{"config.txt": "x", "etc/motd": "m"})
	r := serveImage(t, img, false)
	defer r.close()
	fsys, err := Open(r.disk, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer fsys.Close()
	for _, tc := range []struct {
		name string
		err  error
		want error
	}{
		{"missing file", func() error { _, err := fsys.ReadFile("nope.txt"); return err }(), fs.ErrNotExist},
		{"missing dir", func() error { _, err := fsys.ReadFile("no/such"); return err }(), fs.ErrNotExist},
		{"file as dir", func() error { _, err := fsys.ReadFile("config.txt/x"); return err }(), fs.ErrNotExist},
		{"invalid name", func() error { _, err := fsys.ReadFile("/config.txt"); return err }(), fs.ErrInvalid},
		{"dotdot", func() error { _, err := fsys.Stat("etc/../config.txt"); return err }(), fs.ErrInvalid},
		{"long name", fsys.WriteFile(strings.Repeat("n", 256), nil), fs.ErrInvalid},
		{"mkdir exists", fsys.Mkdir("etc"), fs.ErrExist},
		{"mkdir no parent", fsys.Mkdir("x/y"), fs.ErrNotExist},
		{"create in missing dir", fsys.WriteFile("x/y.txt", nil), fs.ErrNotExist},
		{"exclusive", func() error { _, err := fsys.OpenFile("config.txt", os.O_RDWR|os.O_CREATE|os.O_EXCL); return err }(), fs.ErrExist},
		{"remove missing", fsys.Remove("nope"), fs.ErrNotExist},
		{"write read-only handle", func() error {
			f, err := fsys.OpenFile("config.txt", os.O_RDONLY)
			if err != nil {
				return err
			}
			_, err = f.Write([]byte("y"))
			return err
		}(), fs.ErrPermission},
		{"beyond 4 GiB", func() error {
			f, err := fsys.OpenFile("config.txt", os.O_RDWR)
			if err != nil {
				return err
			}
			if _, err := f.Seek(MaxFileSize, io.SeekStart); err != nil {
				return err
			}
			_, err = f.Write([]byte("y"))
			return err
		}(), ErrTooLarge},
		{"partition on a whole-disk volume", func() error { _, err := Open(r.disk, Options{Partition: 2}); return err }(), fs.ErrNotExist},
	} {
		if !errors.Is(tc.err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, tc.err, tc.want)
		}
	}
	if err := fsys.Remove("etc"); err == nil {
		t.Error("removed a non-empty directory")
	}
}

// TestReadOnly checks that a read-only disk gives a read-only file
// system that refuses every write before touching the disk.
func TestReadOnly(t *testing.T) {
	img := newImage(t, layoutMBR, 40<<20, map[string]string{"config.txt": "ro"})
	before, err := os.ReadFile(img.path)
	if err != nil {
		t.Fatal(err)
	}
	r := serveImage(t, img, true)
	fsys, err := Open(r.disk, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !fsys.ReadOnly() {
		t.Error("not read-only")
	}
	if b, err := fsys.ReadFile("config.txt"); err != nil || string(b) != "ro" {
		t.Errorf("read: %q, %v", b, err)
	}
	for what, err := range map[string]error{
		"write":  fsys.WriteFile("new.txt", []byte("x")),
		"append": fsys.AppendFile("config.txt", []byte("x")),
		"mkdir":  fsys.Mkdir("d"),
		"remove": fsys.Remove("config.txt"),
		"open rw": func() error {
			_, err := fsys.OpenFile("config.txt", os.O_RDWR)
			return err
		}(),
	} {
		if !errors.Is(err, ErrReadOnly) {
			t.Errorf("%s: %v, want ErrReadOnly", what, err)
		}
	}
	if err := fsys.Close(); err != nil {
		t.Error(err)
	}
	r.close()
	after, err := os.ReadFile(img.path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before, after) {
		t.Error("the read-only image changed")
	}
}
