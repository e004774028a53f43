//go:build !tamago

package main

import (
	"context"
	"fmt"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/gozen-dev/gozen/domid"
)

// fileStore is a stand-in for xenstore between processes on one host: each
// node is a file under root named by its absolute xenstore path, holding
// its value. A node with children is a directory and so has no value,
// which the vchan rendezvous never needs. Writes are atomic (write, then
// rename); there are no transactions, permissions or watches.
type fileStore struct {
	root string
	self domid.ID // relative paths resolve under /local/domain/<self>
}

// file maps a xenstore path to its file, refusing anything that is not a
// clean path.
func (s fileStore) file(p string) (string, error) {
	if !strings.HasPrefix(p, "/") {
		p = fmt.Sprintf("/local/domain/%d/%s", s.self, p)
	}
	if p == "/" || path.Clean(p) != p {
		return "", fmt.Errorf("filestore: bad path %q", p)
	}
	return filepath.Join(s.root, filepath.FromSlash(p)), nil
}

// Read returns a node's value; a missing node is an error wrapping
// fs.ErrNotExist.
func (s fileStore) Read(_ context.Context, p string) (string, error) {
	f, err := s.file(p)
	if err != nil {
		return "", err
	}
	b, err := os.ReadFile(f)
	if err != nil {
		return "", fmt.Errorf("filestore: read %s: %w", p, err)
	}
	return string(b), nil
}

// Write sets a node's value, creating its parents.
func (s fileStore) Write(_ context.Context, p, value string) error {
	f, err := s.file(p)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(f), 0o700); err != nil {
		return fmt.Errorf("filestore: write %s: %w", p, err)
	}
	tmp, err := os.CreateTemp(filepath.Dir(f), ".tmp-*")
	if err != nil {
		return fmt.Errorf("filestore: write %s: %w", p, err)
	}
	_, werr := tmp.WriteString(value)
	cerr := tmp.Close()
	if werr == nil && cerr == nil {
		werr = os.Rename(tmp.Name(), f)
	} else if werr == nil {
		werr = cerr
	}
	if werr != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("filestore: write %s: %w", p, werr)
	}
	return nil
}

// Rm removes a node and its children, then any parents left empty.
func (s fileStore) Rm(_ context.Context, p string) error {
	f, err := s.file(p)
	if err != nil {
		return err
	}
	if err := os.RemoveAll(f); err != nil {
		return fmt.Errorf("filestore: rm %s: %w", p, err)
	}
	root := filepath.Clean(s.root)
	for d := filepath.Dir(f); d != root && strings.HasPrefix(d, root); d = filepath.Dir(d) {
		if os.Remove(d) != nil {
			break
		}
	}
	return nil
}
