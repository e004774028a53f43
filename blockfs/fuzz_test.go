package blockfs

import (
	"bytes"
	"fmt"
	"io"
	"io/fs"
	"testing"
)

// fuzzPrefix is how much of the 1 MiB image a fuzz input replaces: the
// boot sector, FSInfo, both FATs, the root directory and the first
// clusters.
const fuzzPrefix = 40 << 10

// FuzzOpen opens a 1 MiB image whose first 40 KiB are the input (the
// rest zeros), and, if that works, reads, lists, appends and creates:
// nothing may panic or hang. With the input as the first partition of
// an MBR, the partition-table path is fuzzed too (first input byte odd).
func FuzzOpen(f *testing.F) {
	seed := smallImage(f)[:fuzzPrefix]
	f.Add(bytes.Clone(seed))
	for _, o := range []int{0x0d, 0x10, 0x24, 0x2c, 16<<10 + 12, 32<<10 + 26, 32<<10 + 28} {
		b := bytes.Clone(seed)
		b[o] ^= 0x41
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) > fuzzPrefix {
			in = in[:fuzzPrefix]
		}
		img := make([]byte, 1<<20)
		copy(img, in)
		fsys, err := Open(&memDevice{b: img, ss: 512}, Options{})
		if err != nil {
			return
		}
		defer fsys.Close()
		var names []string
		fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
			if err == nil && !d.IsDir() {
				names = append(names, p)
			}
			return nil
		})
		for _, n := range names {
			if file, err := fsys.OpenFile(n, 0); err == nil {
				io.Copy(io.Discard, file)
				file.Close()
			}
		}
		for i := range 3 {
			fsys.AppendFile("log.txt", []byte(fmt.Sprintf("line %d\n", i)))
		}
		fsys.MkdirAll("d/e")
		fsys.WriteFile("d/e/f.txt", bytes.Repeat([]byte("z"), 3000))
		if len(names) > 0 {
			fsys.Remove(names[0])
		}
	})
}
