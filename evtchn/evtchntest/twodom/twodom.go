// Package twodom runs two-sided conformance tests: each test case has an "A"
// half and a "B" half, each running in its own domain, talking to each other
// through the service under test (event channels, shared memory) and through
// a side channel ([Link]) used only to exchange port numbers, grant
// references and "go ahead" signals.
//
// The two halves run either in one process ([RunInProcess]: A in the test
// goroutine, B in another goroutine), in two real processes
// ([RunProcesses]: A in the test binary, B in the test binary re-executed
// with an environment variable selecting the child role and -test.run
// selecting the case), or in two domains that each run their own halves
// without package testing's runner ([RunSide]: two Gozen guests, the
// Link between them through xenstore, package xslink).
//
// It is the engine behind the evtchntest and gnttabtest suites; drivers
// built on both services can use it for their own two-domain tests.
package twodom

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gozen-dev/gozen/domid"
)

// Timeout bounds every blocking step of a case: a Link receive, and the
// whole life of a child process.
const Timeout = 60 * time.Second

// Environment variables passed to the child process.
const (
	envChild = "GOZEN_TWODOM_CHILD" // "1" in the child
	envDir   = "GOZEN_TWODOM_DIR"   // rendezvous directory
	envSelf  = "GOZEN_TWODOM_SELF"  // the child's domain id
	envPeer  = "GOZEN_TWODOM_PEER"  // the parent's domain id
)

// linkFD is the child's file descriptor for its end of the Link.
const linkFD = 3

// IDs of the two domains. They are arbitrary non-zero Xen-style domids.
const (
	IDA domid.ID = 1
	IDB domid.ID = 2
)

// T is the subset of *testing.T a case half may use. In a goroutine that is
// not the test's own, Fatal ends only that goroutine (see [RunInProcess]).
type T interface {
	Helper()
	Log(args ...any)
	Logf(format string, args ...any)
	Error(args ...any)
	Errorf(format string, args ...any)
	Fatal(args ...any)
	Fatalf(format string, args ...any)
	Failed() bool
}

// Link is the side channel between the two halves of a case. It carries
// unsigned integers in order; Recv fails once the other half has finished or
// after [Timeout].
type Link interface {
	// Send sends v to the other half.
	Send(v uint64) error
	// Recv receives the next value sent by the other half.
	Recv() (uint64, error)
}

// Side is what one half of a case gets.
type Side[S any] struct {
	// Svc is this domain's service under test.
	Svc S
	// Self is this domain's id, Peer the other half's.
	Self, Peer domid.ID
	// Link reaches the other half.
	Link Link
}

// Send sends v to the other half over the Link; if the Link fails, the
// half fails and ends (t.Fatalf).
func (s *Side[S]) Send(t T, v uint64) {
	t.Helper()
	if err := s.Link.Send(v); err != nil {
		t.Fatalf("link: %v", err)
	}
}

// Recv receives the next value the other half sent over the Link; if
// the Link fails, the half fails and ends (t.Fatalf).
func (s *Side[S]) Recv(t T) uint64 {
	t.Helper()
	v, err := s.Link.Recv()
	if err != nil {
		t.Fatalf("link: %v", err)
	}
	return v
}

// Idle is a half that does nothing, for a case whose other half does all
// the work.
func Idle[S any](t T, s *Side[S]) {}

// Domain is one domain as built by a test's factory.
type Domain[S any] struct {
	// Svc is the service under test.
	Svc S
	// ID is the domain's id.
	ID domid.ID
	// Leftovers describes resources the domain still holds (open ports,
	// live grants, live mappings); "" means none. It is checked after
	// each half finished. May be nil.
	Leftovers func() string
}

// Case is one two-sided test.
type Case[S any] struct {
	// Name is the subtest name; use letters, digits and underscores.
	Name string
	// A runs in the test's own goroutine (in the parent process).
	A func(t T, s *Side[S])
	// B runs in another goroutine or in the child process.
	B func(t T, s *Side[S])
}

// IsChild reports whether this process is a child started by RunProcesses.
func IsChild() bool { return os.Getenv(envChild) == "1" }

