//go:build !tamago

// Command vchancat copies stdin to a vchan and the vchan to stdout, between
// two Linux processes and without Xen: event channels travel over Unix
// sockets (evtchn/evunix), grants are pages of shared-memory files
// (gnttab/gntunix), and the xenstore rendezvous is a directory tree of small
// files. All three live in one rendezvous directory.
//
// Listen, as domain 1 serving domain 2, on vchan port 7:
//
//	vchancat -l 7
//
// The listener (the vchan server) chooses both rings: -read is the ring it
// reads (what the client sends), -write the ring it writes. Both default to
// 256 KiB (64 pages each), rings for bulk data: moving 256 MiB one way
// between two processes took 0.30 s with 64 KiB rings, 0.17 s with 256 KiB
// and 0.15 s with 1 MiB (the largest libxenvchan accepts), where the
// in-page 1 and 2 KiB rings of -read 1K -write 2K cost an event round trip
// per KiB. Sizes take the suffixes K and M (KiB, MiB); a size is rounded up
// to the ring vchan serves it with.
//
// It creates a rendezvous directory and prints the command that connects
// to it, such as:
//
//	vchancat -dir /tmp/vc123 -id 2 -peer 1 7
//
// With -zero N it sends N zero bytes instead of stdin: a throughput test
// with nothing read from a file.
//
// When stdin reaches EOF, vchancat tells the peer it is done (the peer
// reads EOF once it has everything). vchan has no half-close, so the peer
// can then no longer send: use -n on the side that only receives, so that
// its empty stdin does not end the channel early. vchancat exits when the
// peer has closed and all its data is written to stdout. The rendezvous
// directory the listener created is removed by whichever end leaves last
// (the connecting end removes it only if it is empty).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gozen-dev/gozen/domid"
	"github.com/gozen-dev/gozen/drivers/vchan"
	"github.com/gozen-dev/gozen/evtchn/evunix"
	"github.com/gozen-dev/gozen/gnttab/gntunix"
)

func main() {
	if err := run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "vchancat:", err)
		os.Exit(1)
	}
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("vchancat", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.Bool("l", false, "listen (be the vchan server)")
	dir := fs.String("dir", "", "rendezvous directory (created if empty and listening)")
	id := fs.Uint("id", 0, "our domain id (default 1 when listening, else 2)")
	peer := fs.Uint("peer", 0, "the peer's domain id (default 2 when listening, else 1)")
	readMin, writeMin := sizeFlag(defaultRing), sizeFlag(defaultRing)
	fs.Var(&readMin, "read", "listener: minimum size of the ring it reads, what the client sends (bytes, or with K or M; at most 1M)")
	fs.Var(&writeMin, "write", "listener: minimum size of the ring it writes, what it sends (bytes, or with K or M; at most 1M)")
	noStdin := fs.Bool("n", false, "do not read stdin: only receive")
	zeros := fs.Int64("zero", 0, "send this many zero bytes instead of stdin (a throughput test with nothing read from a file)")
	timeout := fs.Duration("timeout", 0, "give up waiting for the peer after this long (0: wait forever)")
	verbose := fs.Bool("v", false, "print the bytes moved each way and the rate on stderr at the end")
	xen := fs.Bool("xen", false, "run in a Linux Xen domain through /dev/xen against a peer in another domain (needs -peer)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: vchancat -l [-dir DIR] [-id N] [-peer N] [-read SIZE] [-write SIZE] [-n] PORT")
		fmt.Fprintln(stderr, "       vchancat -dir DIR [-id N] [-peer N] [-n] PORT")
		fmt.Fprintln(stderr, "       vchancat -xen [-l] -peer DOMID [-read SIZE] [-write SIZE] [-n] PORT")
		fs.PrintDefaults()
	}
	// Flags may come after PORT too.
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return err
		}
		if fs.NArg() == 0 {
			break
		}
		pos, args = append(pos, fs.Arg(0)), fs.Args()[1:]
	}
	if len(pos) != 1 {
		fs.Usage()
		return errors.New("want exactly one PORT")
	}
	port := pos[0]
	if *zeros < 0 {
		return errors.New("-zero wants a byte count")
	}
	if *zeros > 0 {
		if *noStdin {
			return errors.New("-zero and -n together send nothing")
		}
		stdin = &zeroSource{left: *zeros}
	}
	if *verbose {
		clock := &firstUse{}
		in, out := &counter{r: stdin, clock: clock}, &counter{w: stdout, clock: clock}
		stdin, stdout = in, out
		defer func() {
			secs := clock.since().Seconds()
			fmt.Fprintf(stderr, "vchancat: sent %d received %d bytes in %.3f s (%.1f MB/s)\n",
				in.n.Load(), out.n.Load(), secs, float64(in.n.Load()+out.n.Load())/1e6/secs)
		}()
	}
	ctx := context.Background()
	if *timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *timeout)
		defer cancel()
	}
	if *xen {
		if *peer == 0 && !peerSet(fs) {
			return errors.New("-xen needs -peer DOMID")
		}
		if *dir != "" || *id != 0 {
			return errors.New("-xen takes no -dir or -id: the domain's own id comes from xenstore")
		}
		cfg, self, closeAll, err := xenServices(ctx)
		if err != nil {
			return err
		}
		defer closeAll()
		cfg.Remote, cfg.ReadMin, cfg.WriteMin = domid.ID(*peer), int(readMin), int(writeMin)
		if cfg.Remote == self {
			return fmt.Errorf("the peer is this domain (%d)", self)
		}
		conn, err := connect(ctx, cfg, *listen, port, func() {
			fmt.Fprintf(stderr, "vchancat: domain %d listening on %s for domain %d\n", self, vchan.Path(self, cfg.Remote, port), cfg.Remote)
		})
		if err != nil {
			return err
		}
		return pipe(conn, stdin, stdout, *noStdin)
	}
	self, other := domid.ID(2), domid.ID(1)
	if *listen {
		self, other = 1, 2
	}
	if *id != 0 {
		self = domid.ID(*id)
	}
	if *peer != 0 {
		other = domid.ID(*peer)
	}
	if self == other {
		return fmt.Errorf("our domain id and the peer's are both %d", self)
	}
	created := false
	if *dir == "" {
		if !*listen {
			return errors.New("-dir is required to connect")
		}
		d, err := os.MkdirTemp("", "vc")
		if err != nil {
			return err
		}
		*dir, created = d, true
	}
	abs, err := filepath.Abs(*dir)
	if err != nil {
		return err
	}
	store := fileStore{root: filepath.Join(abs, "xenstore"), self: self}
	defer func() {
		// Runs after the shutdowns below. Whichever end leaves last
		// removes the directory: these fail, harmlessly, while the
		// other end's files remain.
		os.Remove(store.root)
		if created || !*listen {
			os.Remove(abs)
		}
	}()
	ev, err := evunix.Open(abs, self)
	if err != nil {
		return err
	}
	defer ev.Shutdown()
	mem, err := gntunix.Open(abs, self, 0)
	if err != nil {
		return err
	}
	defer mem.Shutdown()

	cfg := vchan.Config{Events: ev, Memory: mem, Store: store, Remote: other, Self: self,
		ReadMin: int(readMin), WriteMin: int(writeMin)}
	conn, err := connect(ctx, cfg, *listen, port, func() {
		fmt.Fprintf(stderr, "vchancat: listening; connect with:\nvchancat -dir %s -id %d -peer %d %s\n", abs, other, self, port)
	})
	if err != nil {
		return err
	}
	return pipe(conn, stdin, stdout, *noStdin)
}

