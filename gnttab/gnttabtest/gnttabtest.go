// Package gnttabtest is the conformance suite for [gnttab.SharedMemory]
// implementations. Every implementation's tests call [Run] (both domains in
// one process) and, for transports between processes, [RunProcesses] (the
// second domain in a re-executed test binary).
//
// The suite checks the contract documented in package gnttab: pages coherent
// both ways, Unshare refused with ErrInUse while mapped and allowed after
// Unmap, bad and revoked refs rejected, read-only grants enforced, CopyTo and
// CopyFrom correct and bounds-checked, fresh shares zeroed. After each case,
// every domain's Leftovers must report nothing.
package gnttabtest

import (
	"bytes"
	"errors"
	"testing"

	"github.com/gozen-dev/gozen/domid"
	"github.com/gozen-dev/gozen/evtchn/evtchntest/twodom"
	"github.com/gozen-dev/gozen/gnttab"
)

// Domain is one domain under test.
type Domain = twodom.Domain[gnttab.SharedMemory]

// Side is one half of a case.
type Side = twodom.Side[gnttab.SharedMemory]

// Run runs the suite with both domains in this process. newPair returns two
// fresh domains.
func Run(t *testing.T, newPair func(t *testing.T) (a, b Domain)) {
	t.Helper()
	twodom.RunInProcess(t, Cases(), newPair)
}

// RunProcesses runs the suite with domain B in a child process (see
// [twodom.RunProcesses]; the calling test must call it unconditionally).
// open returns this process's domain with the given id, using the
// rendezvous directory dir.
func RunProcesses(t *testing.T, open func(t *testing.T, dir string, id domid.ID) Domain) {
	t.Helper()
	twodom.RunProcesses(t, Cases(), open)
}

// Cases returns the suite's cases.
func Cases() []twodom.Case[gnttab.SharedMemory] {
	return []twodom.Case[gnttab.SharedMemory]{
		{Name: "Coherent", A: coherentA, B: coherentB},
		{Name: "MultiPage", A: multiPageA, B: multiPageB},
		{Name: "UnshareWhileMapped", A: inUseA, B: inUseB},
		{Name: "BadRefs", A: badRefsA, B: badRefsB},
		{Name: "ReadOnly", A: readOnlyA, B: readOnlyB},
		{Name: "ReadOnlyMultiPageUnshareRefused", A: roInUseA, B: roInUseB},
		{Name: "Copy", A: copyA, B: copyB},
		{Name: "Zeroed", A: zeroedA, B: twodom.Idle[gnttab.SharedMemory]},
		{Name: "UnshareRace", A: raceA, B: raceB},
	}
}

// share shares pages with the peer and sends the refs.
func share(t twodom.T, s *Side, pages int, writable bool) *gnttab.Share {
	t.Helper()
	sh, err := s.Svc.Share(s.Peer, pages, writable)
	if err != nil {
		t.Fatalf("Share(%d, %d, %v): %v", s.Peer, pages, writable, err)
	}
	if len(sh.Refs) != pages || len(sh.Buf) != pages*gnttab.PageSize {
		t.Fatalf("Share(%d pages): %d refs, %d bytes", pages, len(sh.Refs), len(sh.Buf))
	}
	s.Send(t, uint64(len(sh.Refs)))
	for _, r := range sh.Refs {
		s.Send(t, uint64(r))
	}
	return sh
}

// refs receives the refs sent by share.
func refs(t twodom.T, s *Side) []gnttab.Ref {
	t.Helper()
	n := s.Recv(t)
	if n > 1<<16 {
		t.Fatalf("peer sent %d refs", n)
	}
	rs := make([]gnttab.Ref, n)
	for i := range rs {
		rs[i] = gnttab.Ref(s.Recv(t))
	}
	return rs
}

func unshare(t twodom.T, s *Side, sh *gnttab.Share) {
	t.Helper()
	if err := s.Svc.Unshare(sh); err != nil {
		t.Errorf("Unshare(%v): %v", sh.Refs, err)
	}
}

