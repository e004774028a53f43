//go:build linux

package xenioctl

import (
	"errors"
	"fmt"
	"io"
	"os"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestIOC(t *testing.T) {
	for _, c := range []struct {
		dir, typ, nr, size uintptr
		want               uintptr
	}{
		{None, 'E', 5, 0, 0x00004505},
		{None, 'G', 0, 24, 0x00184700},
		{2, 'T', 1, 4, 0x80045401}, // _IOR('T', 1, int)
		{1, 'T', 2, 8, 0x40085402}, // _IOW('T', 2, long)
	} {
		if got := IOC(c.dir, c.typ, c.nr, c.size); got != c.want {
			t.Errorf("IOC(%d, %q, %d, %d) = %#x, want %#x", c.dir, rune(c.typ), c.nr, c.size, got, c.want)
		}
	}
}

// TestIoctlErrno: an ioctl a file does not know fails with its errno.
func TestIoctlErrno(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "x")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := Ioctl(f, IOC(None, 'E', 5, 0), nil); !errors.Is(err, unix.ENOTTY) {
		t.Errorf("ioctl on a regular file: %v, want ENOTTY", err)
	}
	f.Close()
	if _, err := Ioctl(f, IOC(None, 'E', 5, 0), nil); err == nil {
		t.Errorf("ioctl on a closed file succeeded")
	}
}

// TestRaw reads and writes a pipe with ReadRaw and WriteRaw (ReadRaw
// waiting in the poller for data), checks IoctlRaw's errno, and that all
// three fail with os.ErrClosed once the file is closed, ReadRaw also
// while it waits.
func TestRaw(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	got := make(chan string, 1)
	go func() {
		b := make([]byte, 16)
		n, err := ReadRaw(r, b)
		got <- fmt.Sprint(string(b[:n]), " ", err)
	}()
	time.Sleep(10 * time.Millisecond) // let ReadRaw wait (not needed to pass)
	if n, err := WriteRaw(w, []byte("hello")); n != 5 || err != nil {
		t.Fatalf("WriteRaw: %d, %v", n, err)
	}
	if s := <-got; s != "hello <nil>" {
		t.Errorf("ReadRaw: %q", s)
	}
	if _, err := IoctlRaw(r, IOC(None, 'E', 5, 0), nil); !errors.Is(err, unix.ENOTTY) {
		t.Errorf("IoctlRaw on a pipe: %v, want ENOTTY", err)
	}
	done := make(chan error, 1)
	go func() { _, err := ReadRaw(r, make([]byte, 4)); done <- err }()
	time.Sleep(10 * time.Millisecond)
	r.Close()
	if err := <-done; !errors.Is(err, os.ErrClosed) {
		t.Errorf("ReadRaw while closed: %v, want os.ErrClosed", err)
	}
	if _, err := ReadRaw(r, make([]byte, 4)); !errors.Is(err, os.ErrClosed) {
		t.Errorf("ReadRaw after close: %v", err)
	}
	if _, err := IoctlRaw(r, IOC(None, 'E', 5, 0), nil); !errors.Is(err, os.ErrClosed) {
		t.Errorf("IoctlRaw after close: %v", err)
	}
	r2, w2, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	w2.Close()
	if n, err := ReadRaw(r2, make([]byte, 4)); n != 0 || err != io.EOF {
		t.Errorf("ReadRaw at end of file: %d, %v; want io.EOF", n, err)
	}
	r2.Close()
	w.Close()
	if _, err := WriteRaw(w, []byte("x")); !errors.Is(err, os.ErrClosed) {
		t.Errorf("WriteRaw after close: %v", err)
	}
}
