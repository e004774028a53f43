package memstore

import (
	"fmt"
	"slices"
	"strconv"

	"github.com/gozen-dev/gozen/domid"
	"github.com/gozen-dev/gozen/xenbus/wire"
)

// Device describes a split device for AddDevice.
type Device struct {
	// Frontend is the domain of the frontend (the guest).
	Frontend domid.ID
	// Backend is the domain of the backend (0 for dom0).
	Backend domid.ID
	// Class is the device class, e.g. "vif".
	Class string
	// ID is the device id, e.g. "0".
	ID string
	// FrontendKeys are extra keys of the frontend directory (e.g. "mac").
	FrontendKeys map[string]string
	// BackendKeys are extra keys of the backend directory (e.g.
	// "feature-sg").
	BackendKeys map[string]string
}

// AddDevice creates both directories of a split device as the toolstack
// does: the frontend's /local/domain/<F>/device/<class>/<id> with keys
// backend, backend-id and state=1 (Initialising), owned by F and readable
// by the backend domain, and the backend's
// /local/domain/<B>/backend/<class>/<F>/<id> with keys frontend,
// frontend-id, online=1 and state=1, owned by B and readable by F. Both
// domains are added if needed. It returns the two paths.
func (s *Store) AddDevice(d Device) (front, back string, err error) {
	if err := s.AddDomain(d.Frontend); err != nil {
		return "", "", err
	}
	if err := s.AddDomain(d.Backend); err != nil {
		return "", "", err
	}
	front = wire.DomainPath(d.Frontend) + "/device/" + d.Class + "/" + d.ID
	back = wire.DomainPath(d.Backend) + "/backend/" + d.Class + "/" + strconv.Itoa(int(d.Frontend)) + "/" + d.ID
	for _, p := range []string{front, back} {
		if err := wire.CheckPath(p, false); err != nil {
			return "", "", fmt.Errorf("memstore: AddDevice: %w", err)
		}
	}
	fkeys := map[string]string{"backend": back, "backend-id": strconv.Itoa(int(d.Backend)), "state": "1"}
	for k, v := range d.FrontendKeys {
		fkeys[k] = v
	}
	bkeys := map[string]string{"frontend": front, "frontend-id": strconv.Itoa(int(d.Frontend)), "online": "1", "state": "1"}
	for k, v := range d.BackendKeys {
		bkeys[k] = v
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.makeDirLocked(front, fkeys, []wire.Perm{{Dom: d.Frontend, Access: wire.AccessNone}, {Dom: d.Backend, Access: wire.AccessRead}}); err != nil {
		return "", "", err
	}
	if err := s.makeDirLocked(back, bkeys, []wire.Perm{{Dom: d.Backend, Access: wire.AccessNone}, {Dom: d.Frontend, Access: wire.AccessRead}}); err != nil {
		return "", "", err
	}
	return front, back, nil
}

// makeDirLocked creates dir and its keys, all with perms, as dom0.
func (s *Store) makeDirLocked(dir string, keys map[string]string, perms []wire.Perm) error {
	names := make([]string, 0, len(keys))
	for k := range keys {
		names = append(names, k)
	}
	slices.Sort(names)
	ops := []op{{kind: wire.Mkdir, path: dir}, {kind: wire.SetPerms, path: dir, perms: perms}}
	for _, k := range names {
		p := dir + "/" + k
		ops = append(ops, op{kind: wire.Write, path: p, value: []byte(keys[k])}, op{kind: wire.SetPerms, path: p, perms: perms})
	}
	for _, o := range ops {
		if err := s.applyLocked(0, o); err != nil {
			return fmt.Errorf("memstore: AddDevice: %s %s: %w", o.kind, o.path, err)
		}
	}
	return nil
}
