package gntheap_test

import (
	"errors"
	"testing"

	"github.com/gozen-dev/gozen/domid"
	"github.com/gozen-dev/gozen/gnttab"
	"github.com/gozen-dev/gozen/gnttab/gntheap"
	"github.com/gozen-dev/gozen/gnttab/gnttabtest"
)

func domain(t testing.TB, hub *gntheap.Hub, id domid.ID) gnttabtest.Domain {
	d, err := hub.Domain(id)
	if err != nil {
		t.Fatal(err)
	}
	return gnttabtest.Domain{Svc: d, ID: id, Leftovers: func() string { return d.Stats().String() }}
}

func newPair(t *testing.T) (a, b gnttabtest.Domain) {
	hub := gntheap.NewHub()
	return domain(t, hub, 1), domain(t, hub, 2)
}

func TestConformance(t *testing.T) {
	gnttabtest.Run(t, newPair)
}

func TestSharesOneBuffer(t *testing.T) {
	hub := gntheap.NewHub()
	a, b := domain(t, hub, 1), domain(t, hub, 2)
	sh, err := a.Svc.Share(2, 2, true)
	if err != nil {
		t.Fatal(err)
	}
	m, err := b.Svc.Map(1, sh.Refs, true)
	if err != nil {
		t.Fatal(err)
	}
	if &m.Buf[0] != &sh.Buf[0] {
		t.Errorf("mapping does not alias the share's buffer")
	}
	if got := hub.Stats(); got != (gnttab.Stats{Grants: 2, Shares: 1, Mappings: 1}) {
		t.Errorf("Stats = %+v", got)
	}
	if err := b.Svc.Unmap(m); err != nil {
		t.Fatal(err)
	}
	if err := a.Svc.Unshare(sh); err != nil {
		t.Fatal(err)
	}
	if s := hub.Stats().String(); s != "" {
		t.Errorf("leftovers: %s", s)
	}
}

func TestNotContiguous(t *testing.T) {
	hub := gntheap.NewHub()
	a, b := domain(t, hub, 1), domain(t, hub, 2)
	s1, _ := a.Svc.Share(2, 2, true)
	s2, _ := a.Svc.Share(2, 1, true)
	defer a.Svc.Unshare(s1)
	defer a.Svc.Unshare(s2)
	tests := []struct {
		name string
		refs []gnttab.Ref
	}{
		{"reversed", []gnttab.Ref{s1.Refs[1], s1.Refs[0]}},
		{"two shares", []gnttab.Ref{s1.Refs[1], s2.Refs[0]}},
		{"repeated", []gnttab.Ref{s1.Refs[0], s1.Refs[0]}},
	}
	for _, tc := range tests {
		if _, err := b.Svc.Map(1, tc.refs, true); !errors.Is(err, gntheap.ErrNotContiguous) {
			t.Errorf("%s: Map(%v): err = %v, want ErrNotContiguous", tc.name, tc.refs, err)
		}
	}
	if s := hub.Stats(); s.Mappings != 0 {
		t.Errorf("failed Maps left %d mappings", s.Mappings)
	}
}

func TestTableFull(t *testing.T) {
	hub := gntheap.NewHub()
	a := domain(t, hub, 1)
	sh, err := a.Svc.Share(2, gntheap.MaxGrants, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.Svc.Share(2, 1, false); !errors.Is(err, gnttab.ErrNoSpace) {
		t.Errorf("Share on a full table: err = %v, want ErrNoSpace", err)
	}
	if err := a.Svc.Unshare(sh); err != nil {
		t.Fatal(err)
	}
}

func BenchmarkShareUnshare(b *testing.B) {
	d := domain(b, gntheap.NewHub(), 1)
	gnttabtest.BenchmarkShareUnshare(b, d.Svc, 2)
}

func BenchmarkMapUnmap(b *testing.B) {
	hub := gntheap.NewHub()
	gnttabtest.BenchmarkMapUnmap(b, domain(b, hub, 1), domain(b, hub, 2))
}
