//go:build tamago

// Command vchansession is the vchan test program of the guest tests
// (qemu/vchan_test.go, v4v_test.go, stress_test.go): a vchan endpoint in a
// Gozen domain, compatible with libxenvchan, that runs a list of sessions
// as server or client and reports each one. apps/vchan-echo is the short
// example a user would copy; this is the engine the tests drive.
//
//	vchansession -listen -peer CLIENT [-port P] [-read N -write N]   serve CLIENT, echo until EOF
//	vchansession -dial -peer SERVER [-port P]                         connect to SERVER, echo until EOF
//
// The peer is a domid, or "xs": wait until the toolstack writes the peer's
// domid to this domain's xenstore node data/vchan-peer. The xenstore path
// is the libxenvchan convention /local/domain/<server>/data/vchan/<client>/<port>.
//
// Data options replace echoing with the test stream of qemu/vchanpeer
// (internal/teststream: xorshift64, CRC-32 checked), so the two
// interoperate:
//
//	-send N      write N bytes of the stream of -seed
//	-recv N      read N bytes and check them against the stream of -rseed
//	             (default -seed); -send and -recv together run at once
//	-chunk N     bytes per Write/Read (default 64K)
//	-nocheck     move bytes without generating or checksumming them
//	-close first close as soon as the data is moved (the peer sees EOF)
//	-close eof   after the data, wait for the peer to close (default)
//	-expect E    the peer is hostile: the session must fail, with a
//	             protocol error (E=protocol) or any error (E=error)
//
// Sizes take the suffixes K and M. Several sessions run one after the
// other when the arguments are separated by "--"; every flag keeps its
// value in the sessions that follow unless given again.
//
// Output: once set up, "vchan-echo: ready domid=D sessions=N" (the line
// the dom0 scripts wait for; the prefix is the program's former name),
// then one line per event, "VCHAN key=value ...", with one PASS or FAIL
// line per session named session=S, in the guest tests' case-line format
// (see qemu/guest_test.go):
//
//	VCHAN session=S connected role=R peer=D path=P read_ring=B write_ring=B secs=T
//	VCHAN session=S sent=N crc=0x... secs=T MBps=M
//	VCHAN session=S recv=N crc=0x... expect=0x... ok=1 secs=T MBps=M
//	VCHAN session=S echoed=N
//	VCHAN session=S error=... protocol=1
//	VCHAN session=S teardown refused=K wait_ms=T background=0 xs_gone=1 grants=0 shares=0 mappings=0 ports=0 eof=1
//	VCHAN PASS session=S ... | VCHAN FAIL session=S reason
//	VCHAN DONE pass=N fail=M
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"hash/crc32"
	"io"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/gozen-dev/gozen/boot"
	"github.com/gozen-dev/gozen/domid"
	"github.com/gozen-dev/gozen/drivers/vchan"
	"github.com/gozen-dev/gozen/evtchn/evxen"
	"github.com/gozen-dev/gozen/gnttab"
	"github.com/gozen-dev/gozen/gnttab/gntxen"
	"github.com/gozen-dev/gozen/internal/teststream"
	"github.com/gozen-dev/gozen/platform"
	_ "github.com/gozen-dev/gozen/xenbus/control" // xl shutdown / xl reboot
)

// session is one vchan, from set-up to teardown.
type session struct {
	listen      bool
	peer        string
	port        string
	read, write size
	send, recv  size
	chunk       size
	seed, rseed uint64
	rseedSet    bool
	nocheck     bool
	close       string
	expect      string
	timeout     time.Duration
}

// size is a byte count flag with K/M/G suffixes.
type size int64

func (s *size) String() string { return strconv.FormatInt(int64(*s), 10) }

