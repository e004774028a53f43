package blockfs

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// fileDevice is a Device on a host file, as qemu/dom0tool uses.
type fileDevice struct {
	*os.File
	size int64
}

func (d fileDevice) Size() int64                 { return d.size }
func (d fileDevice) SectorSize() int             { return 512 }
func (d fileDevice) Flush(context.Context) error { return d.Sync() }

// dosfstool finds a dosfstools binary: in the rig cache (where the
// tier-B rig unpacks Debian's dosfstools), else in PATH; "" if none.
func dosfstool(names ...string) string {
	var dirs []string
	if c := os.Getenv("GOZEN_RIG_CACHE"); c != "" {
		dirs = append(dirs, c)
	}
	if c := os.Getenv("XDG_CACHE_HOME"); c != "" {
		dirs = append(dirs, filepath.Join(c, "gozen", "rig"))
	}
	if h, err := os.UserHomeDir(); err == nil {
		dirs = append(dirs, filepath.Join(h, ".cache", "gozen", "rig"))
	}
	for _, d := range dirs {
		for _, n := range names {
			p := filepath.Join(d, "x", "sbin", n)
			if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() {
				return p
			}
		}
	}
	for _, n := range names {
		if p, err := exec.LookPath(n); err == nil {
			return p
		}
	}
	return ""
}

// fsckOK are the lines of a clean fsck.fat -n run.
var fsckOK = regexp.MustCompile(`^(fsck\.fat \d.*|.*: \d+ files, \d+/\d+ clusters)$`)

// runFsck runs fsck.fat -n on the image and fails on a non-zero exit or
// any line besides the version and the summary; it skips if there is
// no fsck.fat.
func runFsck(t *testing.T, path string) {
	t.Helper()
	fsck := dosfstool("fsck.fat", "fsck.vfat")
	if fsck == "" {
		t.Skip("no fsck.fat in the rig cache (~/.cache/gozen/rig/x/sbin) or PATH: install dosfstools to check images with it")
	}
	cmd := exec.Command(fsck, "-n", path)
	cmd.Env = append(os.Environ(), "LANG=C", "LC_ALL=C")
	out, err := cmd.CombinedOutput()
	var bad []string
	for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if !fsckOK.MatchString(l) {
			bad = append(bad, l)
		}
	}
	if err != nil || len(bad) > 0 {
		t.Errorf("%s -n: %v; complaints %q; output:\n%s", fsck, err, bad, out)
	}
}

// checkVolume is a small fsck.fat for when there is none: every chain
// belongs to one entry and has the length its size says (none for an
// empty file), "." and ".." name the right clusters (0 for the root),
// no allocated cluster is lost, and both FSInfo copies hold the free
// count.
func checkVolume(t *testing.T, img []byte) {
	t.Helper()
	l, err := checkBootSector(img, int64(len(img)), DefaultMaxFATBytes)
	if err != nil {
		t.Fatal(err)
	}
	raw := img[l.fatOff : l.fatOff+l.fatBytes]
	if !bytes.Equal(raw, img[l.fatOff+l.fatBytes:l.dataOff]) {
		t.Error("the two FATs differ")
	}
	c, err := checkFAT(l, raw)
	if err != nil {
		t.Fatal(err)
	}
	owned := map[uint32]string{}
	own := func(first uint32, what string) uint32 {
		n := uint32(0)
		for cl := first; ; cl = c.next[cl] & fatMask {
			if o, ok := owned[cl]; ok {
				t.Errorf("%s and %s share cluster %d", o, what, cl)
			}
			owned[cl] = what
			n++
			if c.next[cl]&fatMask >= fatEOC {
				return n
			}
		}
	}
	var walk func(dir, parent uint32, name string)
	walk = func(dir, parent uint32, name string) {
		own(dir, name)
		for cl := dir; ; cl = c.next[cl] & fatMask {
			buf := img[l.dataOff+int64(cl-2)*l.clusterSize:][:l.clusterSize]
			for o := 0; o < len(buf); o += dirEntry {
				e := buf[o : o+dirEntry]
				if e[0] == dirEnd {
					return
				}
				if e[0] == dirFree || e[11]&attrLFN == attrLFN || e[11]&attrVol != 0 {
					continue
				}
				first, size, sub := entryCluster(e), le32(e[dirEntrySize:]), strings.TrimSuffix(name, "/")+"/"+shortEntryName(e)
				switch {
				case string(e[:11]) == ".          ":
					if first != dir {
						t.Errorf("%s: '.' names %d, want %d", sub, first, dir)
					}
				case string(e[:11]) == dotDotName:
					if want := map[bool]uint32{true: 0, false: parent}[parent == 2]; first != want {
						t.Errorf("%s: '..' names %d, want %d", sub, first, want)
					}
				case e[11]&attrDir != 0:
					walk(first, dir, sub)
				case size == 0 && first != 0:
					t.Errorf("%s: empty file with cluster %d", sub, first)
				case size > 0:
					if n, want := own(first, sub), (int64(size)+l.clusterSize-1)/l.clusterSize; int64(n) != want {
						t.Errorf("%s: %d bytes in %d clusters", sub, size, n)
					}
				}
			}
			if c.next[cl]&fatMask >= fatEOC {
				return
			}
		}
	}
	walk(2, 0, "/")
	for cl := uint32(2); cl < l.clusters+2; cl++ {
		if v := c.next[cl] & fatMask; v != fatFree && v != fatBad && owned[cl] == "" {
			t.Errorf("cluster %d is allocated (%#x) but lost", cl, v)
		}
	}
	free, hint := l.freeClusters(raw)
	for _, off := range []int64{l.fsinfo, l.backupInfo} {
		b := img[off : off+512]
		if !validFSInfo(b) {
			t.Errorf("FSInfo at %d: bad signatures", off)
		}
		if got := binary.LittleEndian.Uint32(b[fsInfoFree:]); got != free {
			t.Errorf("FSInfo at %d: %d free clusters, really %d", off, got, free)
		}
		if got := binary.LittleEndian.Uint32(b[fsInfoNext:]); got != hint {
			t.Errorf("FSInfo at %d: next-free hint %d, want %d", off, got, hint)
		}
	}
}