// peerSet reports whether -peer was given (domain 0 is a valid peer).
func peerSet(fs *flag.FlagSet) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == "peer" })
	return set
}

// connect serves (listen) or dials the channel port between cfg.Self and
// cfg.Remote at libxenvchan's path; listening calls it once the
// channel is published.
func connect(ctx context.Context, cfg vchan.Config, listen bool, port string, listening func()) (*vchan.Conn, error) {
	if !listen {
		cfg.Path = vchan.Path(cfg.Remote, cfg.Self, port)
		return vchan.Dial(ctx, cfg)
	}
	cfg.Path = vchan.ServerPath(cfg.Remote, port)
	l, err := vchan.Listen(ctx, cfg)
	if err != nil {
		return nil, err
	}
	listening()
	conn, err := l.Accept(ctx)
	if err != nil {
		l.Close()
		return nil, err
	}
	return conn, nil
}

// defaultRing is the listener's default size for both rings: 256 KiB, rings
// for bulk data (see the package comment for what the sizes cost).
const defaultRing = 256 << 10

// sizeFlag is a ring size in bytes, written as a number with an optional
// suffix K (KiB) or M (MiB).
type sizeFlag int

// String returns the size in the shortest form Set reads back.
func (f *sizeFlag) String() string {
	switch n := int(*f); {
	case n != 0 && n%(1<<20) == 0:
		return strconv.Itoa(n>>20) + "M"
	case n != 0 && n%(1<<10) == 0:
		return strconv.Itoa(n>>10) + "K"
	default:
		return strconv.Itoa(n)
	}
}

// Set parses a size: digits, then optionally K or M.
func (f *sizeFlag) Set(s string) error {
	mul, num := 1, s
	switch {
	case strings.HasSuffix(s, "K"):
		mul, num = 1<<10, strings.TrimSuffix(s, "K")
	case strings.HasSuffix(s, "M"):
		mul, num = 1<<20, strings.TrimSuffix(s, "M")
	}
	n, err := strconv.Atoi(num)
	if err != nil || n < 0 {
		return fmt.Errorf("ring size %q: want bytes, or a number with K or M", s)
	}
	if n > vchan.MaxRingSize/mul {
		return fmt.Errorf("ring size %q: more than the largest ring, %d bytes", s, vchan.MaxRingSize)
	}
	*f = sizeFlag(n * mul)
	return nil
}