func (s *size) Set(v string) error {
	mul := int64(1)
	switch {
	case strings.HasSuffix(v, "K"), strings.HasSuffix(v, "k"):
		mul, v = 1<<10, v[:len(v)-1]
	case strings.HasSuffix(v, "M"), strings.HasSuffix(v, "m"):
		mul, v = 1<<20, v[:len(v)-1]
	case strings.HasSuffix(v, "G"), strings.HasSuffix(v, "g"):
		mul, v = 1<<30, v[:len(v)-1]
	}
	n, err := strconv.ParseInt(v, 0, 64)
	if err != nil || n < 0 {
		return fmt.Errorf("bad size %q", v)
	}
	*s = size(n * mul)
	return nil
}

// parse reads the sessions of args; each starts from the previous one.
func parse(args []string) ([]session, error) {
	cur := session{port: "0", chunk: 64 << 10, seed: 1, close: "eof", timeout: 120 * time.Second}
	var out []session
	for {
		end := len(args)
		for i, a := range args {
			if a == "--" {
				end = i
				break
			}
		}
		fs := flag.NewFlagSet("vchan-echo", flag.ContinueOnError)
		fs.BoolFunc("listen", "be the server", func(string) error { cur.listen = true; return nil })
		fs.BoolFunc("dial", "be the client", func(string) error { cur.listen = false; return nil })
		fs.StringVar(&cur.peer, "peer", cur.peer, "peer domid, or xs (read data/vchan-peer)")
		fs.StringVar(&cur.port, "port", cur.port, "vchan port (the last path element)")
		fs.Var(&cur.read, "read", "server: minimum read ring size")
		fs.Var(&cur.write, "write", "server: minimum write ring size")
		fs.Var(&cur.send, "send", "bytes of the stream to send")
		fs.Var(&cur.recv, "recv", "bytes of the stream to receive and check")
		fs.Var(&cur.chunk, "chunk", "bytes per Read/Write")
		fs.Uint64Var(&cur.seed, "seed", cur.seed, "seed of the stream sent")
		fs.Func("rseed", "seed of the stream received (default -seed)", func(v string) error {
			n, err := strconv.ParseUint(v, 0, 64)
			cur.rseed, cur.rseedSet = n, true
			return err
		})
		fs.BoolVar(&cur.nocheck, "nocheck", cur.nocheck, "no stream generation or checksums")
		fs.StringVar(&cur.close, "close", cur.close, "first: close after the data; eof: wait for the peer's EOF")
		fs.StringVar(&cur.expect, "expect", cur.expect, "hostile peer: protocol or error")
		fs.DurationVar(&cur.timeout, "timeout", cur.timeout, "session time limit")
		if err := fs.Parse(args[:end]); err != nil {
			return nil, err
		}
		if fs.NArg() > 0 {
			return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
		}
		if cur.peer == "" {
			return nil, errors.New("-peer is required")
		}
		if cur.chunk <= 0 {
			return nil, errors.New("-chunk must be positive")
		}
		out = append(out, cur)
		if end == len(args) {
			return out, nil
		}
		args = args[end+1:]
	}
}

var (
	self  domid.ID
	ev    *evxen.Events
	mem   *gntxen.Grants
	store *vchan.XenStore
	pass  int
	fail  int
	peers = map[string]domid.ID{}
)

func say(format string, args ...any) { fmt.Printf("VCHAN "+format+"\n", args...) }

func main() {
	sessions, err := parse(os.Args[1:])
	if err != nil {
		fmt.Println("vchan-echo:", err)
		os.Exit(2)
	}
	id, ok := boot.DomID()
	if !ok {
		fmt.Println("vchan-echo: domid unknown")
		os.Exit(1)
	}
	self = domid.ID(id)
	ev = platform.Domain().Events()
	if mem, err = platform.Domain().Grants(); err != nil {
		fmt.Println("vchan-echo: grant tables:", err)
		os.Exit(1)
	}
	xs, err := platform.Domain().Store()
	if err != nil {
		fmt.Println("vchan-echo: xenstore:", err)
		os.Exit(1)
	}
	store = vchan.NewXenStore(xs, self)
	fmt.Printf("vchan-echo: ready domid=%d sessions=%d\n", self, len(sessions))
	for i, s := range sessions {
		run(i+1, s)
	}
	say("DONE pass=%d fail=%d", pass, fail)
	if fail > 0 {
		os.Exit(1)
	}
}

