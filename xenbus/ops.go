package xenbus

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/gozen-dev/gozen/xenbus/wire"
)

// Ops are the node operations, available on a Client (outside any
// transaction) and on a Tx. Relative paths are relative to the client's
// home; errors from the store wrap the wire.Err* values (for example
// errors.Is(err, wire.ErrNotExist), or fs.ErrNotExist).
type Ops interface {
	// Read returns the value of a node.
	Read(ctx context.Context, path string) ([]byte, error)
	// ReadString returns the value of a node as a string.
	ReadString(ctx context.Context, path string) (string, error)
	// Write sets the value of a node, creating it and missing parents.
	Write(ctx context.Context, path string, value []byte) error
	// WriteString sets the value of a node to a string.
	WriteString(ctx context.Context, path, value string) error
	// Mkdir creates a node (and missing parents) if it does not exist.
	Mkdir(ctx context.Context, path string) error
	// Rm removes a node and all its children.
	Rm(ctx context.Context, path string) error
	// Directory lists the names of a node's children.
	Directory(ctx context.Context, path string) ([]string, error)
	// GetPerms returns a node's permissions, owner first.
	GetPerms(ctx context.Context, path string) ([]wire.Perm, error)
	// SetPerms replaces a node's permissions, owner first.
	SetPerms(ctx context.Context, path string, perms []wire.Perm) error
}

var (
	_ Ops = (*Client)(nil)
	_ Ops = (*Tx)(nil)
)

// Tx is a xenstore transaction: its operations see a private copy of the
// store and take effect atomically when End commits them.
type Tx struct {
	c  *Client
	id uint32
}

// ID returns the transaction id chosen by the store.
func (t *Tx) ID() uint32 { return t.id }

func (c *Client) read(ctx context.Context, tx uint32, path string) ([]byte, error) {
	p, err := c.abs(ctx, path)
	if err != nil {
		return nil, err
	}
	m, err := c.request(ctx, wire.Read, tx, p, wire.Strings(p))
	if err != nil {
		return nil, err
	}
	return m.Payload, nil
}

func (c *Client) write(ctx context.Context, tx uint32, path string, value []byte) error {
	p, err := c.abs(ctx, path)
	if err != nil {
		return err
	}
	m, err := c.request(ctx, wire.Write, tx, p, wire.PathValue(p, value))
	if err != nil {
		return err
	}
	return okReply(m, p)
}

func okReply(m wire.Msg, what string) error {
	if err := wire.ParseOK(m.Payload); err != nil {
		return fmt.Errorf("xenstore %s %s: %w", m.Type, what, err)
	}
	return nil
}

func (c *Client) simple(ctx context.Context, t wire.Type, tx uint32, path string) error {
	p, err := c.abs(ctx, path)
	if err != nil {
		return err
	}
	m, err := c.request(ctx, t, tx, p, wire.Strings(p))
	if err != nil {
		return err
	}
	return okReply(m, p)
}

func (c *Client) directory(ctx context.Context, tx uint32, path string) ([]string, error) {
	p, err := c.abs(ctx, path)
	if err != nil {
		return nil, err
	}
	m, err := c.request(ctx, wire.Directory, tx, p, wire.Strings(p))
	if err != nil {
		return nil, err
	}
	s, err := wire.SplitStrings(m.Payload)
	if err != nil {
		return nil, fmt.Errorf("xenstore DIRECTORY %s: %w", p, err)
	}
	return s, nil
}

func (c *Client) getPerms(ctx context.Context, tx uint32, path string) ([]wire.Perm, error) {
	p, err := c.abs(ctx, path)
	if err != nil {
		return nil, err
	}
	m, err := c.request(ctx, wire.GetPerms, tx, p, wire.Strings(p))
	if err != nil {
		return nil, err
	}
	perms, err := wire.ParsePerms(m.Payload)
	if err != nil {
		return nil, fmt.Errorf("xenstore GET_PERMS %s: %w", p, err)
	}
	return perms, nil
}

func (c *Client) setPerms(ctx context.Context, tx uint32, path string, perms []wire.Perm) error {
	p, err := c.abs(ctx, path)
	if err != nil {
		return err
	}
	if len(perms) == 0 {
		return fmt.Errorf("xenbus: SET_PERMS %s: %w: empty permission list", p, wire.ErrInvalid)
	}
	m, err := c.request(ctx, wire.SetPerms, tx, p, wire.Strings(append([]string{p}, wire.PermStrings(perms)...)...))
	if err != nil {
		return err
	}
	return okReply(m, p)
}

// Read returns the value of the node at path.
func (c *Client) Read(ctx context.Context, path string) ([]byte, error) { return c.read(ctx, 0, path) }

// ReadString returns the value of the node at path as a string.
func (c *Client) ReadString(ctx context.Context, path string) (string, error) {
	b, err := c.read(ctx, 0, path)
	return string(b), err
}

// Write sets the value of the node at path, creating it and its parents.
func (c *Client) Write(ctx context.Context, path string, value []byte) error {
	return c.write(ctx, 0, path, value)
}

// WriteString sets the value of the node at path to value.
func (c *Client) WriteString(ctx context.Context, path, value string) error {
	return c.write(ctx, 0, path, []byte(value))
}

// Mkdir creates the node at path and its parents if missing.
func (c *Client) Mkdir(ctx context.Context, path string) error {
	return c.simple(ctx, wire.Mkdir, 0, path)
}

// Rm removes the node at path and its children. Removing a missing node
// whose parent exists is not an error.
func (c *Client) Rm(ctx context.Context, path string) error { return c.simple(ctx, wire.Rm, 0, path) }

