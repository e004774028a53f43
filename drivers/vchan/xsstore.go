package vchan

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"time"

	"github.com/gozen-dev/gozen/domid"
	"github.com/gozen-dev/gozen/xenbus"
	"github.com/gozen-dev/gozen/xenbus/wire"
)

// PermWriter is implemented by stores with access control, such as
// xenstore. When the server's store implements it, Listen writes the
// ring-ref and event-channel nodes with WriteReadableBy, so that, as with
// libxenvchan, the nodes appear already readable by the client domain and
// by no other domain.
type PermWriter interface {
	// WriteReadableBy creates or replaces the node at path, owned by the
	// writer and readable by domain reader only, atomically.
	WriteReadableBy(ctx context.Context, path, value string, reader domid.ID) error
}

// XenStore adapts a xenstore client to [Store], [Watcher] and
// [PermWriter]: a guest passes NewXenStore with the client of
// platform.Domain().Store() as Config.Store.
type XenStore struct {
	c    *xenbus.Client
	self domid.ID
}

var (
	_ Store      = (*XenStore)(nil)
	_ Watcher    = (*XenStore)(nil)
	_ PermWriter = (*XenStore)(nil)
)

// NewXenStore returns the adapter for client c of domain self (the owner
// of the nodes the adapter writes with WriteReadableBy).
func NewXenStore(c *xenbus.Client, self domid.ID) *XenStore {
	return &XenStore{c: c, self: self}
}

// Read implements [Store]; a missing node is an error wrapping
// fs.ErrNotExist.
func (s *XenStore) Read(ctx context.Context, path string) (string, error) {
	return s.c.ReadString(ctx, path)
}

// Write implements [Store].
func (s *XenStore) Write(ctx context.Context, path, value string) error {
	return s.c.WriteString(ctx, path, value)
}

// Rm implements [Store]; removing a missing node succeeds.
func (s *XenStore) Rm(ctx context.Context, path string) error {
	if err := s.c.Rm(ctx, path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// WriteReadableBy implements [PermWriter]: in one transaction it writes the
// node and sets its permissions to "owner self, others none, reader may
// read", as libxenvchan's server does.
func (s *XenStore) WriteReadableBy(ctx context.Context, path, value string, reader domid.ID) error {
	perms := []wire.Perm{{Dom: s.self, Access: wire.AccessNone}}
	if reader != s.self {
		perms = append(perms, wire.Perm{Dom: reader, Access: wire.AccessRead})
	}
	return s.c.Transaction(ctx, func(tx *xenbus.Tx) error {
		if err := tx.WriteString(ctx, path, value); err != nil {
			return err
		}
		return tx.SetPerms(ctx, path, perms)
	})
}

// Watch implements [Watcher] with a xenstore watch on path, removed when
// ctx ends.
func (s *XenStore) Watch(ctx context.Context, path string) (<-chan struct{}, error) {
	w, err := s.c.Watch(ctx, path)
	if err != nil {
		return nil, fmt.Errorf("vchan: watch %s: %w", path, err)
	}
	out := make(chan struct{}, 1)
	go func() {
		defer close(out)
		defer func() {
			uctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			w.Unwatch(uctx)
			cancel()
		}()
		for {
			select {
			case <-ctx.Done():
				return
			case _, ok := <-w.Events():
				if !ok {
					return
				}
				select {
				case out <- struct{}{}:
				default:
				}
			}
		}
	}()
	return out, nil
}