func mapRefs(t twodom.T, s *Side, rs []gnttab.Ref, writable bool) *gnttab.Mapping {
	t.Helper()
	m, err := s.Svc.Map(s.Peer, rs, writable)
	if err != nil {
		t.Fatalf("Map(%d, %v, %v): %v", s.Peer, rs, writable, err)
	}
	if len(m.Buf) != len(rs)*gnttab.PageSize {
		t.Fatalf("Map(%v): %d bytes", rs, len(m.Buf))
	}
	return m
}

func unmap(t twodom.T, s *Side, m *gnttab.Mapping) {
	t.Helper()
	if err := s.Svc.Unmap(m); err != nil {
		t.Errorf("Unmap(%v): %v", m.Refs, err)
	}
}

func fill(b []byte, seed byte) {
	for i := range b {
		b[i] = seed + byte(i*7)
	}
}

func pattern(n int, seed byte) []byte {
	b := make([]byte, n)
	fill(b, seed)
	return b
}

// coherent: stores on either side are seen on the other.
func coherentA(t twodom.T, s *Side) {
	sh := share(t, s, 2, true)
	defer unshare(t, s, sh)
	fill(sh.Buf[:gnttab.PageSize], 1)
	s.Send(t, 1) // page 0 written
	s.Recv(t)    // page 1 written by B
	if !bytes.Equal(sh.Buf[gnttab.PageSize:], pattern(gnttab.PageSize, 2)) {
		t.Errorf("page 1 does not hold what the mapper wrote")
	}
	fill(sh.Buf[:gnttab.PageSize], 3)
	s.Send(t, 2)
	s.Recv(t) // B unmapped
}

func coherentB(t twodom.T, s *Side) {
	m := mapRefs(t, s, refs(t, s), true)
	s.Recv(t)
	if !bytes.Equal(m.Buf[:gnttab.PageSize], pattern(gnttab.PageSize, 1)) {
		t.Errorf("page 0 does not hold what the granter wrote")
	}
	fill(m.Buf[gnttab.PageSize:], 2)
	s.Send(t, 3)
	s.Recv(t)
	if !bytes.Equal(m.Buf[:gnttab.PageSize], pattern(gnttab.PageSize, 3)) {
		t.Errorf("page 0 does not hold what the granter wrote second")
	}
	unmap(t, s, m)
	s.Send(t, 4)
}

// multiPage: a multi-page share mapped whole and in part.
func multiPageA(t twodom.T, s *Side) {
	const pages = 4
	sh := share(t, s, pages, true)
	defer unshare(t, s, sh)
	for i := range pages {
		sh.Buf[i*gnttab.PageSize] = byte(10 + i)
		sh.Buf[(i+1)*gnttab.PageSize-1] = byte(20 + i)
	}
	s.Send(t, 1)
	s.Recv(t)
	for i := range pages {
		if got := sh.Buf[i*gnttab.PageSize+1]; got != byte(30+i) {
			t.Errorf("page %d byte 1 = %d, want %d", i, got, 30+i)
		}
	}
}

func multiPageB(t twodom.T, s *Side) {
	rs := refs(t, s)
	s.Recv(t)
	m := mapRefs(t, s, rs, true)
	for i := range rs {
		if a, b := m.Buf[i*gnttab.PageSize], m.Buf[(i+1)*gnttab.PageSize-1]; a != byte(10+i) || b != byte(20+i) {
			t.Errorf("page %d: first/last bytes %d/%d, want %d/%d", i, a, b, 10+i, 20+i)
		}
		m.Buf[i*gnttab.PageSize+1] = byte(30 + i)
	}
	part := mapRefs(t, s, rs[1:3], false)
	if part.Buf[0] != 11 || part.Buf[gnttab.PageSize] != 12 {
		t.Errorf("partial mapping of pages 1-2: first bytes %d, %d", part.Buf[0], part.Buf[gnttab.PageSize])
	}
	unmap(t, s, part)
	unmap(t, s, m)
	s.Send(t, 2)
}

