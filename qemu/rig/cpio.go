package rig

import (
	"fmt"
	"io"
	"sort"
)

// CPIOFile is one regular file of a newc cpio archive.
type CPIOFile struct {
	Name string
	Mode uint32 // permission bits, e.g. 0755
	Data []byte
}

// WriteCPIO writes files (and the directories their names need) as a newc
// ("070701") archive, the format Linux unpacks as an initramfs.
func WriteCPIO(w io.Writer, files []CPIOFile) error {
	dirs := map[string]bool{}
	for _, f := range files {
		for d := dirOf(f.Name); d != ""; d = dirOf(d) {
			dirs[d] = true
		}
	}
	var names []string
	for d := range dirs {
		names = append(names, d)
	}
	sort.Strings(names)
	ino := uint32(1000)
	for _, d := range names {
		ino++
		if err := writeEntry(w, ino, d, 0o040755, nil); err != nil {
			return err
		}
	}
	for _, f := range files {
		ino++
		if err := writeEntry(w, ino, f.Name, 0o100000|f.Mode, f.Data); err != nil {
			return err
		}
	}
	return writeEntry(w, 0, "TRAILER!!!", 0, nil)
}

func dirOf(name string) string {
	for i := len(name) - 1; i > 0; i-- {
		if name[i] == '/' {
			return name[:i]
		}
	}
	return ""
}

func writeEntry(w io.Writer, ino uint32, name string, mode uint32, data []byte) error {
	nlink := 1
	if mode&0o040000 != 0 {
		nlink = 2
	}
	hdr := fmt.Sprintf("070701%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x%08x",
		ino, mode, 0, 0, nlink, 0, len(data), 0, 0, 0, 0, len(name)+1, 0)
	buf := append([]byte(hdr), name...)
	buf = append(buf, 0)
	buf = pad4(buf)
	buf = append(buf, data...)
	buf = pad4(buf)
	_, err := w.Write(buf)
	return err
}

func pad4(b []byte) []byte {
	for len(b)%4 != 0 {
		b = append(b, 0)
	}
	return b
}
