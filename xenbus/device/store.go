package device

import (
	"context"

	"github.com/gozen-dev/gozen/xenbus"
)

// Store is what a frontend and the Bus need of a xenstore connection: the
// node operations, the domain's home, watches (through WaitFor) and
// transactions (for Publish). *xenbus.Client satisfies it; so does any
// wrapper forwarding to one (for example one that switches to a new
// client when the domain is resumed elsewhere).
type Store interface {
	xenbus.Ops
	// Home returns the domain's home path, /local/domain/<domid>; device
	// directories are read under it at every Open.
	Home() string
	// WaitFor watches path and calls check after every event (the first
	// comes right away) until check returns true or an error, or ctx ends
	// (see xenbus.Client.WaitFor).
	WaitFor(ctx context.Context, path string, check func() (bool, error)) error
	// Transaction runs fn in a transaction and commits it, redoing it on
	// conflicts (see xenbus.Client.Transaction).
	Transaction(ctx context.Context, fn func(tx *xenbus.Tx) error) error
}

var _ Store = (*xenbus.Client)(nil)