// inUse: Unshare fails with ErrInUse while mapped, leaving the share
// intact, and succeeds after Unmap.
func inUseA(t twodom.T, s *Side) {
	sh := share(t, s, 3, true)
	s.Recv(t) // mapped
	if err := s.Svc.Unshare(sh); !errors.Is(err, gnttab.ErrInUse) {
		t.Fatalf("Unshare while mapped: err = %v, want ErrInUse", err)
	}
	if len(sh.Buf) != 3*gnttab.PageSize {
		t.Fatalf("failed Unshare changed the share: %d bytes", len(sh.Buf))
	}
	fill(sh.Buf, 5)
	s.Send(t, 1)
	s.Recv(t) // unmapped
	unshare(t, s, sh)
	if err := s.Svc.Unshare(sh); err == nil {
		t.Errorf("second Unshare succeeded")
	}
}

func inUseB(t twodom.T, s *Side) {
	rs := refs(t, s)
	m := mapRefs(t, s, rs[2:], true) // only the last page: Unshare must still fail
	s.Send(t, 2)
	s.Recv(t)
	if !bytes.Equal(m.Buf, pattern(3*gnttab.PageSize, 5)[2*gnttab.PageSize:]) {
		t.Errorf("share not intact after a failed Unshare")
	}
	unmap(t, s, m)
	if err := s.Svc.Unmap(m); !errors.Is(err, gnttab.ErrBadRef) {
		t.Errorf("second Unmap: err = %v, want ErrBadRef", err)
	}
	s.Send(t, 3)
}

// badRefs: refs that are not granted to us are rejected by Map and copies.
func badRefsA(t twodom.T, s *Side) {
	other, err := s.Svc.Share(s.Peer+97, 1, true) // granted to someone else
	if err != nil {
		t.Fatalf("Share: %v", err)
	}
	defer unshare(t, s, other)
	revoked, err := s.Svc.Share(s.Peer, 1, true)
	if err != nil {
		t.Fatalf("Share: %v", err)
	}
	revokedRef := revoked.Refs[0]
	good := share(t, s, 1, true) // before the Unshare, so as not to reuse the ref
	defer unshare(t, s, good)
	unshare(t, s, revoked)
	s.Send(t, uint64(other.Refs[0]))
	s.Send(t, uint64(revokedRef))
	s.Recv(t)
}

func badRefsB(t twodom.T, s *Side) {
	good := refs(t, s)[0]
	other := gnttab.Ref(s.Recv(t))
	revoked := gnttab.Ref(s.Recv(t))
	defer s.Send(t, 1)
	cases := []struct {
		name   string
		remote domid.ID
		refs   []gnttab.Ref
		want   error
	}{
		{"granted to another domain", s.Peer, []gnttab.Ref{other}, gnttab.ErrBadRef},
		{"revoked", s.Peer, []gnttab.Ref{revoked}, gnttab.ErrBadRef},
		{"never granted", s.Peer, []gnttab.Ref{good + 1000}, gnttab.ErrBadRef},
		{"out of range", s.Peer, []gnttab.Ref{^gnttab.Ref(0)}, gnttab.ErrBadRef},
		{"huge", s.Peer, []gnttab.Ref{1 << 31}, gnttab.ErrBadRef},
		{"good then bad", s.Peer, []gnttab.Ref{good, other}, gnttab.ErrBadRef},
		{"wrong domain", s.Peer + 55, []gnttab.Ref{good}, gnttab.ErrBadRef},
		{"no refs", s.Peer, nil, gnttab.ErrBounds},
	}
	buf := make([]byte, 16)
	for _, c := range cases {
		if m, err := s.Svc.Map(c.remote, c.refs, false); !errors.Is(err, c.want) {
			t.Errorf("Map(%s: %d, %v): err = %v, want %v", c.name, c.remote, c.refs, err, c.want)
			if err == nil {
				unmap(t, s, m)
			}
		}
		if len(c.refs) != 1 {
			continue
		}
		if err := s.Svc.CopyFrom(c.remote, c.refs[0], 0, buf); !errors.Is(err, c.want) {
			t.Errorf("CopyFrom(%s: %d, %d): err = %v, want %v", c.name, c.remote, c.refs[0], err, c.want)
		}
		if err := s.Svc.CopyTo(c.remote, c.refs[0], 0, buf); !errors.Is(err, c.want) {
			t.Errorf("CopyTo(%s: %d, %d): err = %v, want %v", c.name, c.remote, c.refs[0], err, c.want)
		}
	}
	// A failed Map must not leave the good page mapped: the granter's
	// Unshare (deferred in A) would then fail.
	if err := s.Svc.Unmap(&gnttab.Mapping{Remote: s.Peer, Refs: []gnttab.Ref{good}}); !errors.Is(err, gnttab.ErrBadRef) {
		t.Errorf("Unmap of a mapping never made: err = %v, want ErrBadRef", err)
	}
	if err := s.Svc.Unmap(nil); !errors.Is(err, gnttab.ErrBadRef) {
		t.Errorf("Unmap(nil): err = %v, want ErrBadRef", err)
	}
	if err := s.Svc.Unshare(&gnttab.Share{Remote: s.Peer, Refs: []gnttab.Ref{good}}); !errors.Is(err, gnttab.ErrBadRef) {
		t.Errorf("Unshare of a share never made: err = %v, want ErrBadRef", err)
	}
	if err := s.Svc.Unshare(nil); !errors.Is(err, gnttab.ErrBadRef) {
		t.Errorf("Unshare(nil): err = %v, want ErrBadRef", err)
	}
}

