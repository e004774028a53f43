package vchan

import (
	"bytes"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"sync"
	"testing"
	"time"
)

func TestChooseOrders(t *testing.T) {
	for _, tc := range []struct {
		rd, wr       int
		wantR, wantW int
		bad          bool
	}{
		{0, 0, 10, 11, false},
		{1024, 2048, 10, 11, false},
		{2048, 1024, 11, 10, false},
		{2048, 2048, 11, 12, false},
		{4096, 0, 12, 11, false},
		{0, 4096, 11, 12, false},
		{4097, 5000, 13, 13, false},
		{1 << 16, 1 << 16, 16, 16, false},
		{MaxRingSize, MaxRingSize, 20, 20, false},
		{MaxRingSize + 1, 0, 0, 0, true},
		{-1, 0, 0, 0, true},
	} {
		r, w, err := chooseOrders(tc.rd, tc.wr)
		if (err != nil) != tc.bad || (!tc.bad && (r != tc.wantR || w != tc.wantW)) {
			t.Errorf("chooseOrders(%d, %d) = %d, %d, %v; want %d, %d, bad=%v", tc.rd, tc.wr, r, w, err, tc.wantR, tc.wantW, tc.bad)
		}
		if err == nil {
			if err := validOrders(r, w); err != nil {
				t.Errorf("chooseOrders(%d, %d) = %d, %d, which the client rejects: %v", tc.rd, tc.wr, r, w, err)
			}
		}
	}
}

func TestValidOrders(t *testing.T) {
	for _, tc := range []struct {
		l, r int
		ok   bool
	}{
		{10, 11, true}, {11, 10, true}, {12, 12, true}, {20, 20, true}, {20, 11, true}, {11, 20, true},
		{10, 10, false}, {11, 11, false}, {9, 11, false}, {10, 21, false}, {0, 0, false}, {65535, 12, false},
		{20, 10, false}, // 256 grants run into the ring at offset 1024
		{10, 20, false},
		{19, 10, true}, // 128 grants end at 536
	} {
		err := validOrders(tc.l, tc.r)
		if (err == nil) != tc.ok || (err != nil && !isProtocol(err)) {
			t.Errorf("validOrders(%d, %d) = %v, want ok=%v", tc.l, tc.r, err, tc.ok)
		}
	}
}

// ringSizes gives each ring order pair under test: read and write minimum
// sizes for the server, and the orders they should produce.
var ringSizes = []struct {
	name     string
	rd, wr   int
	rdO, wrO int
}{
	{"10-11", 0, 0, 10, 11},
	{"11-10", 2048, 1024, 11, 10},
	{"12-12", 4096, 4096, 12, 12},
	{"13-11", 8192, 100, 13, 11},
	{"16-16", 1 << 16, 1 << 16, 16, 16},
	{"20-13", 1 << 20, 1 << 13, 20, 13},
}

// pump sends n pseudo-random bytes in chunks of varying size (so that
// writes wrap the ring at every offset) and returns their checksum.
func pump(w io.Writer, n int64, seed uint64) (uint32, error) {
	rng := rand.New(rand.NewPCG(seed, 1))
	var key [32]byte
	key[0] = byte(seed)
	data := rand.NewChaCha8(key)
	buf := make([]byte, 1<<16)
	var sum uint32
	for n > 0 {
		k := int64(1 + rng.IntN(len(buf)))
		if k > n {
			k = n
		}
		b := buf[:k]
		data.Read(b)
		sum = crc32.Update(sum, crc32.IEEETable, b)
		if _, err := w.Write(b); err != nil {
			return sum, err
		}
		n -= k
	}
	return sum, nil
}

// drain reads to EOF in chunks of varying size and returns the checksum and
// count.
func drain(r io.Reader, seed uint64) (uint32, int64, error) {
	rng := rand.New(rand.NewPCG(seed, 2))
	buf := make([]byte, 1<<16)
	var sum uint32
	var n int64
	for {
		k, err := r.Read(buf[:1+rng.IntN(len(buf))])
		sum = crc32.Update(sum, crc32.IEEETable, buf[:k])
		n += int64(k)
		if err == io.EOF {
			return sum, n, nil
		}
		if err != nil {
			return sum, n, err
		}
	}
}

// drainN reads exactly n bytes in chunks of varying size and returns
// their checksum.
func drainN(r io.Reader, n int64, seed uint64) (uint32, error) {
	rng := rand.New(rand.NewPCG(seed, 2))
	buf := make([]byte, 1<<16)
	var sum uint32
	for n > 0 {
		k := int64(1 + rng.IntN(len(buf)))
		k = min(k, n)
		m, err := r.Read(buf[:k])
		sum = crc32.Update(sum, crc32.IEEETable, buf[:m])
		n -= int64(m)
		if err != nil {
			return sum, fmt.Errorf("%d bytes short: %w", n, err)
		}
	}
	return sum, nil
}

