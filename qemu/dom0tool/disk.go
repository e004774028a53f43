//go:build linux

package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/gozen-dev/gozen/blockfs"
	"github.com/gozen-dev/gozen/internal/teststream"
)

const chunk = 1 << 20

// dataCheck checks that the first n bytes of FILE are blktest's data: 1 MiB
// chunks, chunk i the test stream of seed+i.
func dataCheck(args []string) error {
	path, n, seed, err := parseBlobArgs(args)
	if err != nil {
		return err
	}
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	buf, want := make([]byte, chunk), make([]byte, chunk)
	for off := int64(0); off < n; off += chunk {
		c := min(chunk, n-off)
		if _, err := io.ReadFull(f, buf[:c]); err != nil {
			fmt.Printf("GOZEN-DATA FAIL %s: at %d: %v\n", path, off, err)
			return nil
		}
		teststream.New(seed + uint64(off/chunk)).Fill(want[:c])
		if !bytes.Equal(buf[:c], want[:c]) {
			fmt.Printf("GOZEN-DATA FAIL %s: the MiB at %d differs\n", path, off)
			return nil
		}
	}
	fmt.Printf("GOZEN-DATA PASS %s %d bytes\n", path, n)
	return nil
}

// zeroCheck reports whether FILE's bytes [off, off+n) are zero.
func zeroCheck(args []string) error {
	if len(args) != 3 {
		return errors.New("want FILE OFF N")
	}
	off, err1 := strconv.ParseInt(args[1], 0, 64)
	n, err2 := strconv.ParseInt(args[2], 0, 64)
	if err1 != nil || err2 != nil {
		return errors.New("bad OFF or N")
	}
	f, err := os.Open(args[0])
	if err != nil {
		return err
	}
	defer f.Close()
	buf := make([]byte, n)
	if _, err := f.ReadAt(buf, off); err != nil {
		return err
	}
	if i := bytes.IndexFunc(buf, func(r rune) bool { return r != 0 }); i >= 0 {
		fmt.Printf("GOZEN-ZERO FAIL %s: byte %d is not zero\n", args[0], off+int64(i))
		return nil
	}
	fmt.Printf("GOZEN-ZERO PASS %s %d bytes at %d\n", args[0], n, off)
	return nil
}

// fileDisk is a blockfs.Device on a disk image file.
type fileDisk struct {
	*os.File
	size     int64
	readOnly bool
}

func (d *fileDisk) Size() int64                 { return d.size }
func (d *fileDisk) SectorSize() int             { return 512 }
func (d *fileDisk) Flush(context.Context) error { return d.Sync() }
func (d *fileDisk) ReadOnly() bool              { return d.readOnly }

// openFAT opens the FAT32 file system of the image file path (the whole
// image, or its first FAT32 partition) with blockfs, which keeps it as
// fsck.fat wants it. Closing the FS closes the file.
func openFAT(path string, readOnly bool) (*blockfs.FS, func() error, error) {
	flag := os.O_RDWR
	if readOnly {
		flag = os.O_RDONLY
	}
	f, err := os.OpenFile(path, flag, 0)
	if err != nil {
		return nil, nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	fsys, err := blockfs.Open(&fileDisk{File: f, size: st.Size(), readOnly: readOnly}, blockfs.Options{ReadOnly: readOnly})
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return fsys, func() error { return errors.Join(fsys.Close(), f.Close()) }, nil
}

// fatName turns NAME ("a/b", "/a/b") into a blockfs name.
func fatName(name string) string { return strings.TrimPrefix(name, "/") }

// fatPut writes TEXT (with a newline) as file NAME of the FAT image IMG.
func fatPut(args []string) error {
	if len(args) != 3 {
		return errors.New("want IMG NAME TEXT")
	}
	fsys, closeFAT, err := openFAT(args[0], false)
	if err != nil {
		return err
	}
	err = fsys.WriteFile(fatName(args[1]), []byte(args[2]+"\n"))
	return errors.Join(err, closeFAT())
}

// fatRead reads file NAME of the FAT image IMG.
func fatRead(img, name string) ([]byte, error) {
	fsys, closeFAT, err := openFAT(img, true)
	if err != nil {
		return nil, err
	}
	b, err := fsys.ReadFile(fatName(name))
	return b, errors.Join(err, closeFAT())
}

// fatCat prints file NAME of the FAT image IMG, each line prefixed.
func fatCat(w io.Writer, args []string) error {
	if len(args) != 2 {
		return errors.New("want IMG NAME")
	}
	b, err := fatRead(args[0], args[1])
	if err != nil {
		fmt.Fprintf(w, "GOZEN-FAT FAIL %s: %v\n", args[1], err)
		return nil
	}
	for _, l := range bytes.Split(bytes.TrimRight(b, "\n"), []byte("\n")) {
		fmt.Fprintf(w, "GOZEN-FAT %s| %s\n", args[1], l)
	}
	return nil
}

// fatCRC prints the size and CRC-32 of file NAME of the FAT image IMG.
func fatCRC(w io.Writer, args []string) error {
	if len(args) != 2 {
		return errors.New("want IMG NAME")
	}
	b, err := fatRead(args[0], args[1])
	if err != nil {
		fmt.Fprintf(w, "GOZEN-FATCRC FAIL %s: %v\n", args[1], err)
		return nil
	}
	fmt.Fprintf(w, "GOZEN-FATCRC %s %d %08x\n", args[1], len(b), crc32.ChecksumIEEE(b))
	return nil
}