// mkfsImage makes a 64 MiB FAT32 image as the tier-B dom0 does (Debian's
// mkfs.fat -F 32) if mkfs.fat is there, else with go-diskfs.
func mkfsImage(t *testing.T) (*image, string) {
	t.Helper()
	if mkfs := dosfstool("mkfs.fat", "mkfs.vfat"); mkfs != "" {
		img := &image{path: filepath.Join(t.TempDir(), "fat.img"), size: 64 << 20, volume: 64 << 20}
		if err := os.WriteFile(img.path, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Truncate(img.path, img.size); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command(mkfs, "-F", "32", "-n", "GOZEN", img.path)
		cmd.Env = append(os.Environ(), "LANG=C", "LC_ALL=C")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", mkfs, err, out)
		}
		return img, "mkfs.fat"
	}
	// go-diskfs's FAT has two entries fewer than the data area has
	// clusters; mkfs.fat's never does: leave the last clusters out
	img := newImage(t, layoutWhole, 64<<20, nil)
	f, err := os.OpenFile(img.path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 512)
	for _, sec := range []int64{0, 6} {
		if _, err := f.ReadAt(b, sec*512); err != nil {
			t.Fatal(err)
		}
		binary.LittleEndian.PutUint32(b[0x20:], binary.LittleEndian.Uint32(b[0x20:])-2*uint32(b[0x0d]))
		if _, err := f.WriteAt(b, sec*512); err != nil {
			t.Fatal(err)
		}
	}
	return img, "go-diskfs"
}