func TestRingOrders(t *testing.T) {
	for _, rs := range ringSizes {
		t.Run(rs.name, func(t *testing.T) {
			r := newRig(t, rs.rd, rs.wr)
			srv, cli := r.pair(t)
			if srv.rd.size != 1<<rs.rdO || srv.wr.size != 1<<rs.wrO || cli.wr.size != srv.rd.size || cli.rd.size != srv.wr.size {
				t.Fatalf("ring sizes: server read %d write %d, client read %d write %d; want orders %d, %d",
					srv.rd.size, srv.wr.size, cli.rd.size, cli.wr.size, rs.rdO, rs.wrO)
			}
			// Both ways at once, several ring turns each way.
			n := int64(5*(1<<max(rs.rdO, rs.wrO)) + 12345)
			var wg sync.WaitGroup
			var sums [4]uint32
			var errs [4]error
			wg.Add(4)
			go func() { defer wg.Done(); sums[0], errs[0] = pump(srv, n, 10) }()
			go func() { defer wg.Done(); sums[1], errs[1] = pump(cli, n, 11) }()
			go func() { defer wg.Done(); sums[2], errs[2] = drainN(cli, n, 12) }()
			go func() { defer wg.Done(); sums[3], errs[3] = drainN(srv, n, 13) }()
			wg.Wait()
			for i, err := range errs {
				if err != nil {
					t.Errorf("goroutine %d: %v", i, err)
				}
			}
			if sums[2] != sums[0] {
				t.Errorf("server->client: crc %08x, want %08x", sums[2], sums[0])
			}
			if sums[3] != sums[1] {
				t.Errorf("client->server: crc %08x, want %08x", sums[3], sums[1])
			}
			closeBoth(t, srv, cli)
			r.leftovers(t)
		})
	}
}

func TestWrapExact(t *testing.T) {
	// Messages of 1 KiB-1 through a 1 KiB ring land at every offset.
	r := newRig(t, 0, 0)
	srv, cli := r.pair(t)
	msg := make([]byte, 1023)
	got := make([]byte, 1023)
	for i := range 50 {
		for j := range msg {
			msg[j] = byte(i + j)
		}
		if _, err := cli.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(srv, got); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(msg, got) {
			t.Fatalf("message %d corrupted", i)
		}
	}
	closeBoth(t, srv, cli)
	r.leftovers(t)
}

func TestBigTransfer(t *testing.T) {
	if testing.Short() {
		t.Skip("1 GiB transfer skipped in -short mode")
	}
	r := newRig(t, 1<<16, 1<<16)
	srv, cli := r.pair(t)
	const n = 1 << 30
	start := time.Now()
	var sent uint32
	var werr error
	done := make(chan struct{})
	go func() {
		defer close(done)
		sent, werr = pump(cli, n, 99)
		cli.CloseWrite()
	}()
	got, cnt, rerr := drain(srv, 98)
	<-done
	if werr != nil || rerr != nil {
		t.Fatalf("write: %v, read: %v", werr, rerr)
	}
	if cnt != n || got != sent {
		t.Fatalf("got %d bytes crc %08x, want %d crc %08x", cnt, got, n, sent)
	}
	t.Logf("1 GiB in %v (%.0f MB/s, including random data generation)", time.Since(start), n/time.Since(start).Seconds()/1e6)
	closeBoth(t, srv, cli)
	r.leftovers(t)
}

func TestCloseOrders(t *testing.T) {
	for _, first := range []string{"client", "server"} {
		t.Run(first+"-first", func(t *testing.T) {
			r := newRig(t, 4096, 4096)
			srv, cli := r.pair(t)
			a, b := cli, srv
			if first == "server" {
				a, b = srv, cli
			}
			if _, err := a.Write([]byte("last words")); err != nil {
				t.Fatal(err)
			}
			closed := make(chan error, 1)
			go func() { closed <- a.Close() }()
			got, err := io.ReadAll(b)
			if err != nil || string(got) != "last words" {
				t.Fatalf("ReadAll after peer close = %q, %v; want the last words and EOF", got, err)
			}
			if _, err := b.Read(make([]byte, 1)); err != io.EOF {
				t.Errorf("second Read after EOF: %v, want io.EOF", err)
			}
			if _, err := b.Write([]byte("x")); !errors.Is(err, ErrPeerClosed) {
				t.Errorf("Write after peer close: %v, want ErrPeerClosed", err)
			}
			if err := b.Close(); err != nil {
				t.Errorf("%s Close: %v", b.role(), err)
			}
			if err := <-closed; err != nil {
				t.Errorf("%s Close: %v", a.role(), err)
			}
			if err := a.Close(); err != nil {
				t.Errorf("second Close: %v", err)
			}
			if _, err := a.Read(make([]byte, 1)); !errors.Is(err, net.ErrClosed) {
				t.Errorf("Read after Close: %v, want net.ErrClosed", err)
			}
			r.leftovers(t)
		})
	}
}