// peerOf resolves a -peer value.
func peerOf(ctx context.Context, p string) (domid.ID, error) {
	if d, ok := peers[p]; ok {
		return d, nil
	}
	var v string
	if p == "xs" {
		xs, _ := platform.Domain().Store()
		err := xs.WaitFor(ctx, "data/vchan-peer", func() (bool, error) {
			s, err := xs.ReadString(ctx, "data/vchan-peer")
			if errors.Is(err, fs.ErrNotExist) {
				return false, nil
			}
			v = s
			return err == nil, err
		})
		if err != nil {
			return 0, fmt.Errorf("waiting for data/vchan-peer: %w", err)
		}
	} else {
		v = p
	}
	n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 16)
	if err != nil {
		return 0, fmt.Errorf("bad peer domid %q", v)
	}
	peers[p] = domid.ID(n)
	return domid.ID(n), nil
}

func mbps(n int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds() / 1e6
}

// result is what the data phase did.
type result struct {
	sent, recvd, echoed  int64
	sentCRC, recvCRC     uint32
	sendSecs, recvSecs   time.Duration
	sendErr, recvErr     error
	firstErr             error
	firstErrAt, dataFrom time.Time
	// Write and Read calls that blocked 10 ms or more, and the longest.
	sendSlow, recvSlow int
	sendMax, recvMax   time.Duration
}

// timed runs f and counts it when it took 10 ms or more.
func timed(slow *int, max *time.Duration, f func()) {
	t := time.Now()
	f()
	d := time.Since(t)
	if d >= 10*time.Millisecond {
		*slow++
	}
	if d > *max {
		*max = d
	}
}