// fsckWorkload is what the tier-B guest does and more: config read, 100
// appends, directories in the root and below, a 1 MiB file, long names
// sharing a prefix, empty and truncated files, removed files and
// directories, a file open across other writes and a Sync. It returns
// the files expected at the end.
func fsckWorkload(t *testing.T, fsys *FS, check func(stage string)) map[string][]byte {
	t.Helper()
	must := func(what string, err error) {
		t.Helper()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
	}
	want := map[string][]byte{"config.txt": []byte("greeting=hello from dom0\n")}
	must("config", fsys.WriteFile("config.txt", want["config.txt"]))
	if b, err := fsys.ReadFile("config.txt"); err != nil || !bytes.Equal(b, want["config.txt"]) {
		t.Fatalf("config.txt: %q, %v", b, err)
	}
	var log bytes.Buffer
	for i := range 100 {
		line := fmt.Appendf(nil, "line %d from the guest\n", i)
		log.Write(line)
		must("append", fsys.AppendFile("log.txt", line))
	}
	want["log.txt"] = log.Bytes()
	must("mkdir", fsys.MkdirAll("d"))
	must("mkdir", fsys.Mkdir("d/e"))
	must("mkdirall", fsys.MkdirAll("top/x/y"))
	big := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	must("big", fsys.WriteFile("d/big.bin", big))
	want["d/big.bin"] = big
	for _, n := range []string{"d/e/a-long-file-name-one.txt", "d/e/a-long-file-name-two.txt", "top/x/y/Mixed Case.Name"} {
		must(n, fsys.WriteFile(n, []byte(n)))
		want[n] = []byte(n)
	}
	must("empty", fsys.WriteFile("empty.txt", nil))
	want["empty.txt"] = []byte{}
	must("trunc", fsys.WriteFile("trunc.txt", bytes.Repeat([]byte("t"), 5000)))
	tf, err := fsys.OpenFile("trunc.txt", os.O_WRONLY|os.O_TRUNC)
	must("trunc open", err)
	must("trunc close", tf.Close())
	want["trunc.txt"] = []byte{}
	must("gone", fsys.WriteFile("d/gone.bin", bytes.Repeat([]byte("g"), 70000)))
	must("remove file", fsys.Remove("d/gone.bin"))
	must("remove empty", fsys.WriteFile("d/e/nothing", nil))
	must("remove empty", fsys.Remove("d/e/nothing"))
	must("rmdir", fsys.Remove("top/x/y/Mixed Case.Name"))
	delete(want, "top/x/y/Mixed Case.Name")
	must("rmdir", fsys.Remove("top/x/y"))
	check("after removes")

	// a file open while others change its directory, across a Sync
	h, err := fsys.Create("d/open.txt")
	must("create", err)
	must("other", fsys.WriteFile("d/other.txt", []byte("other")))
	want["d/other.txt"] = []byte("other")
	must("sync", fsys.Sync(context.Background()))
	check("with a new file open")
	_, err = h.Write([]byte("first "))
	must("write", err)
	must("other2", fsys.WriteFile("d/other2.txt", []byte("other2")))
	want["d/other2.txt"] = []byte("other2")
	_, err = h.Write([]byte("second"))
	must("write", err)
	must("close", h.Close())
	want["d/open.txt"] = []byte("first second")
	// the empty file another tool made (no cluster) takes appends
	must("append to empty", fsys.AppendFile("empty2.txt", nil))
	must("append to empty", fsys.AppendFile("empty2.txt", []byte("grown")))
	want["empty2.txt"] = []byte("grown")
	for name, data := range want {
		if b, err := fsys.ReadFile(name); err != nil || !bytes.Equal(b, data) {
			t.Errorf("%s: %d bytes, %v; want %d", name, len(b), err, len(data))
		}
	}
	return want
}

// TestFsck writes through blockfs to a FAT32 image made as the tier-B
// dom0 makes it (through blkfront and blkback) and to one go-diskfs made
// (on a host file), and checks the images with fsck.fat -n (if found)
// and checkVolume, mid-way after a Sync and at the end.
func TestFsck(t *testing.T) {
	for _, via := range []string{"blkfront", "file"} {
		t.Run(via, func(t *testing.T) {
			img, made := mkfsImage(t)
			t.Logf("image made by %s", made)
			var dev Device
			var r *rig
			if via == "blkfront" {
				r = serveImage(t, img, false)
				dev = r.disk
			} else {
				f, err := os.OpenFile(img.path, os.O_RDWR, 0)
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				dev = fileDevice{f, img.size}
			}
			fsys, err := Open(dev, Options{})
			if err != nil {
				t.Fatal(err)
			}
			check := func(stage string) {
				t.Helper()
				b, err := os.ReadFile(img.path)
				if err != nil {
					t.Fatal(err)
				}
				t.Run(stage+"/self", func(t *testing.T) { checkVolume(t, b) })
				t.Run(stage+"/fsck.fat", func(t *testing.T) { runFsck(t, img.path) })
			}
			want := fsckWorkload(t, fsys, check)
			if err := fsys.Close(); err != nil {
				t.Fatal(err)
			}
			if r != nil {
				r.close()
			}
			check("at the end")

			// go-diskfs itself reads back what blockfs wrote
			lib := img.library(t)
			for name, data := range want {
				if len(data) == 0 {
					continue // go-diskfs cannot read a file with no cluster
				}
				f, err := lib.OpenFile("/"+name, os.O_RDONLY)
				if err != nil {
					t.Errorf("go-diskfs: %s: %v", name, err)
					continue
				}
				b, err := io.ReadAll(f)
				if (err != nil && !errors.Is(err, io.EOF)) || !bytes.Equal(b, data) {
					t.Errorf("go-diskfs: %s: %d bytes, %v; want %d", name, len(b), err, len(data))
				}
			}
		})
	}
}

