package vchan

import (
	"context"
	"fmt"
	"io/fs"
	"strings"
	"sync"

	"github.com/gozen-dev/gozen/domid"
)

// Store is the part of xenstore the vchan rendezvous needs. The server
// writes "<path>/event-channel" and "<path>/ring-ref" and removes <path>
// when it closes; the client reads them. Paths are passed through
// unchanged, so a relative path is resolved by the store (xenstore
// resolves it under the caller's /local/domain/<domid>).
type Store interface {
	// Read returns the value of the node at path, or an error wrapping
	// fs.ErrNotExist if there is none.
	Read(ctx context.Context, path string) (string, error)
	// Write creates or replaces the node at path (and missing parents).
	Write(ctx context.Context, path, value string) error
	// Rm removes the node at path and everything below it; removing a
	// missing node is not an error.
	Rm(ctx context.Context, path string) error
}

// Watcher is implemented by stores that can report changes. When the
// store given to [Dial] implements it, Dial waits for a server that has not
// yet advertised itself instead of failing.
type Watcher interface {
	// Watch returns a channel that receives a value (coalesced) after
	// every change to path or a node below it, starting with one initial
	// event, and that is closed when ctx ends.
	Watch(ctx context.Context, path string) (<-chan struct{}, error)
}

// ServerPath is the xenstore directory, relative to the server's home
// /local/domain/<server>, where libxenvchan users (vchan-socket-proxy,
// Qubes, MirageOS) advertise a vchan for domain client on port.
func ServerPath(client domid.ID, port string) string {
	return fmt.Sprintf("data/vchan/%d/%s", client, port)
}

// Path is the absolute form of [ServerPath], as the client reads it:
// /local/domain/<server>/data/vchan/<client>/<port>.
func Path(server, client domid.ID, port string) string {
	return fmt.Sprintf("/local/domain/%d/%s", server, ServerPath(client, port))
}

// MemStore is an in-memory [Store] and [Watcher] for tests and for two
// endpoints in one process. The zero value is ready to use.
type MemStore struct {
	mu      sync.Mutex
	nodes   map[string]string
	watches map[*memWatch]struct{}
}

type memWatch struct {
	path string
	ch   chan struct{}
}

func (w *memWatch) fire() {
	select {
	case w.ch <- struct{}{}:
	default:
	}
}

func cleanPath(p string) string { return strings.TrimRight(p, "/") }

func below(p, dir string) bool { return p == dir || strings.HasPrefix(p, dir+"/") }

// Read implements [Store].
func (m *MemStore) Read(_ context.Context, path string) (string, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	v, ok := m.nodes[cleanPath(path)]
	if !ok {
		return "", fmt.Errorf("memstore: read %s: %w", path, fs.ErrNotExist)
	}
	return v, nil
}

// Write implements [Store].
func (m *MemStore) Write(_ context.Context, path, value string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.nodes == nil {
		m.nodes = make(map[string]string)
	}
	path = cleanPath(path)
	m.nodes[path] = value
	m.fire(path)
	return nil
}

// Rm implements [Store].
func (m *MemStore) Rm(_ context.Context, path string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	path = cleanPath(path)
	for k := range m.nodes {
		if below(k, path) {
			delete(m.nodes, k)
		}
	}
	m.fire(path)
	return nil
}

// Len returns the number of nodes stored, for leak checks in tests.
func (m *MemStore) Len() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return len(m.nodes)
}

func (m *MemStore) fire(path string) {
	for w := range m.watches {
		if below(path, w.path) || below(w.path, path) {
			w.fire()
		}
	}
}

// Watch implements [Watcher].
func (m *MemStore) Watch(ctx context.Context, path string) (<-chan struct{}, error) {
	w := &memWatch{path: cleanPath(path), ch: make(chan struct{}, 1)}
	w.fire()
	out := make(chan struct{}, 1)
	m.mu.Lock()
	if m.watches == nil {
		m.watches = make(map[*memWatch]struct{})
	}
	m.watches[w] = struct{}{}
	m.mu.Unlock()
	go func() {
		defer close(out)
		defer func() {
			m.mu.Lock()
			delete(m.watches, w)
			m.mu.Unlock()
		}()
		for {
			select {
			case <-ctx.Done():
				return
			case <-w.ch:
				select {
				case out <- struct{}{}:
				default:
				}
			}
		}
	}()
	return out, nil
}
