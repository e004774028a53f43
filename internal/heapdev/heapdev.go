// Package heapdev sets up one split device in process for a backend's
// tests: the two domains' in-heap event channels (evtchn/evheap) and
// grants (gnttab/gntheap), one store (xenbus/memstore) holding the
// device's directories as the toolstack writes them, a store client per
// domain, and the two ends opened on them (xenbus/device Backend and
// Frontend). The test then plays the frontend through the guest's client
// and services ([Dev.Write], [Dev.Share], [Dev.Port]) and hands
// [Dev.Back] to the backend code under test.
package heapdev

import (
	"context"
	"testing"

	"github.com/gozen-dev/gozen/evtchn"
	"github.com/gozen-dev/gozen/evtchn/evheap"
	"github.com/gozen-dev/gozen/gnttab"
	"github.com/gozen-dev/gozen/gnttab/gntheap"
	"github.com/gozen-dev/gozen/xenbus"
	"github.com/gozen-dev/gozen/xenbus/device"
	"github.com/gozen-dev/gozen/xenbus/memstore"
)

// Dev is one split device between a backend domain and a guest.
type Dev struct {
	t   testing.TB
	ctx context.Context
	// Desc is the device as added to the store.
	Desc memstore.Device
	// Store holds both domains' directories.
	Store *memstore.Store
	// Dom0 is the backend domain's store client, Guest the guest's.
	Dom0, Guest *xenbus.Client
	// BackEvents and GuestEvents are the domains' event channels.
	BackEvents, GuestEvents *evheap.Domain
	// BackGrants and GuestGrants are the domains' grants.
	BackGrants, GuestGrants *gntheap.Domain
	// Back is the backend's end, opened on Dom0.
	Back *device.Backend
	// Front is the frontend's end, opened on Guest.
	Front *device.Frontend
}

// New adds the device desc to a fresh store and opens both ends; ctx
// bounds the store operations of New and of the Dev's methods. Everything
// is closed when the test ends; a failure ends the test.
func New(t testing.TB, ctx context.Context, desc memstore.Device) *Dev {
	t.Helper()
	d := &Dev{t: t, ctx: ctx, Desc: desc, Store: memstore.New()}
	t.Cleanup(func() { d.Store.Close() })
	evs, gns := evheap.NewHub(), gntheap.NewHub()
	var err error
	must := func() {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	d.BackEvents, err = evs.Domain(desc.Backend)
	must()
	d.GuestEvents, err = evs.Domain(desc.Frontend)
	must()
	d.BackGrants, err = gns.Domain(desc.Backend)
	must()
	d.GuestGrants, err = gns.Domain(desc.Frontend)
	must()
	_, _, err = d.Store.AddDevice(desc)
	must()
	d.Dom0, err = d.Store.Connect(desc.Backend)
	must()
	t.Cleanup(func() { d.Dom0.Close() })
	d.Guest, err = d.Store.Connect(desc.Frontend)
	must()
	t.Cleanup(func() { d.Guest.Close() })
	d.Back, err = device.OpenBackend(ctx, d.Dom0, desc.Class, desc.Frontend, desc.ID)
	must()
	d.Front, err = device.Open(ctx, d.Guest, desc.Class, desc.ID)
	must()
	return d
}

// Write writes key (e.g. "queue-1/ring-ref") of the frontend directory
// as the guest, or removes it if value is "".
func (d *Dev) Write(key, value string) {
	d.t.Helper()
	var err error
	if value == "" {
		err = d.Guest.Rm(d.ctx, d.Front.Path+"/"+key)
	} else {
		err = d.Guest.WriteString(d.ctx, d.Front.Path+"/"+key, value)
	}
	if err != nil {
		d.t.Fatal(err)
	}
}

// Share grants the backend pages fresh writable pages of the guest, as a
// frontend grants a ring, and returns their references. The share is
// revoked when the test ends.
func (d *Dev) Share(pages int) []gnttab.Ref {
	d.t.Helper()
	sh, err := d.GuestGrants.Share(d.Desc.Backend, pages, true)
	if err != nil {
		d.t.Fatal(err)
	}
	d.t.Cleanup(func() { d.GuestGrants.Unshare(sh) })
	return sh.Refs
}

// Port allocates a guest port for the backend to bind, as a frontend
// does for an event channel. It is closed when the test ends.
func (d *Dev) Port() evtchn.Port {
	d.t.Helper()
	p, err := d.GuestEvents.AllocUnbound(d.Desc.Backend)
	if err != nil {
		d.t.Fatal(err)
	}
	d.t.Cleanup(func() { d.GuestEvents.Close(p) })
	return p
}
