//go:build !tamago

package gntunix_test

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"

	"github.com/gozen-dev/gozen/gnttab"
	"github.com/gozen-dev/gozen/gnttab/gntunix"
)

const envDeadMapper = "GNTUNIX_TEST_DEAD_MAPPER" // "dir refs...": be the mapper

// TestUnshareAfterMapperDied: grants mapped by a process that was killed
// (it could not unmap) are revocable once it is gone, but not before.
func TestUnshareAfterMapperDied(t *testing.T) {
	if v := os.Getenv(envDeadMapper); v != "" {
		deadMapperChild(t, v)
		return
	}
	dir := tempDir(t)
	a, err := gntunix.Open(dir, 1, 64)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Shutdown()
	s, err := a.Share(2, 3, true)
	if err != nil {
		t.Fatal(err)
	}
	arg := dir
	for _, r := range s.Refs {
		arg += " " + strconv.Itoa(int(r))
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestUnshareAfterMapperDied$")
	cmd.Env = append(os.Environ(), envDeadMapper+"="+arg)
	cmd.Stderr = os.Stderr
	stdin, _ := cmd.StdinPipe()
	defer stdin.Close()
	out, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	line, _ := bufio.NewReader(out).ReadString('\n')
	if strings.TrimSpace(line) != "mapped" {
		t.Fatalf("child said %q", line)
	}
	if err := a.Unshare(s); !errors.Is(err, gnttab.ErrInUse) {
		t.Fatalf("unshare while a live process maps the pages: %v", err)
	}
	cmd.Process.Kill()
	cmd.Wait()
	if err := a.Unshare(s); err != nil {
		t.Fatalf("unshare after the mapper died: %v", err)
	}
	if st := a.Stats(); st.String() != "" {
		t.Fatalf("leftovers: %v", st)
	}
}

// deadMapperChild maps the refs, says so and waits to be killed.
func deadMapperChild(t *testing.T, arg string) {
	f := strings.Fields(arg)
	d, err := gntunix.Open(f[0], 2, 16)
	if err != nil {
		t.Fatal(err)
	}
	var refs []gnttab.Ref
	for _, s := range f[1:] {
		r, _ := strconv.Atoi(s)
		refs = append(refs, gnttab.Ref(r))
	}
	if _, err := d.Map(1, refs, true); err != nil {
		t.Fatal(err)
	}
	fmt.Println("mapped")
	io.Copy(io.Discard, os.Stdin) // until killed (or the parent goes)
}