// Directory lists the names of the children of the node at path.
func (c *Client) Directory(ctx context.Context, path string) ([]string, error) {
	return c.directory(ctx, 0, path)
}

// GetPerms returns the permissions of the node at path, owner first.
func (c *Client) GetPerms(ctx context.Context, path string) ([]wire.Perm, error) {
	return c.getPerms(ctx, 0, path)
}

// SetPerms replaces the permissions of the node at path; perms[0] names the
// owner and the access of unlisted domains.
func (c *Client) SetPerms(ctx context.Context, path string, perms []wire.Perm) error {
	return c.setPerms(ctx, 0, path, perms)
}

// Read returns the value of the node at path, as seen by the transaction.
func (t *Tx) Read(ctx context.Context, path string) ([]byte, error) {
	return t.c.read(ctx, t.id, path)
}

// ReadString returns the value of the node at path as a string.
func (t *Tx) ReadString(ctx context.Context, path string) (string, error) {
	b, err := t.c.read(ctx, t.id, path)
	return string(b), err
}

// Write sets the value of the node at path within the transaction.
func (t *Tx) Write(ctx context.Context, path string, value []byte) error {
	return t.c.write(ctx, t.id, path, value)
}

// WriteString sets the value of the node at path within the transaction.
func (t *Tx) WriteString(ctx context.Context, path, value string) error {
	return t.c.write(ctx, t.id, path, []byte(value))
}

// Mkdir creates the node at path within the transaction.
func (t *Tx) Mkdir(ctx context.Context, path string) error {
	return t.c.simple(ctx, wire.Mkdir, t.id, path)
}

// Rm removes the node at path within the transaction.
func (t *Tx) Rm(ctx context.Context, path string) error { return t.c.simple(ctx, wire.Rm, t.id, path) }

// Directory lists the children of the node at path within the transaction.
func (t *Tx) Directory(ctx context.Context, path string) ([]string, error) {
	return t.c.directory(ctx, t.id, path)
}

// GetPerms returns the permissions of the node at path.
func (t *Tx) GetPerms(ctx context.Context, path string) ([]wire.Perm, error) {
	return t.c.getPerms(ctx, t.id, path)
}

// SetPerms replaces the permissions of the node at path.
func (t *Tx) SetPerms(ctx context.Context, path string, perms []wire.Perm) error {
	return t.c.setPerms(ctx, t.id, path, perms)
}

// TransactionStart starts a transaction. It must be ended with End.
func (c *Client) TransactionStart(ctx context.Context) (*Tx, error) {
	// If we give up before the reply, end the orphan transaction.
	late := func(m wire.Msg) {
		if m.Type != wire.TransactionStart {
			return
		}
		if id, err := wire.ParseTxID(m.Payload); err == nil {
			ctx, cancel := context.WithTimeout(context.Background(), cleanupTimeout)
			defer cancel()
			c.call(ctx, wire.TransactionEnd, id, wire.Strings("F"))
		}
	}
	m, err := c.callLate(ctx, wire.TransactionStart, 0, wire.Strings(""), late)
	if err == nil {
		err = wire.CheckReply(m, wire.TransactionStart)
	}
	if err != nil {
		return nil, fmt.Errorf("xenstore TRANSACTION_START: %w", err)
	}
	id, err := wire.ParseTxID(m.Payload)
	if err != nil {
		return nil, fmt.Errorf("xenstore TRANSACTION_START: %w", err)
	}
	return &Tx{c: c, id: id}, nil
}

// End commits (commit true) or aborts the transaction. A commit that
// conflicted with another change fails with an error wrapping
// wire.ErrAgain; the transaction must then be redone from the start (see
// Client.Transaction).
func (t *Tx) End(ctx context.Context, commit bool) error {
	arg := "F"
	if commit {
		arg = "T"
	}
	m, err := t.c.request(ctx, wire.TransactionEnd, t.id, "tx "+fmt.Sprint(t.id), wire.Strings(arg))
	if err != nil {
		return err
	}
	return okReply(m, fmt.Sprint("tx ", t.id))
}

// MaxTransactionAttempts bounds the retries of Client.Transaction.
const MaxTransactionAttempts = 64

// Transaction runs fn in a transaction and commits it, redoing everything
// with exponential back-off (1 ms doubling to 128 ms, jittered) while the
// store answers EAGAIN, up to MaxTransactionAttempts times or until ctx
// ends. If fn returns an error the transaction is aborted and the error
// returned (unless it wraps wire.ErrAgain, which also causes a retry).
// fn must be idempotent.
func (c *Client) Transaction(ctx context.Context, fn func(tx *Tx) error) error {
	backoff := time.Millisecond
	var last error
	for attempt := 1; attempt <= MaxTransactionAttempts; attempt++ {
		tx, err := c.TransactionStart(ctx)
		if err != nil {
			return err
		}
		if err = fn(tx); err != nil {
			actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
			aerr := tx.End(actx, false)
			cancel()
			if !errors.Is(err, wire.ErrAgain) {
				if aerr != nil && c.Err() == nil {
					return fmt.Errorf("%w (and aborting: %w)", err, aerr)
				}
				return err
			}
		} else if err = tx.End(ctx, true); err == nil {
			return nil
		} else if !errors.Is(err, wire.ErrAgain) {
			return err
		}
		last = err
		d := backoff/2 + rand.N(backoff/2+1)
		select {
		case <-time.After(d):
		case <-ctx.Done():
			return fmt.Errorf("xenbus: transaction: %w (last attempt: %w)", ctx.Err(), last)
		}
		backoff = min(2*backoff, 128*time.Millisecond)
	}
	return fmt.Errorf("xenbus: transaction gave up after %d attempts: %w", MaxTransactionAttempts, last)
}
