//go:build !tamago

// Package pairtest runs the processes of the netpair and blkpair tests:
// the test binary re-executed as the command (see [Main]), with its
// output read line by line so that a test can wait for a line, kill the
// process and check how it ended.
package pairtest

import (
	"bufio"
	"context"
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
