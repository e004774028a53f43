//go:build !tamago

package main

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestMain lets the test binary stand in for vchancat in child processes.
func TestMain(m *testing.M) {
	if os.Getenv("VCHANCAT_TEST_MAIN") == "1" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func vchancat(args ...string) *exec.Cmd {
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "VCHANCAT_TEST_MAIN=1")
	return cmd
}

// TestTwoProcesses runs a listener and a client as two processes over the
// unix transports, once in each direction.
func TestTwoProcesses(t *testing.T) {
	for _, tc := range []struct {
		name         string
		listenerSend bool
		ringArgs     []string
		fromFile     bool // the sender's stdin is a regular file (Conn.SendFrom)
		zero         bool // the sender sends -zero 3 MiB, no stdin
	}{
		{"listener sends, default rings", true, nil, false, false},
		{"listener sends, in-page rings", true, []string{"-read", "1K", "-write", "2K"}, false, false},
		{"client sends, largest and 8 KiB rings", false, []string{"-read", "1M", "-write", "8192"}, false, false},
		{"listener sends a file, 8 KiB rings", true, []string{"-v", "-read", "8K", "-write", "8K"}, true, false},
		{"client sends a file, default rings", false, []string{"-v"}, true, false},
		{"listener sends -zero, default rings", true, []string{"-v"}, false, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := make([]byte, 3<<20)
			if !tc.zero {
				rand.Read(data)
			}
			var stdin io.Reader = bytes.NewReader(data)
			if tc.fromFile {
				p := filepath.Join(t.TempDir(), "in")
				if err := os.WriteFile(p, data, 0o600); err != nil {
					t.Fatal(err)
				}
				f, err := os.Open(p)
				if err != nil {
					t.Fatal(err)
				}
				defer f.Close()
				stdin = f
			}
			largs := append([]string{"-l", "-timeout", "20s"}, tc.ringArgs...)
			if !tc.listenerSend {
				largs = append(largs, "-n")
			}
			if tc.zero {
				largs = append(largs, "-zero", fmt.Sprint(len(data)))
			}
			l := vchancat(append(largs, "7")...)
			var lout, cout bytes.Buffer
			l.Stdout = &lout
			if tc.listenerSend && !tc.zero {
				l.Stdin = stdin
			}
			lerr, err := l.StderrPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := l.Start(); err != nil {
				t.Fatal(err)
			}
			defer l.Process.Kill()
			sc := bufio.NewScanner(lerr)
			var how []string
			for sc.Scan() {
				if f := strings.Fields(sc.Text()); len(f) > 0 && f[0] == "vchancat" {
					how = f[1:]
					break
				}
			}
			if how == nil {
				t.Fatalf("listener printed no connect command")
			}
			go func() {
				for sc.Scan() {
					t.Logf("listener: %s", sc.Text())
				}
			}()
			dir := how[1]
			cargs := append([]string{"-timeout", "20s"}, how...)
			if tc.listenerSend {
				cargs = append(cargs, "-n")
			}
			c := vchancat(cargs...)
			c.Stdout = &cout
			if !tc.listenerSend {
				c.Stdin = stdin
			}
			var cerr bytes.Buffer
			c.Stderr = &cerr
			done := make(chan error, 1)
			go func() { done <- l.Wait() }()
			if err := c.Run(); err != nil {
				t.Fatalf("client: %v: %s", err, cerr.String())
			}
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("listener: %v", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("listener did not exit")
			}
			got := cout.Bytes()
			if !tc.listenerSend {
				got = lout.Bytes()
			}
			if !bytes.Equal(got, data) {
				t.Fatalf("received %d bytes, want the %d sent", len(got), len(data))
			}
			if _, err := os.Stat(dir); !os.IsNotExist(err) {
				left, _ := filepath.Glob(filepath.Join(dir, "*"))
				t.Errorf("rendezvous directory %s left behind (%v): %v", dir, left, err)
				os.RemoveAll(dir)
			}
		})
	}
}

