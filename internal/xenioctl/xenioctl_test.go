//go:build linux

package xenioctl

import (
	"errors"
	"os"
	"testing"

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