func TestCloseWakesBlocked(t *testing.T) {
	r := newRig(t, 0, 0)
	srv, cli := r.pair(t)
	errc := make(chan error, 2)
	go func() { _, err := srv.Read(make([]byte, 10)); errc <- err }()
	go func() { _, err := srv.Write(make([]byte, 100000)); errc <- err }()
	time.Sleep(20 * time.Millisecond)
	cliClosed := make(chan error, 1)
	go func() {
		// The client must unmap for the server's Close to finish.
		time.Sleep(20 * time.Millisecond)
		cliClosed <- cli.Close()
	}()
	if err := srv.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := <-cliClosed; err != nil {
		t.Errorf("client Close: %v", err)
	}
	for range 2 {
		select {
		case err := <-errc:
			if !errors.Is(err, net.ErrClosed) {
				t.Errorf("blocked call returned %v, want net.ErrClosed", err)
			}
		case <-time.After(time.Second):
			t.Fatal("blocked call not woken by Close")
		}
	}
	r.leftovers(t)
}

func TestDeadlines(t *testing.T) {
	r := newRig(t, 0, 0)
	srv, cli := r.pair(t)
	defer r.leftovers(t)
	defer closeBoth(t, srv, cli)

	cli.SetReadDeadline(time.Now().Add(30 * time.Millisecond))
	start := time.Now()
	_, err := cli.Read(make([]byte, 1))
	var ne net.Error
	if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() {
		t.Fatalf("Read past deadline: %v, want a timeout", err)
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("deadline fired after %v", d)
	}
	// An expired deadline fails at once, even with data waiting.
	srv.Write([]byte("hi"))
	if _, err := cli.Read(make([]byte, 1)); !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("Read with expired deadline: %v", err)
	}
	cli.SetReadDeadline(time.Time{})
	if b := make([]byte, 2); func() error { _, err := io.ReadFull(cli, b); return err }() != nil || string(b) != "hi" {
		t.Errorf("Read after clearing deadline failed")
	}

	// A blocked Write times out; extending the deadline while blocked
	// lets it go on.
	srv.SetWriteDeadline(time.Now().Add(20 * time.Millisecond))
	n, err := srv.Write(make([]byte, 5000))
	if !errors.Is(err, os.ErrDeadlineExceeded) || n != 2048 {
		t.Errorf("Write into full ring = %d, %v; want 2048, timeout", n, err)
	}
	srv.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
	wdone := make(chan error, 1)
	go func() { _, err := srv.Write(make([]byte, 100)); wdone <- err }()
	time.Sleep(10 * time.Millisecond)
	srv.SetWriteDeadline(time.Time{})
	time.Sleep(100 * time.Millisecond) // past the old deadline
	cli.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(cli, make([]byte, 2048)); err != nil {
		t.Fatalf("draining the ring: %v", err)
	}
	if err := <-wdone; err != nil {
		t.Errorf("Write after deadline cleared while blocked: %v", err)
	}
	if _, err := io.ReadFull(cli, make([]byte, 100)); err != nil {
		t.Errorf("reading the late write: %v", err)
	}
}

func TestCloseWrite(t *testing.T) {
	r := newRig(t, 0, 0)
	srv, cli := r.pair(t)
	srv.Write([]byte("reply"))
	cli.Write([]byte("request"))
	if err := cli.CloseWrite(); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
		t.Errorf("Write after CloseWrite: %v", err)
	}
	got, err := io.ReadAll(srv)
	if err != nil || string(got) != "request" {
		t.Errorf("server ReadAll = %q, %v", got, err)
	}
	b := make([]byte, 5)
	if _, err := io.ReadFull(cli, b); err != nil || string(b) != "reply" {
		t.Errorf("client read after CloseWrite = %q, %v", b, err)
	}
	closeBoth(t, srv, cli)
	r.leftovers(t)
}