// firstUse is the time of the first I/O of -v's counters: the rate leaves
// out the wait for the peer.
type firstUse struct {
	once sync.Once
	at   time.Time
}

func (f *firstUse) mark() { f.once.Do(func() { f.at = time.Now() }) }

func (f *firstUse) since() time.Duration {
	f.mark()
	return time.Since(f.at)
}

// counter counts the bytes read from r or written to w.
type counter struct {
	r     io.Reader
	w     io.Writer
	n     atomic.Int64
	clock *firstUse
}

func (c *counter) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	if n > 0 {
		c.clock.mark()
	}
	c.n.Add(int64(n))
	return n, err
}

func (c *counter) Write(p []byte) (int, error) {
	c.clock.mark()
	n, err := c.w.Write(p)
	c.n.Add(int64(n))
	return n, err
}

// copyChunk is the size of pipe's reads and writes: 64 KiB, as
// libxenvchan's tools use (io.Copy's 32 KiB doubles the notifications).
const copyChunk = 64 << 10

// onlyReader and onlyWriter hide ReaderFrom and WriterTo, so that
// io.CopyBuffer uses its buffer.
type (
	onlyReader struct{ io.Reader }
	onlyWriter struct{ io.Writer }
)

// zeroSource reads as left zero bytes, then EOF: -zero's stand-in for
// stdin. Its reads never block, so SendFrom may read it straight into the
// ring.
type zeroSource struct{ left int64 }

func (z *zeroSource) Read(p []byte) (int, error) {
	if z.left <= 0 {
		return 0, io.EOF
	}
	n := int(min(int64(len(p)), z.left))
	clear(p[:n])
	z.left -= int64(n)
	return n, nil
}

// sendSource returns what SendFrom should read stdin through, and
// whether stdin (or the reader a counter counts) is a regular file, whose
// reads never block for long; a file in memory is read with raw system
// calls (fastReader).
func sendSource(r io.Reader) (io.Reader, bool) {
	c, counted := r.(*counter)
	if counted {
		r = c.r
	}
	if _, ok := r.(*zeroSource); ok {
		if counted {
			return c, true
		}
		return r, true
	}
	f, ok := r.(*os.File)
	if !ok {
		return nil, false
	}
	if fi, err := f.Stat(); err != nil || !fi.Mode().IsRegular() {
		return nil, false
	}
	if counted {
		c.r = fastReader(f)
		return c, true
	}
	return fastReader(f), true
}

// recvSink returns stdout (or the counter counting it) writing to a
// memory file or /dev/null with raw system calls (fastWriter).
func recvSink(w io.Writer) io.Writer {
	c, counted := w.(*counter)
	if counted {
		w = c.w
	}
	f, ok := w.(*os.File)
	if !ok {
		if counted {
			return c
		}
		return w
	}
	if counted {
		c.w = fastWriter(f)
		return c
	}
	return fastWriter(f)
}

// pipe copies in both directions until the peer has closed and its data is
// out, then closes the channel.
func pipe(conn *vchan.Conn, stdin io.Reader, stdout io.Writer, noStdin bool) error {
	inErr := make(chan error, 1)
	if !noStdin {
		go func() {
			var err error
			if src, ok := sendSource(stdin); ok {
				// Read straight into the ring: a copy fewer.
				_, err = conn.SendFrom(src)
			} else {
				// A pipe or terminal may block for ever, and SendFrom
				// would hold off Close meanwhile: copy through a buffer.
				_, err = io.CopyBuffer(conn, onlyReader{stdin}, make([]byte, copyChunk))
			}
			if err == nil {
				err = conn.CloseWrite()
			}
			inErr <- err
		}()
	}
	_, outErr := io.CopyBuffer(onlyWriter{recvSink(stdout)}, conn, make([]byte, copyChunk))
	var errIn error
	if !noStdin {
		select {
		case errIn = <-inErr:
			if errors.Is(errIn, vchan.ErrPeerClosed) {
				errIn = nil // the peer left first: nothing more to say
			}
		case <-time.After(100 * time.Millisecond):
			// Still blocked on stdin; the peer is gone, so stop here.
		}
	}
	closeErr := conn.Close()
	if outErr != nil {
		return fmt.Errorf("receiving: %w", outErr)
	}
	if errIn != nil {
		return fmt.Errorf("sending: %w", errIn)
	}
	if closeErr != nil {
		return fmt.Errorf("closing: %w", closeErr)
	}
	return nil
}