// readOnly: a read-only grant can be mapped and copied from, but not mapped
// writable nor copied to.
func readOnlyA(t twodom.T, s *Side) {
	sh := share(t, s, 1, false)
	defer unshare(t, s, sh)
	fill(sh.Buf, 7)
	s.Send(t, 1)
	s.Recv(t)
	if !bytes.Equal(sh.Buf, pattern(gnttab.PageSize, 7)) {
		t.Errorf("read-only page was changed by the mapper")
	}
}

func readOnlyB(t twodom.T, s *Side) {
	r := refs(t, s)[0]
	s.Recv(t)
	defer s.Send(t, 2)
	if m, err := s.Svc.Map(s.Peer, []gnttab.Ref{r}, true); !errors.Is(err, gnttab.ErrReadOnly) {
		t.Errorf("writable Map of a read-only grant: err = %v, want ErrReadOnly", err)
		if err == nil {
			unmap(t, s, m)
		}
	}
	if err := s.Svc.CopyTo(s.Peer, r, 0, []byte{1, 2, 3}); !errors.Is(err, gnttab.ErrReadOnly) {
		t.Errorf("CopyTo a read-only grant: err = %v, want ErrReadOnly", err)
	}
	m := mapRefs(t, s, []gnttab.Ref{r}, false)
	if !bytes.Equal(m.Buf, pattern(gnttab.PageSize, 7)) {
		t.Errorf("read-only mapping does not hold the granter's data")
	}
	unmap(t, s, m)
	got := make([]byte, 100)
	if err := s.Svc.CopyFrom(s.Peer, r, 50, got); err != nil {
		t.Errorf("CopyFrom a read-only grant: %v", err)
	} else if !bytes.Equal(got, pattern(gnttab.PageSize, 7)[50:150]) {
		t.Errorf("CopyFrom a read-only grant: wrong data")
	}
}

// roInUse: a refused Unshare of a read-only multi-page share, refused
// because the peer maps its last page, leaves every page granted and still
// read-only: the peer can map each page read-only and see the data, and
// can neither map any page writable nor copy into it.
const roInUsePages = 3

func roInUseA(t twodom.T, s *Side) {
	sh := share(t, s, roInUsePages, false)
	fill(sh.Buf, 11)
	s.Send(t, 1)
	s.Recv(t) // B maps the last page
	if err := s.Svc.Unshare(sh); !errors.Is(err, gnttab.ErrInUse) {
		t.Fatalf("Unshare while the peer maps page %d: err = %v, want ErrInUse", roInUsePages-1, err)
	}
	if len(sh.Buf) != roInUsePages*gnttab.PageSize {
		t.Fatalf("refused Unshare changed the share: %d bytes", len(sh.Buf))
	}
	s.Send(t, 2)
	s.Recv(t) // B checked every page and unmapped
	if !bytes.Equal(sh.Buf, pattern(roInUsePages*gnttab.PageSize, 11)) {
		t.Errorf("read-only pages were changed by the peer after a refused Unshare")
	}
	unshare(t, s, sh)
}