// RunInProcess runs every case as a subtest of t with both halves in this
// process. newPair builds two fresh domains, A and B, that can reach each
// other; it is called once per case.
func RunInProcess[S any](t *testing.T, cases []Case[S], newPair func(t *testing.T) (a, b Domain[S])) {
	t.Helper()
	for _, c := range cases {
		t.Run(c.Name, func(t *testing.T) {
			da, db := newPair(t)
			la, lb := newChanLink()
			sa := &Side[S]{Svc: da.Svc, Self: da.ID, Peer: db.ID, Link: la}
			sb := &Side[S]{Svc: db.Svc, Self: db.ID, Peer: da.ID, Link: lb}
			done := make(chan struct{})
			go func() {
				defer close(done)
				defer lb.close()
				c.B(&goroutineT{T: t, prefix: "B: "}, sb)
			}()
			func() {
				defer la.close()
				c.A(t, sa)
			}()
			<-done
			checkLeftovers(t, "A", da)
			checkLeftovers(t, "B", db)
		})
	}
}

// RunProcesses runs every case as a subtest of t with half B in a child
// process: the test binary re-executed with -test.run selecting t and the
// case. open builds this process's domain with the given id in the
// rendezvous directory dir (a fresh, short directory per case, shared by
// both processes).
//
// The test calling RunProcesses must call it unconditionally, whatever
// IsChild says: in the child, RunProcesses runs half B of the selected case.
func RunProcesses[S any](t *testing.T, cases []Case[S], open func(t *testing.T, dir string, id domid.ID) Domain[S]) {
	t.Helper()
	if IsChild() {
		runChild(t, cases, open)
		return
	}
	for _, c := range cases {
		t.Run(c.Name, func(t *testing.T) {
			dir, err := os.MkdirTemp("", "gz")
			if err != nil {
				t.Fatalf("rendezvous directory: %v", err)
			}
			t.Cleanup(func() { os.RemoveAll(dir) })
			da := open(t, dir, IDA)
			link, out, wait := startChild(t, dir, "-test.run="+runPattern(t.Name()), "-test.count=1", "-test.v")
			sa := &Side[S]{Svc: da.Svc, Self: da.ID, Peer: IDB, Link: link}
			func() {
				defer link.Close()
				c.A(t, sa)
			}()
			if err := wait(); err != nil {
				t.Errorf("child process (half B): %v\n%s", err, out.String())
			} else if !strings.Contains(out.String(), "--- PASS: "+t.Name()) {
				t.Errorf("child process did not run half B of %s:\n%s", t.Name(), out.String())
			} else if testing.Verbose() {
				t.Logf("child output:\n%s", out.String())
			}
			checkLeftovers(t, "A", da)
		})
	}
}

func runChild[S any](t *testing.T, cases []Case[S], open func(t *testing.T, dir string, id domid.ID) Domain[S]) {
	dir, self, peer, link := childEnv(t)
	defer link.Close()
	ran := false
	for _, c := range cases {
		t.Run(c.Name, func(t *testing.T) {
			db := open(t, dir, self)
			sb := &Side[S]{Svc: db.Svc, Self: db.ID, Peer: peer, Link: link}
			ran = true
			c.B(t, sb)
			checkLeftovers(t, "B", db)
		})
	}
	if !ran {
		t.Fatalf("twodom child: -test.run selected no case")
	}
}

// childEnv reads the child's environment and opens its end of the link.
func childEnv(tb testing.TB) (dir string, self, peer domid.ID, link *streamLink) {
	dir = os.Getenv(envDir)
	s, err1 := strconv.ParseUint(os.Getenv(envSelf), 10, 16)
	p, err2 := strconv.ParseUint(os.Getenv(envPeer), 10, 16)
	if dir == "" || err1 != nil || err2 != nil {
		tb.Fatalf("twodom child: bad environment (%s=%q %s=%q %s=%q)", envDir, dir,
			envSelf, os.Getenv(envSelf), envPeer, os.Getenv(envPeer))
	}
	if err := syscall.SetNonblock(linkFD, true); err != nil {
		tb.Fatalf("twodom child: link on fd %d: %v", linkFD, err)
	}
	return dir, domid.ID(s), domid.ID(p), newStreamLink(os.NewFile(linkFD, "twodom-link"))
}

