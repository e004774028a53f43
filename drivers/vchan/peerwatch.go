package vchan

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
)

// ErrPeerGone means the peer's domain went away without closing the
// channel (destroyed or crashed): its live flag still reads open, but its
// xenstore home /local/domain/<peer> is gone. It wraps ErrPeerClosed.
var ErrPeerGone = fmt.Errorf("%w: the peer's domain is gone", ErrPeerClosed)

// releaseDomain is xenstore's special watch path that fires when a domain
// dies.
const releaseDomain = "@releaseDomain"

// watchPeer notices a peer domain that dies without closing: a destroyed
// domain never writes its live flag and its event channel goes silent, so
// a blocked Read or Write would wait forever. When the store implements
// Watcher, it watches @releaseDomain and, at each event, reads the peer's
// home; once that is gone it marks the peer dead and wakes the waiters,
// which then fail with ErrPeerGone. A store that cannot tell (no Watcher,
// or the home is missing or unreadable from here at the start, as another
// domU's is to a domU) leaves the connection as it was. The watch ends with Close.
func (c *Conn) watchPeer() {
	w, ok := c.cfg.Store.(Watcher)
	if !ok {
		return
	}
	home := fmt.Sprintf("/local/domain/%d", c.cfg.Remote)
	ctx, cancel := context.WithCancel(context.Background())
	if _, err := c.cfg.Store.Read(ctx, home); err != nil {
		cancel() // no home to watch (a store without domains) or not ours to read
		return
	}
	ch, err := w.Watch(ctx, releaseDomain)
	if err != nil {
		cancel()
		return
	}
	c.stopWatch = cancel
	go func() {
		for range ch {
			_, err := c.cfg.Store.Read(ctx, home)
			if errors.Is(err, fs.ErrNotExist) && ctx.Err() == nil {
				c.peerDead.Store(true)
				c.rdl.Wake()
				c.wdl.Wake()
				cancel()
			}
		}
	}()
}
