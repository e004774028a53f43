package vchan

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"strconv"
	"strings"

	"github.com/gozen-dev/gozen/evtchn"
	"github.com/gozen-dev/gozen/gnttab"
)

// Dial connects to the vchan server domain cfg.Remote advertises under
// cfg.Path, as libxenvchan_client_init does: it reads ring-ref and
// event-channel, binds the event channel, maps and validates the control
// page, maps the rings, marks itself live and wakes the server. If the
// nodes do not exist (or are not readable) yet and cfg.Store implements
// Watcher, Dial waits for them until ctx ends; otherwise it fails with an
// error wrapping fs.ErrNotExist (or fs.ErrPermission).
func Dial(ctx context.Context, cfg Config) (*Conn, error) {
	if cfg.Events == nil || cfg.Memory == nil || cfg.Store == nil {
		return nil, errors.New("vchan: dial: Config needs Events, Memory and Store")
	}
	ref, remotePort, err := readAdvert(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("vchan: dial %s: %w", cfg.Path, err)
	}
	c := newConn(cfg, false, shared{})
	ok := false
	defer func() {
		if !ok {
			c.releaseSetup()
		}
	}()
	port, err := cfg.Events.BindInterdomain(cfg.Remote, remotePort)
	if err != nil {
		return nil, fmt.Errorf("vchan: dial: bind port %d of domain %d: %w", remotePort, cfg.Remote, err)
	}
	c.bind(port)
	if c.ctrlMap, err = cfg.Memory.Map(cfg.Remote, []gnttab.Ref{ref}, true); err != nil {
		return nil, fmt.Errorf("vchan: dial: map control page %d: %w", ref, err)
	}
	if c.sh, err = newShared(c.ctrlMap.Buf); err != nil {
		return nil, fmt.Errorf("vchan: dial: %w", err)
	}
	l, err := readLayout(c.sh)
	if err != nil {
		return nil, fmt.Errorf("vchan: dial: %w", err)
	}
	ring := func(order int, refs []gnttab.Ref, writable bool) ([]byte, *gnttab.Mapping, error) {
		if off, in := inPageOffset(order); in {
			return c.sh.b[off:], nil, nil
		}
		m, err := cfg.Memory.Map(cfg.Remote, refs, writable)
		if err != nil {
			return nil, nil, fmt.Errorf("vchan: dial: map %d ring pages: %w", len(refs), err)
		}
		if len(m.Buf) < 1<<order {
			return nil, m, fmt.Errorf("vchan: dial: mapping of %d pages is %d bytes", len(refs), len(m.Buf))
		}
		return m.Buf, m, nil
	}
	// Left is the client's write ring, right its read ring.
	wrBuf, wrMap, err := ring(l.leftOrder, l.leftGrants, true)
	c.wrMap = wrMap
	if err != nil {
		return nil, err
	}
	rdBuf, rdMap, err := ring(l.rightOrder, l.rightGrants, false)
	c.rdMap = rdMap
	if err != nil {
		return nil, err
	}
	c.wr = newRingView(wrBuf, l.leftOrder, offLeftProd, offLeftCons)
	c.rd = newRingView(rdBuf, l.rightOrder, offRightProd, offRightCons)
	// The indexes may not start at zero; take the server's word for where
	// they are, then check them on every use as always.
	c.wprod = c.sh.load(offLeftProd)
	c.rcons = c.sh.load(offRightCons)
	if _, err := c.writable(); err != nil {
		return nil, fmt.Errorf("vchan: dial: %w", err)
	}
	if _, err := c.readable(); err != nil {
		return nil, fmt.Errorf("vchan: dial: %w", err)
	}
	srv, err := liveState("server", c.sh.flag(flagSrvLive))
	if err != nil {
		return nil, fmt.Errorf("vchan: dial: %w", err)
	}
	if srv != liveOpen {
		return nil, fmt.Errorf("vchan: dial: server live state is %d: %w", srv, ErrPeerClosed)
	}
	c.sh.setFlag(flagCliLive, liveOpen)
	c.sh.setFlag(flagSrvNotify, notifyWrite)
	if err := c.notify(); err != nil {
		return nil, fmt.Errorf("vchan: dial: wake server: %w", err)
	}
	ok = true
	c.watchPeer()
	return c, nil
}

// readAdvert reads the server's ring-ref and event-channel nodes, waiting
// for them if the store can watch.
func readAdvert(ctx context.Context, cfg Config) (gnttab.Ref, evtchn.Port, error) {
	ref, port, err := tryAdvert(ctx, cfg.Store, cfg.Path)
	w, ok := cfg.Store.(Watcher)
	if err == nil || !ok || !notYet(err) {
		return ref, port, err
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ch, werr := w.Watch(wctx, cfg.Path)
	if werr != nil {
		return 0, 0, fmt.Errorf("watch: %w (after %w)", werr, err)
	}
	for range ch {
		ref, port, err = tryAdvert(ctx, cfg.Store, cfg.Path)
		if err == nil || !notYet(err) {
			return ref, port, err
		}
	}
	return 0, 0, fmt.Errorf("%w (waiting: %w)", err, ctx.Err())
}

// notYet reports whether a read of the advertisement may succeed later:
// the nodes do not exist yet, or (with a server that writes a node before
// setting its permissions) are not yet readable.
func notYet(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, fs.ErrPermission)
}

func tryAdvert(ctx context.Context, st Store, path string) (gnttab.Ref, evtchn.Port, error) {
	rs, err := st.Read(ctx, path+"/ring-ref")
	if err != nil {
		return 0, 0, err
	}
	ps, err := st.Read(ctx, path+"/event-channel")
	if err != nil {
		return 0, 0, err
	}
	ref, err := strconv.ParseUint(strings.TrimSpace(rs), 10, 32)
	if err != nil {
		return 0, 0, fmt.Errorf("%w: bad ring-ref %q", ErrProtocol, rs)
	}
	port, err := strconv.ParseUint(strings.TrimSpace(ps), 10, 32)
	if err != nil {
		return 0, 0, fmt.Errorf("%w: bad event-channel %q", ErrProtocol, ps)
	}
	return gnttab.Ref(ref), evtchn.Port(port), nil
}