// BenchmarkProcesses runs a benchmark across two processes: parent runs in
// this process as domain A and is timed; child runs as domain B in the test
// binary re-executed with -test.bench selecting b. open builds a domain in
// the rendezvous directory dir. The benchmark must call BenchmarkProcesses
// unconditionally, whatever IsChild says.
func BenchmarkProcesses[S any](b *testing.B, open func(tb testing.TB, dir string, id domid.ID) Domain[S],
	parent func(b *testing.B, s *Side[S]), child func(t T, s *Side[S])) {
	b.Helper()
	if IsChild() {
		dir, self, peer, link := childEnv(b)
		defer link.Close()
		d := open(b, dir, self)
		child(b, &Side[S]{Svc: d.Svc, Self: self, Peer: peer, Link: link})
		return
	}
	b.StopTimer()
	dir, err := os.MkdirTemp("", "gz")
	if err != nil {
		b.Fatalf("rendezvous directory: %v", err)
	}
	b.Cleanup(func() { os.RemoveAll(dir) })
	da := open(b, dir, IDA)
	link, out, wait := startChild(b, dir, "-test.run=^$", "-test.bench="+runPattern(b.Name()), "-test.benchtime=1x", "-test.count=1")
	func() {
		defer link.Close()
		b.StartTimer()
		parent(b, &Side[S]{Svc: da.Svc, Self: IDA, Peer: IDB, Link: link})
		b.StopTimer()
	}()
	if err := wait(); err != nil {
		b.Errorf("child process: %v\n%s", err, out.String())
	} else if !strings.Contains(out.String(), b.Name()) {
		b.Errorf("child process did not run %s:\n%s", b.Name(), out.String())
	}
}

func checkLeftovers[S any](t *testing.T, half string, d Domain[S]) {
	t.Helper()
	if d.Leftovers == nil {
		return
	}
	if s := d.Leftovers(); s != "" {
		t.Errorf("%s (domain %d) leftovers: %s", half, d.ID, s)
	}
}

// runPattern turns a test name into a -test.run pattern matching exactly it.
func runPattern(name string) string {
	parts := strings.Split(name, "/")
	for i, p := range parts {
		parts[i] = "^" + regexp.QuoteMeta(p) + "$"
	}
	return strings.Join(parts, "/")
}

// startChild re-executes the test binary as half B of test t.
func startChild(t testing.TB, dir string, args ...string) (*streamLink, *syncBuffer, func() error) {
	t.Helper()
	// Close-on-exec set under ForkLock, as the standard library does where
	// SOCK_CLOEXEC is missing (GOOS=tamago has no such flag): no other
	// child started meanwhile inherits the link.
	syscall.ForkLock.RLock()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM, 0)
	if err == nil {
		syscall.CloseOnExec(fds[0])
		syscall.CloseOnExec(fds[1])
	}
	syscall.ForkLock.RUnlock()
	if err != nil {
		t.Fatalf("socketpair: %v", err)
	}
	// Non-blocking so that the runtime poller handles it and deadlines work.
	if err := syscall.SetNonblock(fds[0], true); err != nil {
		t.Fatalf("socketpair: %v", err)
	}
	mine := os.NewFile(uintptr(fds[0]), "twodom-link")
	theirs := os.NewFile(uintptr(fds[1]), "twodom-link-child")
	cmd := exec.Command(os.Args[0], append(args, "-test.timeout="+Timeout.String())...)
	cmd.Env = append(os.Environ(),
		envChild+"=1",
		envDir+"="+dir,
		envSelf+"="+strconv.Itoa(int(IDB)),
		envPeer+"="+strconv.Itoa(int(IDA)),
	)
	cmd.ExtraFiles = []*os.File{theirs} // fd 3
	out := &syncBuffer{}
	cmd.Stdout = out
	cmd.Stderr = out
	if err := cmd.Start(); err != nil {
		mine.Close()
		theirs.Close()
		t.Fatalf("start child: %v", err)
	}
	theirs.Close()
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		select {
		case <-exited:
		default:
			cmd.Process.Kill()
		}
	})
	wait := func() error {
		select {
		case err := <-exited:
			exited <- err
			if err == nil && !strings.Contains(out.String(), "PASS") {
				return errors.New("child did not pass")
			}
			return err
		case <-time.After(Timeout):
			cmd.Process.Kill()
			return fmt.Errorf("child still running after %v: killed", Timeout)
		}
	}
	return newStreamLink(mine), out, wait
}