func roInUseB(t twodom.T, s *Side) {
	rs := refs(t, s)
	s.Recv(t)
	last := mapRefs(t, s, rs[len(rs)-1:], false)
	s.Send(t, 3)
	s.Recv(t) // A's Unshare was refused
	defer s.Send(t, 4)
	defer unmap(t, s, last)
	want := pattern(len(rs)*gnttab.PageSize, 11)
	for i, r := range rs {
		page := want[i*gnttab.PageSize : (i+1)*gnttab.PageSize]
		if m, err := s.Svc.Map(s.Peer, []gnttab.Ref{r}, true); !errors.Is(err, gnttab.ErrReadOnly) {
			t.Errorf("page %d: writable Map after a refused Unshare: err = %v, want ErrReadOnly", i, err)
			if err == nil {
				unmap(t, s, m)
			}
		}
		if err := s.Svc.CopyTo(s.Peer, r, 0, []byte{0xee}); !errors.Is(err, gnttab.ErrReadOnly) {
			t.Errorf("page %d: CopyTo after a refused Unshare: err = %v, want ErrReadOnly", i, err)
		}
		m, err := s.Svc.Map(s.Peer, []gnttab.Ref{r}, false)
		if err != nil {
			t.Errorf("page %d: read-only Map after a refused Unshare: %v", i, err)
			continue
		}
		if !bytes.Equal(m.Buf, page) {
			t.Errorf("page %d: read-only mapping does not hold the granter's data", i)
		}
		unmap(t, s, m)
	}
	if !bytes.Equal(last.Buf, want[(len(rs)-1)*gnttab.PageSize:]) {
		t.Errorf("the mapping held through the refused Unshare lost the granter's data")
	}
}

// copy: CopyTo and CopyFrom move the right bytes and check their bounds.
func copyA(t twodom.T, s *Side) {
	sh := share(t, s, 2, true)
	defer unshare(t, s, sh)
	fill(sh.Buf[gnttab.PageSize:], 9)
	s.Send(t, 1)
	s.Recv(t)
	want := make([]byte, gnttab.PageSize)
	copy(want[100:], "hello")
	copy(want[gnttab.PageSize-3:], "end")
	copy(want[0:], "start")
	if !bytes.Equal(sh.Buf[:gnttab.PageSize], want) {
		t.Errorf("page 0 after CopyTo: got %q...", sh.Buf[:16])
	}
	s.Send(t, 2)
}

func copyB(t twodom.T, s *Side) {
	rs := refs(t, s)
	s.Recv(t)
	writes := []struct {
		off  int
		data string
	}{{100, "hello"}, {gnttab.PageSize - 3, "end"}, {0, "start"}, {gnttab.PageSize, ""}}
	for _, w := range writes {
		if err := s.Svc.CopyTo(s.Peer, rs[0], w.off, []byte(w.data)); err != nil {
			t.Errorf("CopyTo(offset %d, %q): %v", w.off, w.data, err)
		}
	}
	page1 := pattern(gnttab.PageSize, 9)
	for _, r := range []struct{ off, n int }{{0, gnttab.PageSize}, {1, 1}, {4000, 96}, {gnttab.PageSize, 0}} {
		got := make([]byte, r.n)
		if err := s.Svc.CopyFrom(s.Peer, rs[1], r.off, got); err != nil {
			t.Errorf("CopyFrom(offset %d, %d bytes): %v", r.off, r.n, err)
		} else if !bytes.Equal(got, page1[r.off:r.off+r.n]) {
			t.Errorf("CopyFrom(offset %d, %d bytes): wrong data", r.off, r.n)
		}
	}
	bad := []struct {
		name string
		off  int
		n    int
	}{
		{"negative offset", -1, 1},
		{"offset past the page", gnttab.PageSize + 1, 0},
		{"crosses the end", gnttab.PageSize - 2, 3},
		{"longer than a page", 0, gnttab.PageSize + 1},
		{"huge offset", 1 << 62, 1},
		{"most negative offset", -1 << 63, 8},
	}
	for _, b := range bad {
		buf := make([]byte, b.n)
		if err := s.Svc.CopyTo(s.Peer, rs[0], b.off, buf); !errors.Is(err, gnttab.ErrBounds) {
			t.Errorf("CopyTo(%s: offset %d, %d bytes): err = %v, want ErrBounds", b.name, b.off, b.n, err)
		}
		if err := s.Svc.CopyFrom(s.Peer, rs[0], b.off, buf); !errors.Is(err, gnttab.ErrBounds) {
			t.Errorf("CopyFrom(%s: offset %d, %d bytes): err = %v, want ErrBounds", b.name, b.off, b.n, err)
		}
	}
	s.Send(t, 3)
	s.Recv(t)
}

