//go:build !tamago

// Package pairtest runs the processes of the netpair and blkpair tests:
// the test binary re-executed as the command (see [Main]), with its
// output read line by line so that a test can wait for a line, kill the
// process and check how it ended ([Proc.Ended]), and makes and checks
// their rendezvous directory ([Dir], [DirGone]).
package pairtest

import (
	"bufio"
	"context"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

const envMain = "GOZEN_PAIRTEST_MAIN"

// Main runs main instead of the tests when the binary was started by
// Start; call it first in TestMain.
func Main(main func()) {
	if os.Getenv(envMain) == "1" {
		main()
		os.Exit(0)
	}
}

// hangGuard kills a process still running this long after it started: a
// test that would hang fails instead (no test depends on it otherwise).
const hangGuard = 60 * time.Second

// Proc is a running command.
type Proc struct {
	t     *testing.T
	name  string
	cmd   *exec.Cmd
	lines chan string // every output line, closed at EOF

	mu  sync.Mutex
	out []string
	end chan struct{}
	err error
}

// Start starts the test binary as the command with args; name prefixes
// its lines in the test log. The process is killed when the test ends.
func Start(t *testing.T, name string, args ...string) *Proc {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), hangGuard)
	cmd := exec.CommandContext(ctx, os.Args[0], args...)
	cmd.Env = append(os.Environ(), envMain+"=1")
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = w, w
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	w.Close()
	p := &Proc{t: t, name: name, cmd: cmd, lines: make(chan string, 1<<16), end: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			p.mu.Lock()
			p.out = append(p.out, sc.Text())
			p.mu.Unlock()
			select {
			case p.lines <- sc.Text():
			default: // nobody waits for lines this far on
			}
		}
		close(p.lines)
		r.Close()
		p.err = cmd.Wait()
		cancel()
		close(p.end)
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-p.end
	})
	return p
}

// WaitLine returns the fields of the first line from now on that
// contains s; it fails the test if the process ends first.
func (p *Proc) WaitLine(s string) []string {
	p.t.Helper()
	for l := range p.lines {
		if strings.Contains(l, s) {
			return strings.Fields(l)
		}
	}
	p.t.Fatalf("%s ended without printing %q:\n%s", p.name, s, p.Output())
	return nil
}

// Kill kills the process (SIGKILL: it cannot clean up).
func (p *Proc) Kill() {
	p.cmd.Process.Kill()
}

// Wait waits for the process to end and returns its whole output and
// its exit error (nil for status 0).
func (p *Proc) Wait() (string, error) {
	<-p.end
	return p.Output(), p.err
}

// Output returns the output so far.
func (p *Proc) Output() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.out, "\n")
}

// Released is the line both commands print when they released every
// port, grant and mapping.
const Released = "leftovers: none"

// Ended waits for the process to end and checks how: with status 0, or
// with an error if wantErr, having printed each of want and Released. It
// returns the whole output.
func (p *Proc) Ended(wantErr bool, want ...string) string {
	p.t.Helper()
	out, err := p.Wait()
	if (err != nil) != wantErr {
		p.t.Errorf("%s exited with %v, want error %v:\n%s", p.name, err, wantErr, out)
	}
	for _, w := range append(want, Released) {
		if !strings.Contains(out, w) {
			p.t.Errorf("%s printed no %q:\n%s", p.name, w, out)
		}
	}
	return out
}

// Dir returns a fresh rendezvous directory, its name starting with
// prefix, removed when the test ends. It is short (socket paths in it
// must fit in a sockaddr_un): under os.TempDir, not t.TempDir.
func Dir(t *testing.T, prefix string) string {
	t.Helper()
	d, err := os.MkdirTemp("", prefix)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// DirGone checks that the commands removed the rendezvous directory dir.
func DirGone(t *testing.T, dir string) {
	t.Helper()
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		ents, _ := os.ReadDir(dir)
		t.Errorf("rendezvous directory left behind: %v %v", err, ents)
	}
}