// TestRefuseWritable checks that a volume go-diskfs would damage opens
// read-only but not writable.
func TestRefuseWritable(t *testing.T) {
	for _, tc := range []struct {
		name  string
		patch func(b []byte)
	}{
		{"FAT[1] dirty", func(b []byte) {
			binary.LittleEndian.PutUint32(b[16<<10+4:], 0x07ffffff) // first FAT
			binary.LittleEndian.PutUint32(b[16<<10+4+int(binary.LittleEndian.Uint32(b[0x24:]))*512:], 0x07ffffff)
		}},
		{"backup boot sector past the reserved sectors", func(b []byte) { binary.LittleEndian.PutUint16(b[0x32:], 0xffff) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			b := smallImage(t)
			tc.patch(b)
			if _, err := Open(&memDevice{b: b, ss: 512}, Options{}); !errors.Is(err, ErrUnsupported) {
				t.Errorf("writable open: %v, want ErrUnsupported", err)
			}
			fsys, err := Open(&memDevice{b: b, ss: 512}, Options{ReadOnly: true})
			if err != nil {
				t.Fatalf("read-only open: %v", err)
			}
			if _, err := fsys.ReadFile("config.txt"); err != nil {
				t.Error(err)
			}
			fsys.Close()
		})
	}
}

// TestFreeChain checks the FAT helpers on hand-made FATs.
func TestFreeChain(t *testing.T) {
	l := &layout{clusters: 8}
	fat := func(v ...uint32) []byte {
		b := make([]byte, 4*len(v))
		for i, x := range v {
			binary.LittleEndian.PutUint32(b[4*i:], x)
		}
		return b
	}
	const eoc = 0x0fffffff
	for _, tc := range []struct {
		name   string
		raw    []byte
		first  uint32
		want   []byte
		lo, hi uint32
		err    error
	}{
		{"chain", fat(0xf8, eoc, eoc, 5, 0, 6, eoc, 0, 0, 0), 3, fat(0xf8, eoc, eoc, 0, 0, 0, 0, 0, 0, 0), 3, 6, nil},
		{"high bits kept", fat(0xf8, eoc, eoc, 0xf0000004, 0x1fffffff, 0, 0, 0, 0, 0), 3, fat(0xf8, eoc, eoc, 0xf0000000, 0x10000000, 0, 0, 0, 0, 0), 3, 4, nil},
		{"root", fat(0xf8, eoc, 4, 0, eoc, 0, 0, 0, 0, 0), 4, nil, 0, 0, ErrCorrupt},
		{"outside", fat(0xf8, eoc, eoc, 12, 0, 0, 0, 0, 0, 0), 3, nil, 0, 0, ErrCorrupt},
		{"loop ends at the freed start", fat(0xf8, eoc, eoc, 4, 3, 0, 0, 0, 0, 0), 3, fat(0xf8, eoc, eoc, 0, 0, 0, 0, 0, 0, 0), 3, 4, nil},
		{"ends free", fat(0xf8, eoc, eoc, 4, 0, 0, 0, 0, 0, 0), 3, fat(0xf8, eoc, eoc, 0, 0, 0, 0, 0, 0, 0), 3, 3, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			lo, hi, err := l.freeChain(tc.raw, tc.first)
			if !errors.Is(err, tc.err) || (err == nil && tc.err != nil) {
				t.Fatalf("err %v, want %v", err, tc.err)
			}
			if err == nil && (lo != tc.lo || hi != tc.hi || !bytes.Equal(tc.raw, tc.want)) {
				t.Errorf("entries %d..%d, FAT % x; want %d..%d, % x", lo, hi, tc.raw, tc.lo, tc.hi, tc.want)
			}
		})
	}
	free, hint := l.freeClusters(fat(0xf8, eoc, eoc, eoc, 0, 0x0ffffff7, 0xf0000000, eoc, eoc, eoc))
	if free != 2 || hint != 3 {
		t.Errorf("freeClusters: %d free, hint %d; want 2, 3", free, hint)
	}
	if free, hint := l.freeClusters(fat(0xf8, eoc, eoc, eoc, eoc, eoc, eoc, eoc, eoc, eoc)); free != 0 || hint != fsInfoUnknown {
		t.Errorf("full: %d free, hint %#x", free, hint)
	}
}