func run(n int, s session) {
	failf := func(format string, args ...any) {
		fail++
		say("FAIL session=%d %s", n, fmt.Sprintf(format, args...))
	}
	ctx, cancel := context.WithTimeout(context.Background(), s.timeout)
	defer cancel()
	peer, err := peerOf(ctx, s.peer)
	if err != nil {
		failf("%v", err)
		return
	}
	baseG, basePorts := mem.Stats(), ev.Stats().Ports
	cfg := vchan.Config{Events: ev, Memory: mem, Store: store, Remote: peer, Self: self,
		ReadMin: int(s.read), WriteMin: int(s.write), CloseTimeout: 5 * time.Second}
	role := "client"
	start := time.Now()
	var conn *vchan.Conn
	if s.listen {
		role = "server"
		cfg.Path = vchan.ServerPath(peer, s.port)
		var l *vchan.Listener
		l, err = vchan.Listen(ctx, cfg)
		if err == nil {
			say("session=%d listening role=server peer=%d path=%s", n, peer, cfg.Path)
			if conn, err = l.Accept(ctx); err != nil {
				l.Close()
			}
		}
	} else {
		cfg.Path = vchan.Path(peer, self, s.port)
		conn, err = vchan.Dial(ctx, cfg)
	}
	if err != nil {
		say("session=%d error=setup protocol=%d msg=%q", n, b2i(errors.Is(err, vchan.ErrProtocol)), err.Error())
		if s.expect == "" || s.expect == "protocol" && !errors.Is(err, vchan.ErrProtocol) {
			failf("%s set-up: %v", role, err)
			return
		}
		if leftovers(n, baseG, basePorts, "", nil) {
			pass++
			say("PASS session=%d hostile peer refused at set-up, nothing left over: %v", n, err)
		} else {
			failf("leftovers after a refused set-up")
		}
		return
	}
	rs, ws := conn.RingSizes()
	say("session=%d connected role=%s peer=%d path=%s read_ring=%d write_ring=%d secs=%.3f",
		n, role, peer, cfg.Path, rs, ws, time.Since(start).Seconds())

	r := data(conn, s)
	if r.sendErr == nil && r.recvErr == nil && s.send > 0 {
		say("session=%d sent=%d crc=0x%08x secs=%.3f MBps=%.1f slow_writes=%d max_write_ms=%.1f", n, r.sent, r.sentCRC,
			r.sendSecs.Seconds(), mbps(r.sent, r.sendSecs), r.sendSlow, float64(r.sendMax.Microseconds())/1000)
	}
	okRecv := true
	if r.sendErr == nil && r.recvErr == nil && s.recv > 0 {
		var want uint32
		if !s.nocheck {
			seed := s.seed
			if s.rseedSet {
				seed = s.rseed
			}
			want = teststream.CRC(seed, int64(s.recv))
		}
		okRecv = r.recvd == int64(s.recv) && r.recvCRC == want
		say("session=%d recv=%d crc=0x%08x expect=0x%08x ok=%d secs=%.3f MBps=%.1f slow_reads=%d max_read_ms=%.1f", n,
			r.recvd, r.recvCRC, want, b2i(okRecv), r.recvSecs.Seconds(), mbps(r.recvd, r.recvSecs), r.recvSlow,
			float64(r.recvMax.Microseconds())/1000)
	}
	if s.send == 0 && s.recv == 0 {
		say("session=%d echoed=%d", n, r.echoed)
	}
	dataErr := r.firstErr
	if dataErr != nil {
		say("session=%d error=data protocol=%d msg=%q", n, b2i(errors.Is(dataErr, vchan.ErrProtocol)), dataErr.Error())
	}

	// End of stream: wait for the peer's EOF, or close first.
	eof := -1
	if dataErr == nil && (s.close == "eof" || s.send == 0 && s.recv == 0) {
		eof = 0
		if s.send == 0 && s.recv == 0 {
			eof = 1 // echo ran until EOF
		} else {
			conn.SetReadDeadline(time.Now().Add(30 * time.Second))
			var b [512]byte
			k, err := conn.Read(b[:])
			if k == 0 && err == io.EOF {
				eof = 1
			} else {
				say("session=%d error=eof got=%d err=%q", n, k, fmt.Sprint(err))
			}
		}
	}
	closeErr := conn.Close()
	td := conn.Teardown()
	if closeErr != nil {
		say("session=%d error=close msg=%q", n, closeErr.Error())
	}
	// Close may leave revocation to the background; give it a moment.
	if td.Background {
		time.Sleep(3 * time.Second)
	}
	xsPath := ""
	if s.listen {
		xsPath = cfg.Path
	}
	clean := leftovers(n, baseG, basePorts, xsPath, &td, fmt.Sprintf("eof=%d", eof))

	switch {
	case s.expect != "":
		switch {
		case dataErr == nil:
			failf("the hostile peer went unnoticed")
		case s.expect == "protocol" && !errors.Is(dataErr, vchan.ErrProtocol):
			failf("want a protocol error, got %v", dataErr)
		case !clean:
			failf("teardown after the protocol error left something over")
		default:
			pass++
			say("PASS session=%d hostile peer detected and torn down cleanly: %v", n, dataErr)
		}
	case dataErr != nil:
		failf("%s data: %v", role, dataErr)
	case !okRecv:
		failf("received data does not match the stream")
	case eof == 0:
		failf("no EOF from the peer")
	case closeErr != nil && !td.Background:
		failf("close: %v", closeErr)
	case !clean:
		failf("teardown left something over")
	default:
		pass++
		say("PASS session=%d role=%s sent=%d recv=%d echoed=%d rings=%d/%d", n, role, r.sent, r.recvd, r.echoed, rs, ws)
	}
}

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

