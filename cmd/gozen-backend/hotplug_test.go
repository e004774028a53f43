//go:build linux

package main

import (
	"errors"
	"maps"
	"net"
	"slices"
	"strings"
	"testing"

	"github.com/gozen-dev/gozen/domid"
	"github.com/gozen-dev/gozen/xenbus/wire"
)

// TestNodes checks the nodes and permissions Create writes for each
// device kind, that the guest can use them as a frontend, and that
// Remove leaves the store as it was.
func TestNodes(t *testing.T) {
	const (
		fp = "/local/domain/7/device/"
		bp = "/local/domain/0/backend/"
	)
	mac, _ := net.ParseMAC("00:16:3e:01:02:03")
	for _, tc := range []struct {
		name        string
		h           *hotplug
		front, back map[string]string
	}{
		{
			name: "vbd rw",
			h:    vbdHotplug(vbdConfig{Dom: guestDom, File: "/img/a.img", ID: 51712, Vdev: "xvda", BackendClass: "vbd"}, 0),
			front: map[string]string{
				"": "", "backend": bp + "vbd/7/51712", "backend-id": "0", "state": "1",
				"virtual-device": "51712", "device-type": "disk",
			},
			back: map[string]string{
				"": "", "frontend": fp + "vbd/51712", "frontend-id": "7", "online": "1", "state": "1",
				"dev": "xvda", "type": "gozen", "params": "/img/a.img", "mode": "w", "device-type": "disk",
				"removable": "0", "bootable": "1",
			},
		},
		{
			name: "vbd ro, other backend class",
			h:    vbdHotplug(vbdConfig{Dom: guestDom, File: "b.img", ID: 51728, Vdev: "xvdb", ReadOnly: true, BackendClass: "gozen-vbd"}, 0),
			front: map[string]string{
				"": "", "backend": bp + "gozen-vbd/7/51728", "backend-id": "0", "state": "1",
				"virtual-device": "51728", "device-type": "disk",
			},
			back: map[string]string{
				"": "", "frontend": fp + "vbd/51728", "frontend-id": "7", "online": "1", "state": "1",
				"dev": "xvdb", "type": "gozen", "params": "b.img", "mode": "r", "device-type": "disk",
				"removable": "0", "bootable": "1",
			},
		},
		{
			name: "vif",
			h:    vifHotplug(vifConfig{Dom: guestDom, MAC: mac, ID: 0, BackendClass: "vif"}, 0),
			front: map[string]string{
				"": "", "backend": bp + "vif/7/0", "backend-id": "0", "state": "1", "handle": "0", "mac": "00:16:3e:01:02:03",
			},
			back: map[string]string{
				"": "", "frontend": fp + "vif/0", "frontend-id": "7", "online": "1", "state": "1",
				"handle": "0", "mac": "00:16:3e:01:02:03", "type": "vif",
			},
		},
		{
			name: "vif in a bridge",
			h:    vifHotplug(vifConfig{Dom: guestDom, MAC: mac, ID: 2, Bridge: "xenbr0", BackendClass: "vif"}, 0),
			front: map[string]string{
				"": "", "backend": bp + "vif/7/2", "backend-id": "0", "state": "1", "handle": "2", "mac": "00:16:3e:01:02:03",
			},
			back: map[string]string{
				"": "", "frontend": fp + "vif/2", "frontend-id": "7", "online": "1", "state": "1",
				"handle": "2", "mac": "00:16:3e:01:02:03", "type": "vif", "bridge": "xenbr0",
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t)
			h := tc.h
			must(t, h.Create(r.ctx, r.dom0))
			check := func(dir string, want map[string]string, perms string) {
				t.Helper()
				kids, err := r.store.Directory(dir)
				must(t, err)
				wantKeys := slices.Sorted(maps.Keys(want))
				got := append([]string{""}, kids...)
				slices.Sort(got)
				if !slices.Equal(got, wantKeys) {
					t.Errorf("%s holds %q, want %q", dir, got, wantKeys)
				}
				for k, v := range want {
					p := strings.TrimSuffix(dir+"/"+k, "/")
					if got, err := r.store.Read(p); err != nil || got != v {
						t.Errorf("%s = %q (%v), want %q", p, got, err, v)
					}
					ps, err := r.store.GetPerms(p)
					if err != nil || strings.Join(wire.PermStrings(ps), ",") != perms {
						t.Errorf("perms of %s: %v (%v), want %s", p, wire.PermStrings(ps), err, perms)
					}
				}
			}
			check(h.FrontPath(), tc.front, "n7,r0")
			check(h.BackPath(), tc.back, "n0,r7")

			// The guest reads the backend directory, writes its own, and
			// may not write the backend's.
			if _, err := r.guest.ReadString(r.ctx, h.BackPath()+"/state"); err != nil {
				t.Errorf("guest reading the backend state: %v", err)
			}
			if err := r.guest.WriteString(r.ctx, h.FrontPath()+"/state", "3"); err != nil {
				t.Errorf("guest writing its state: %v", err)
			}
			if err := r.guest.WriteString(r.ctx, h.BackPath()+"/state", "4"); err == nil {
				t.Errorf("the guest wrote the backend's state")
			}

			if err := h.Create(r.ctx, r.dom0); !errors.Is(err, ErrExists) {
				t.Errorf("second Create: %v, want ErrExists", err)
			}
			must(t, h.Remove(r.ctx, r.dom0))
			r.checkClean()
			must(t, h.Remove(r.ctx, r.dom0)) // removing a removed device is fine
		})
	}
}

// TestCreateRefused checks Create's refusals: a domain that does not
// exist, and either directory already there; nothing is written.
func TestCreateRefused(t *testing.T) {
	for _, tc := range []struct {
		name    string
		prepare func(r *rig, h *hotplug)
		dom     domid.ID
		want    error
	}{
		{"no such domain", func(*rig, *hotplug) {}, 9, ErrNoDomain},
		{"frontend exists", func(r *rig, h *hotplug) { must(r.t, r.store.Write(h.FrontPath()+"/state", "1")) }, guestDom, ErrExists},
		{"backend exists", func(r *rig, h *hotplug) { must(r.t, r.store.Write(h.BackPath()+"/state", "6")) }, guestDom, ErrExists},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t)
			h := vbdHotplug(vbdConfig{Dom: tc.dom, File: "x", ID: 51712, Vdev: "xvda", BackendClass: "vbd"}, 0)
			tc.prepare(r, h)
			before := r.dump()
			if err := h.Create(r.ctx, r.dom0); !errors.Is(err, tc.want) {
				t.Fatalf("Create: %v, want %v", err, tc.want)
			}
			if got := r.dump(); !slices.Equal(got, before) {
				t.Errorf("a refused Create changed the store:\n%s", strings.Join(got, "\n"))
			}
		})
	}
}