// zeroed: fresh shares are zero even when they reuse freed pages; bad page
// counts are rejected.
func zeroedA(t twodom.T, s *Side) {
	for i := range 3 {
		sh, err := s.Svc.Share(s.Peer, 3, true)
		if err != nil {
			t.Fatalf("Share: %v", err)
		}
		if !bytes.Equal(sh.Buf, make([]byte, len(sh.Buf))) {
			t.Errorf("round %d: fresh share not zeroed", i)
		}
		fill(sh.Buf, 0xaa)
		unshare(t, s, sh)
	}
	for _, n := range []int{0, -1, -1 << 62, 1 << 40} {
		if sh, err := s.Svc.Share(s.Peer, n, true); err == nil {
			t.Errorf("Share(%d pages) succeeded", n)
			unshare(t, s, sh)
		} else if !errors.Is(err, gnttab.ErrBounds) && !errors.Is(err, gnttab.ErrNoSpace) {
			t.Errorf("Share(%d pages): err = %v, want ErrBounds or ErrNoSpace", n, err)
		}
	}
}

// race: the mapper maps and unmaps in a loop while the granter tries to
// unshare; Unshare must fail with ErrInUse or succeed, and once it
// succeeded, Map must fail.
const raceRounds = 2000

func raceA(t twodom.T, s *Side) {
	sh := share(t, s, 2, true)
	s.Recv(t) // B holds its first mapping and keeps going
	inUse := 0
	for {
		err := s.Svc.Unshare(sh)
		if err == nil {
			break
		}
		if !errors.Is(err, gnttab.ErrInUse) {
			t.Fatalf("Unshare: %v", err)
		}
		if inUse++; inUse > 1e7 {
			t.Fatalf("Unshare never succeeded")
		}
	}
	s.Send(t, 1) // unshared
	s.Recv(t)
	t.Logf("Unshare failed with ErrInUse %d times before it won", inUse)
}

func raceB(t twodom.T, s *Side) {
	rs := refs(t, s)
	mapped := 0
	for i := range raceRounds {
		m, err := s.Svc.Map(s.Peer, rs, true)
		if err != nil {
			if !errors.Is(err, gnttab.ErrBadRef) || i == 0 {
				t.Fatalf("Map: %v", err)
			}
			break
		}
		m.Buf[0]++
		mapped++
		if i == 0 {
			s.Send(t, 2)
		}
		unmap(t, s, m)
	}
	s.Recv(t)
	if _, err := s.Svc.Map(s.Peer, rs, true); !errors.Is(err, gnttab.ErrBadRef) {
		t.Errorf("Map after Unshare: err = %v, want ErrBadRef", err)
	}
	t.Logf("mapped %d times before Unshare won", mapped)
	s.Send(t, 3)
}

// BenchmarkShareUnshare measures Share of one page to remote followed by
// Unshare.
func BenchmarkShareUnshare(b *testing.B, d gnttab.SharedMemory, remote domid.ID) {
	for b.Loop() {
		sh, err := d.Share(remote, 1, true)
		if err != nil {
			b.Fatal(err)
		}
		if err := d.Unshare(sh); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkMapUnmap measures Map of one page granted by granter to mapper,
// followed by Unmap.
func BenchmarkMapUnmap(b *testing.B, granter, mapper Domain) {
	sh, err := granter.Svc.Share(mapper.ID, 1, true)
	if err != nil {
		b.Fatal(err)
	}
	defer granter.Svc.Unshare(sh)
	for b.Loop() {
		m, err := mapper.Svc.Map(granter.ID, sh.Refs, true)
		if err != nil {
			b.Fatal(err)
		}
		if err := mapper.Svc.Unmap(m); err != nil {
			b.Fatal(err)
		}
	}
}