// syncBuffer is a goroutine-safe output buffer.
type syncBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// goroutineT reports into a test from a goroutine other than the test's own:
// Fatal records the failure and ends the goroutine with runtime.Goexit.
type goroutineT struct {
	T      *testing.T
	prefix string
}

func (g *goroutineT) Helper()                           { g.T.Helper() }
func (g *goroutineT) Log(args ...any)                   { g.T.Log(append([]any{g.prefix}, args...)...) }
func (g *goroutineT) Logf(format string, args ...any)   { g.T.Logf(g.prefix+format, args...) }
func (g *goroutineT) Error(args ...any)                 { g.T.Error(append([]any{g.prefix}, args...)...) }
func (g *goroutineT) Errorf(format string, args ...any) { g.T.Errorf(g.prefix+format, args...) }
func (g *goroutineT) Failed() bool                      { return g.T.Failed() }

func (g *goroutineT) Fatal(args ...any) {
	g.T.Error(append([]any{g.prefix}, args...)...)
	runtime.Goexit()
}

func (g *goroutineT) Fatalf(format string, args ...any) {
	g.T.Errorf(g.prefix+format, args...)
	runtime.Goexit()
}

// chanLink is one end of an in-process Link.
type chanLink struct {
	in, out  chan uint64
	mine     chan struct{} // closed when this end is done
	theirs   chan struct{} // closed when the other end is done
	doneOnce *sync.Once
}

func newChanLink() (*chanLink, *chanLink) {
	ab, ba := make(chan uint64, 64), make(chan uint64, 64)
	da, db := make(chan struct{}), make(chan struct{})
	return &chanLink{in: ba, out: ab, mine: da, theirs: db, doneOnce: new(sync.Once)},
		&chanLink{in: ab, out: ba, mine: db, theirs: da, doneOnce: new(sync.Once)}
}

func (l *chanLink) close() { l.doneOnce.Do(func() { close(l.mine) }) }

func (l *chanLink) Send(v uint64) error {
	select {
	case l.out <- v:
		return nil
	case <-l.theirs:
		return errors.New("twodom: link: other half finished")
	case <-time.After(Timeout):
		return errors.New("twodom: link: send timed out")
	}
}

func (l *chanLink) Recv() (uint64, error) {
	select {
	case v := <-l.in:
		return v, nil
	default:
	}
	select {
	case v := <-l.in:
		return v, nil
	case <-l.theirs:
		select {
		case v := <-l.in:
			return v, nil
		default:
		}
		return 0, errors.New("twodom: link: other half finished")
	case <-time.After(Timeout):
		return 0, errors.New("twodom: link: receive timed out")
	}
}

// streamLink is a Link over a stream socket: each value is 8 bytes, little
// endian.
type streamLink struct {
	f *os.File
}

func newStreamLink(f *os.File) *streamLink { return &streamLink{f: f} }

func (l *streamLink) Send(v uint64) error {
	var b [8]byte
	binary.LittleEndian.PutUint64(b[:], v)
	l.f.SetWriteDeadline(time.Now().Add(Timeout))
	if _, err := l.f.Write(b[:]); err != nil {
		return fmt.Errorf("twodom: link send: %w", err)
	}
	return nil
}

func (l *streamLink) Recv() (uint64, error) {
	var b [8]byte
	l.f.SetReadDeadline(time.Now().Add(Timeout))
	if _, err := io.ReadFull(l.f, b[:]); err != nil {
		return 0, fmt.Errorf("twodom: link receive: %w", err)
	}
	return binary.LittleEndian.Uint64(b[:]), nil
}

// Close closes the link; the other half's Recv then fails.
func (l *streamLink) Close() error { return l.f.Close() }
