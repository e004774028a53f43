//go:build linux

package main

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/gozen-dev/gozen/domid"
	"github.com/gozen-dev/gozen/xenbus"
	"github.com/gozen-dev/gozen/xenbus/device"
	"github.com/gozen-dev/gozen/xenbus/wire"
)

// ErrExists means a device directory to be created already exists (a
// device of that id is configured, or a previous run did not clean up).
var ErrExists = errors.New("gozen-backend: device already exists")

// ErrNoDomain means the frontend domain has no home in the store.
var ErrNoDomain = errors.New("gozen-backend: no such domain")

// hotplug describes a split device as the toolstack creates it: the
// frontend directory /local/domain/<Front>/device/<Class>/<ID> and the
// backend directory <home>/backend/<BackendClass>/<Front>/<ID> in the
// backend's (our) home.
type hotplug struct {
	// Class is the device class the frontend sees ("vbd", "vif").
	Class string
	// BackendClass is the class element of the backend directory.
	BackendClass string
	// Front is the frontend (guest) domain, Back the backend's (ours).
	Front, Back domid.ID
	// ID is the device id.
	ID string
	// FrontKeys and BackKeys are the keys written besides those of every
	// device (backend, backend-id, state; frontend, frontend-id, online,
	// state).
	FrontKeys, BackKeys []device.KV

	// made are the ancestors of the directories that Create made (they
	// did not exist), deepest first; Remove removes those left empty.
	made []string
}

// homeDomain parses the domain id of a home path, /local/domain/<id>.
func homeDomain(home string) (domid.ID, error) {
	s, ok := strings.CutPrefix(home, "/local/domain/")
	n, err := strconv.ParseUint(s, 10, 16)
	if !ok || err != nil {
		return 0, fmt.Errorf("gozen-backend: home %q is not /local/domain/<id>: %w", home, wire.ErrMalformed)
	}
	return domid.ID(n), nil
}

// FrontPath is the frontend directory.
func (h *hotplug) FrontPath() string {
	return wire.DomainPath(h.Front) + "/device/" + h.Class + "/" + h.ID
}

// BackPath is the backend directory.
func (h *hotplug) BackPath() string {
	return wire.DomainPath(h.Back) + "/backend/" + h.BackendClass + "/" + strconv.Itoa(int(h.Front)) + "/" + h.ID
}

// Name is "<class>/<id> of domain <front>", for messages.
func (h *hotplug) Name() string {
	return h.Class + "/" + h.ID + " of domain " + strconv.Itoa(int(h.Front))
}

// frontPerms are the frontend directory's permissions as libxl sets them:
// owned by the frontend, readable by the backend.
func (h *hotplug) frontPerms() []wire.Perm {
	return []wire.Perm{{Dom: h.Front, Access: wire.AccessNone}, {Dom: h.Back, Access: wire.AccessRead}}
}

// backPerms are the backend directory's: owned by the backend, readable
// by the frontend.
func (h *hotplug) backPerms() []wire.Perm {
	return []wire.Perm{{Dom: h.Back, Access: wire.AccessNone}, {Dom: h.Front, Access: wire.AccessRead}}
}

// frontKeys are all the keys of the frontend directory, in order.
func (h *hotplug) frontKeys() []device.KV {
	kvs := []device.KV{
		{Key: "backend", Value: h.BackPath()},
		device.Uint("backend-id", h.Back),
		device.Uint("state", uint(device.Initialising)),
	}
	return append(kvs, h.FrontKeys...)
}

// backKeys are all the keys of the backend directory, in order.
func (h *hotplug) backKeys() []device.KV {
	kvs := []device.KV{
		{Key: "frontend", Value: h.FrontPath()},
		device.Uint("frontend-id", h.Front),
		{Key: "online", Value: "1"},
		device.Uint("state", uint(device.Initialising)),
	}
	return append(kvs, h.BackKeys...)
}