func TestDialWaitsForServer(t *testing.T) {
	r := newRig(t, 0, 0)
	ctx := ctxT(t)
	type dialed struct {
		c   *Conn
		err error
	}
	dc := make(chan dialed, 1)
	go func() { c, err := Dial(ctx, r.cliCfg); dc <- dialed{c, err} }()
	time.Sleep(20 * time.Millisecond)
	l, err := Listen(ctx, r.srvCfg)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := l.Accept(ctx)
	if err != nil {
		t.Fatal(err)
	}
	d := <-dc
	if d.err != nil {
		t.Fatal(d.err)
	}
	if a := d.c.RemoteAddr(); a.Network() != "vchan" || a.String() != fmt.Sprintf("1:%s", r.cliCfg.Path) {
		t.Errorf("RemoteAddr = %v", a)
	}
	closeBoth(t, srv, d.c)
	r.leftovers(t)
}

func TestListenerCloseUnaccepted(t *testing.T) {
	r := newRig(t, 1<<14, 1<<13)
	l, err := Listen(ctxT(t), r.srvCfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := Dial(ctxT(t), Config{Events: r.cliEv, Memory: r.cliMem, Store: noWatch{r.store}, Remote: srvDom, Path: r.cliCfg.Path}); err == nil {
		t.Error("Dial to a closed listener succeeded")
	}
	r.leftovers(t)
}

// noWatch hides the MemStore's Watcher.
type noWatch struct{ Store }

func TestListenerCloseEndsAccept(t *testing.T) {
	r := newRig(t, 0, 0)
	l, err := Listen(ctxT(t), r.srvCfg)
	if err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { _, err := l.Accept(ctxT(t)); errc <- err }()
	time.Sleep(10 * time.Millisecond)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) {
			t.Errorf("Accept after Close: %v, want net.ErrClosed", err)
		}
	case <-time.After(time.Second):
		t.Fatal("Close did not end Accept")
	}
	r.leftovers(t)
}

var _ net.Conn = (*Conn)(nil)

// chunky reads at most max bytes per Read from r, and fails with fail
// once it has delivered failAt bytes (if failAt > 0).
type chunky struct {
	r      io.Reader
	max    int
	n      int
	failAt int
	fail   error
}

func (c *chunky) Read(p []byte) (int, error) {
	if c.failAt > 0 && c.n >= c.failAt {
		return 0, c.fail
	}
	p = p[:min(len(p), c.max)]
	if c.failAt > 0 {
		p = p[:min(len(p), c.failAt-c.n)]
	}
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

// TestSendFrom sends through Conn.SendFrom (reading into the ring in
// place) with readers of odd chunk sizes, across ring wraps, and checks
// the data, the count, a reader's error, and an over-long read count.
func TestSendFrom(t *testing.T) {
	data := make([]byte, 300_001)
	for i := range data {
		data[i] = byte(i * 7 / 3)
	}
	want := crc32.ChecksumIEEE(data)
	for _, chunk := range []int{1, 1000, 4095, 1 << 20} {
		t.Run(fmt.Sprint(chunk), func(t *testing.T) {
			r := newRig(t, 4096, 4096)
			srv, cli := r.pair(t)
			done := make(chan error, 1)
			var n int64
			go func() {
				var err error
				n, err = cli.SendFrom(&chunky{r: bytes.NewReader(data), max: chunk})
				if err == nil {
					err = cli.CloseWrite()
				}
				done <- err
			}()
			got, cnt, err := drain(srv, 5)
			if werr := <-done; werr != nil || err != nil {
				t.Fatalf("SendFrom: %v; reading: %v", werr, err)
			}
			if n != int64(len(data)) || cnt != n || got != want {
				t.Fatalf("SendFrom sent %d, received %d crc %08x; want %d crc %08x", n, cnt, got, len(data), want)
			}
			closeBoth(t, srv, cli)
			r.leftovers(t)
		})
	}
	t.Run("reader error", func(t *testing.T) {
		r := newRig(t, 4096, 4096)
		srv, cli := r.pair(t)
		boom := errors.New("boom")
		go io.Copy(io.Discard, srv)
		n, err := cli.SendFrom(&chunky{r: bytes.NewReader(data), max: 777, failAt: 10_000, fail: boom})
		if n != 10_000 || !errors.Is(err, boom) {
			t.Errorf("SendFrom: %d, %v; want 10000 and boom", n, err)
		}
		if n, err := cli.SendFrom(badCount{}); n != 0 || err == nil {
			t.Errorf("SendFrom of a reader claiming too much: %d, %v; want an error", n, err)
		}
		closeBoth(t, srv, cli)
		r.leftovers(t)
	})
}

// badCount claims to have read more than it was given.
type badCount struct{}

func (badCount) Read(p []byte) (int, error) { return len(p) + 1, nil }