// leftovers prints the teardown line and reports whether the session
// left nothing behind: grants, shares, mappings, ports, xenstore nodes.
func leftovers(n int, baseG gnttab.Stats, basePorts int, xsPath string, td *vchan.Teardown, extra ...string) bool {
	g, ports := mem.Stats(), ev.Stats().Ports
	dg, ds, dm, dp := g.Grants-baseG.Grants, g.Shares-baseG.Shares, g.Mappings-baseG.Mappings, ports-basePorts
	xsGone := 1
	if xsPath != "" {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := store.Read(ctx, xsPath+"/ring-ref")
		_, err2 := store.Read(ctx, xsPath+"/event-channel")
		cancel()
		if !errors.Is(err, fs.ErrNotExist) || !errors.Is(err2, fs.ErrNotExist) {
			xsGone = 0
			// what the store said instead of "no such node"
			extra = append(extra, fmt.Sprintf("xs_ring_ref=%q xs_event_channel=%q", fmt.Sprint(err), fmt.Sprint(err2)))
		}
	}
	if td == nil {
		td = &vchan.Teardown{}
	}
	say("session=%d teardown refused=%d wait_ms=%d background=%d xs_gone=%d grants=%d shares=%d mappings=%d ports=%d %s",
		n, td.Refused, td.Waited.Milliseconds(), b2i(td.Background), xsGone, dg, ds, dm, dp, strings.Join(extra, " "))
	return dg == 0 && ds == 0 && dm == 0 && dp == 0 && xsGone == 1
}

// data runs the data modes of s on conn: send and receive at once, or
// echo until EOF. The first error closes the channel so the other
// direction stops too.
func data(conn *vchan.Conn, s session) *result {
	r := &result{}
	var mu sync.Mutex
	failed := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		if r.firstErr == nil {
			r.firstErr = err
			r.firstErrAt = time.Now()
			// wake the other direction
			conn.SetDeadline(time.Now())
		}
	}
	chunk := int(s.chunk)
	if s.send == 0 && s.recv == 0 {
		buf := make([]byte, chunk)
		for {
			k, err := conn.Read(buf)
			if k > 0 {
				if _, werr := conn.Write(buf[:k]); werr != nil {
					failed(werr)
					return r
				}
				r.echoed += int64(k)
			}
			if err == io.EOF {
				return r
			}
			if err != nil {
				failed(err)
				return r
			}
		}
	}
	var wg sync.WaitGroup
	if s.send > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, chunk)
			st := teststream.New(s.seed)
			if s.nocheck {
				st.Fill(buf)
			}
			left := int64(s.send)
			var t0 time.Time
			for left > 0 {
				k := min(left, int64(chunk))
				if !s.nocheck {
					st.Fill(buf[:k])
					r.sentCRC = crc32.Update(r.sentCRC, crc32.IEEETable, buf[:k])
				}
				if t0.IsZero() {
					t0 = time.Now()
				}
				var m int
				var err error
				timed(&r.sendSlow, &r.sendMax, func() { m, err = conn.Write(buf[:k]) })
				r.sent += int64(m)
				if err != nil {
					r.sendErr = err
					failed(err)
					return
				}
				left -= k
			}
			r.sendSecs = time.Since(t0)
		}()
	}
	if s.recv > 0 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			buf := make([]byte, chunk)
			left := int64(s.recv)
			var t0, t1 time.Time
			for left > 0 {
				var k int
				var err error
				timed(&r.recvSlow, &r.recvMax, func() { k, err = conn.Read(buf[:min(left, int64(chunk))]) })
				if k > 0 {
					t1 = time.Now()
					if t0.IsZero() {
						t0 = t1
					}
					if !s.nocheck {
						r.recvCRC = crc32.Update(r.recvCRC, crc32.IEEETable, buf[:k])
					}
					r.recvd += int64(k)
					left -= int64(k)
				}
				if err != nil && left > 0 {
					if err == io.EOF {
						err = fmt.Errorf("early EOF after %d bytes: %w", r.recvd, err)
					}
					r.recvErr = err
					failed(err)
					return
				}
			}
			r.recvSecs = t1.Sub(t0)
		}()
	}
	wg.Wait()
	if r.firstErr == nil {
		conn.SetDeadline(time.Time{})
	}
	return r
}