// check validates the paths and keys before anything is written.
func (h *hotplug) check() error {
	for _, p := range []string{h.FrontPath(), h.BackPath()} {
		if err := wire.CheckPath(p, false); err != nil {
			return fmt.Errorf("gozen-backend: %s: %w", h.Name(), err)
		}
	}
	for _, kv := range slices.Concat(h.frontKeys(), h.backKeys()) {
		if kv.Key == "" || strings.Contains(kv.Key, "/") {
			return fmt.Errorf("gozen-backend: %s: key %q: %w", h.Name(), kv.Key, wire.ErrInvalid)
		}
	}
	return nil
}

// exists reports whether path exists in tx.
func exists(ctx context.Context, tx *xenbus.Tx, path string) (bool, error) {
	_, err := tx.Read(ctx, path)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, wire.ErrNotExist):
		return false, nil
	}
	return false, err
}

// Create makes both directories in one transaction, as libxl's
// libxl__device_generic_add does: each directory with its owner and the
// peer's read access (the keys inherit them), the frontend's keys, the
// backend's keys. The frontend domain must exist; neither directory may.
func (h *hotplug) Create(ctx context.Context, s device.Store) error {
	if err := h.check(); err != nil {
		return err
	}
	dirs := []struct {
		path  string
		perms []wire.Perm
		kvs   []device.KV
	}{
		{h.FrontPath(), h.frontPerms(), h.frontKeys()},
		{h.BackPath(), h.backPerms(), h.backKeys()},
	}
	var made []string
	err := s.Transaction(ctx, func(tx *xenbus.Tx) error {
		ok, err := exists(ctx, tx, wire.DomainPath(h.Front))
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("%s does not exist: %w", wire.DomainPath(h.Front), ErrNoDomain)
		}
		made = nil
		for _, d := range dirs {
			ok, err := exists(ctx, tx, d.path)
			if err != nil {
				return err
			}
			if ok {
				return fmt.Errorf("%s: %w", d.path, ErrExists)
			}
			for p := parentPath(d.path); p != "/"; p = parentPath(p) {
				ok, err := exists(ctx, tx, p)
				if err != nil {
					return err
				}
				if ok {
					break
				}
				if !slices.Contains(made, p) {
					made = append(made, p)
				}
			}
		}
		slices.SortFunc(made, func(a, b string) int { return strings.Count(b, "/") - strings.Count(a, "/") })
		for _, d := range dirs {
			if err := tx.Mkdir(ctx, d.path); err != nil {
				return err
			}
			if err := tx.SetPerms(ctx, d.path, d.perms); err != nil {
				return err
			}
			for _, kv := range d.kvs {
				if err := tx.WriteString(ctx, d.path+"/"+kv.Key, kv.Value); err != nil {
					return err
				}
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("gozen-backend: creating %s: %w", h.Name(), err)
	}
	h.made = made
	return nil
}

// parentPath is the directory of the absolute path p.
func parentPath(p string) string {
	if i := strings.LastIndexByte(p, '/'); i > 0 {
		return p[:i]
	}
	return "/"
}

// Remove removes both directories in one transaction (missing ones are
// not an error), and the ancestors Create made that are left empty (such
// as backend/vbd/<front>), so that the store is as it was.
func (h *hotplug) Remove(ctx context.Context, s device.Store) error {
	err := s.Transaction(ctx, func(tx *xenbus.Tx) error {
		for _, p := range []string{h.FrontPath(), h.BackPath()} {
			if err := tx.Rm(ctx, p); err != nil && !errors.Is(err, wire.ErrNotExist) {
				return err
			}
		}
		for _, p := range h.made {
			left, err := tx.Directory(ctx, p)
			if err != nil || len(left) != 0 {
				continue
			}
			if err := tx.Rm(ctx, p); err != nil && !errors.Is(err, wire.ErrNotExist) {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("gozen-backend: removing %s: %w", h.Name(), err)
	}
	return nil
}