func TestFileStore(t *testing.T) {
	s := fileStore{root: t.TempDir(), self: 3}
	ctx := t.Context()
	if err := s.Write(ctx, "data/vchan/4/9/ring-ref", "12"); err != nil {
		t.Fatal(err)
	}
	if v, err := s.Read(ctx, "/local/domain/3/data/vchan/4/9/ring-ref"); err != nil || v != "12" {
		t.Fatalf("Read = %q, %v", v, err)
	}
	for _, bad := range []string{"/", "/a/../b", "/a//b", "../x"} {
		if _, err := s.Read(ctx, bad); err == nil || errors.Is(err, fs.ErrNotExist) {
			t.Errorf("Read(%q) = %v, want a bad-path error", bad, err)
		}
	}
	if err := s.Rm(ctx, "data/vchan/4/9"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Read(ctx, "data/vchan/4/9/ring-ref"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Read after Rm: %v, want not-exist", err)
	}
	if left, _ := os.ReadDir(s.root); len(left) != 0 {
		t.Errorf("Rm left %d entries in the store root", len(left))
	}
}

// TestSizeFlag checks the ring-size flag: suffixes, the 1 MiB limit, the
// default and its printed form.
func TestSizeFlag(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int
		ok   bool
	}{
		{"0", 0, true}, {"1024", 1024, true}, {"2K", 2048, true}, {"64K", 65536, true},
		{"1M", 1 << 20, true}, {"1048576", 1 << 20, true},
		{"2M", 0, false}, {"1025K", 0, false}, {"1048577", 0, false}, {"-1", 0, false}, {"K", 0, false}, {"1G", 0, false},
	} {
		var f sizeFlag
		err := f.Set(tc.in)
		if (err == nil) != tc.ok || (tc.ok && int(f) != tc.want) {
			t.Errorf("Set(%q) = %d, %v; want %d, ok %v", tc.in, int(f), err, tc.want, tc.ok)
		}
	}
	f := sizeFlag(defaultRing)
	if f.String() != "256K" {
		t.Errorf("default ring prints as %q, want 256K", f.String())
	}
	var back sizeFlag
	for _, n := range []int{0, 1000, 2048, 3 << 20 / 4, 1 << 20} {
		f = sizeFlag(n)
		if err := back.Set(f.String()); err != nil || back != f {
			t.Errorf("%d prints as %q, which reads back as %d (%v)", n, f.String(), int(back), err)
		}
	}
}

// TestSendSource checks which stdins are read straight into the ring.
func TestSendSource(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	pr, pw, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer pr.Close()
	defer pw.Close()
	for _, tc := range []struct {
		name string
		r    io.Reader
		want bool
	}{
		{"file", f, true},
		{"counted file", &counter{r: f}, true},
		{"pipe", pr, false},
		{"counted pipe", &counter{r: pr}, false},
		{"bytes", bytes.NewReader(nil), false},
		{"zeros", &zeroSource{left: 1}, true},
		{"counted zeros", &counter{r: &zeroSource{left: 1}}, true},
	} {
		if _, got := sendSource(tc.r); got != tc.want {
			t.Errorf("%s: %v, want %v", tc.name, got, tc.want)
		}
	}
}

func TestZeroSource(t *testing.T) {
	for _, n := range []int64{0, 1, 65535, 65536, 3<<20 + 7} {
		z := &zeroSource{left: n}
		buf := make([]byte, 64<<10)
		for i := range buf {
			buf[i] = 0xff
		}
		var got int64
		for {
			k, err := z.Read(buf)
			for _, b := range buf[:k] {
				if b != 0 {
					t.Fatalf("n=%d: a non-zero byte read", n)
				}
			}
			got += int64(k)
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		if got != n {
			t.Errorf("read %d bytes, want %d", got, n)
		}
	}
}
