package blkback

import (
	"testing"
	"time"

	"github.com/gozen-dev/gozen/drivers/blkif"
	"github.com/gozen-dev/gozen/evtchn/evheap"
	"github.com/gozen-dev/gozen/gnttab"
	"github.com/gozen-dev/gozen/gnttab/gntheap"
)

type memDisk []byte

func (m memDisk) ReadAt(p []byte, off int64) (int, error)  { return copy(p, m[off:]), nil }
func (m memDisk) WriteAt(p []byte, off int64) (int, error) { return copy(m[off:], p), nil }

func TestNewServer(t *testing.T) {
	ev, _ := evheap.NewHub().Domain(0)
	gn, _ := gntheap.NewHub().Domain(0)
	ok := Config{Events: ev, Memory: gn, Disk: memDisk(make([]byte, 4096)), Size: 4096}
	for _, tc := range []struct {
		name string
		mod  func(c *Config)
		good bool
	}{
		{"ok", func(c *Config) {}, true},
		{"4k sectors", func(c *Config) { c.SectorSize = 4096 }, true},
		{"no disk", func(c *Config) { c.Disk = nil }, false},
		{"sector 1000", func(c *Config) { c.SectorSize = 1000 }, false},
		{"size not whole sectors", func(c *Config) { c.Size = 1000 }, false},
		{"physical smaller", func(c *Config) { c.SectorSize, c.PhysicalSectorSize = 4096, 512 }, false},
		{"too many indirect", func(c *Config) { c.MaxIndirectSegments = blkif.MaxIndirectSegments + 1 }, false},
		{"order 5", func(c *Config) { c.MaxRingOrder = 5 }, false},
		{"64 queues", func(c *Config) { c.MaxQueues = MaxQueues }, true},
		{"too many queues", func(c *Config) { c.MaxQueues = MaxQueues + 1 }, false},
		{"negative queues", func(c *Config) { c.MaxQueues = -1 }, false},
		{"polling off", func(c *Config) { c.PollMax = -time.Second }, true},
		{"polling up to 1 ms", func(c *Config) { c.PollMax = time.Millisecond }, true},
	} {
		c := ok
		tc.mod(&c)
		if _, err := NewServer(c); (err == nil) != tc.good {
			t.Errorf("%s: %v", tc.name, err)
		}
	}
}

// TestHostileRequests hands conn.handle requests a hostile frontend could
// write: each is answered with an error status, never served.
func TestHostileRequests(t *testing.T) {
	hub := gntheap.NewHub()
	back, _ := hub.Domain(0)
	front, _ := hub.Domain(1)
	ev, _ := evheap.NewHub().Domain(0)
	disk := memDisk(make([]byte, 1<<20))
	s, err := NewServer(Config{Events: ev, Memory: back, Disk: disk, Size: 1 << 20, MaxIndirectSegments: 16, SectorSize: 4096})
	if err != nil {
		t.Fatal(err)
	}
	ro, _ := hub.Domain(1)
	share, _ := front.Share(0, 2, true)
	rshare, _ := ro.Share(0, 1, false)
	c := &conn{s: s, remote: 1, pmaps: map[gnttab.Ref][]byte{}}
	page := share.Refs[0]
	seg := func(ref gnttab.Ref, f, l uint8) []blkif.Segment {
		return []blkif.Segment{{Ref: ref, First: f, Last: l}}
	}
	for _, tc := range []struct {
		name string
		req  blkif.Request
		want blkif.Status
	}{
		{"good read", blkif.Request{Op: blkif.OpRead, Segments: seg(page, 0, 7)}, blkif.StatusOK},
		{"beyond the end", blkif.Request{Op: blkif.OpRead, Sector: 2048 - 8 + 8, Segments: seg(page, 0, 7)}, blkif.StatusError},
		{"sector overflow", blkif.Request{Op: blkif.OpRead, Sector: ^uint64(0) - 3, Segments: seg(page, 0, 7)}, blkif.StatusError},
		{"unaligned segment", blkif.Request{Op: blkif.OpRead, Segments: seg(page, 1, 7)}, blkif.StatusError},
		{"unaligned sector", blkif.Request{Op: blkif.OpWrite, Sector: 1, Segments: seg(page, 0, 7)}, blkif.StatusError},
		{"not our grant", blkif.Request{Op: blkif.OpRead, Segments: seg(9999, 0, 7)}, blkif.StatusError},
		{"read into a read-only grant", blkif.Request{Op: blkif.OpRead, Segments: seg(rshare.Refs[0], 0, 7)}, blkif.StatusError},
		{"indirect too many", blkif.Request{Op: blkif.OpIndirect, IndirectOp: blkif.OpRead, NrSegments: 17, IndirectRefs: []gnttab.Ref{page}}, blkif.StatusError},
		{"indirect bad page", blkif.Request{Op: blkif.OpIndirect, IndirectOp: blkif.OpRead, NrSegments: 2, IndirectRefs: []gnttab.Ref{share.Refs[1]}}, blkif.StatusError},
		{"flush not offered", blkif.Request{Op: blkif.OpFlushDiskCache, Segments: []blkif.Segment{}}, blkif.StatusNotSupported},
		{"discard not offered", blkif.Request{Op: blkif.OpDiscard, NrSectors: 8}, blkif.StatusNotSupported},
	} {
		b := make([]byte, blkif.RequestSize)
		if err := tc.req.Encode(b); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if rsp := c.handle(b); rsp.Status != tc.want {
			t.Errorf("%s: %s, want %s", tc.name, rsp.Status, tc.want)
		}
	}
	// Undecodable: answered with an error, echoing id and op.
	b := make([]byte, blkif.RequestSize)
	b[0], b[8] = 77, 42
	if rsp := c.handle(b); rsp.Status != blkif.StatusError || rsp.ID != 42 || rsp.Op != 77 {
		t.Errorf("malformed: %+v", rsp)
	}
	if st := s.Stats(); st.Requests != 12 || st.Errors != 11 {
		t.Errorf("stats %+v", st)
	}
}

// vecDisk is a memDisk that is also a VectorStorage; short makes its
// vectored calls move one byte less than asked.
type vecDisk struct {
	memDisk
	calls int
	short bool
}

func (v *vecDisk) ReadvAt(bufs [][]byte, off int64) (int, error) {
	v.calls++
	n := 0
	for _, b := range bufs {
		n += copy(b, v.memDisk[off+int64(n):])
	}
	if v.short {
		n--
	}
	return n, nil
}

func (v *vecDisk) WritevAt(bufs [][]byte, off int64) (int, error) {
	v.calls++
	n := 0
	for _, b := range bufs {
		n += copy(v.memDisk[off+int64(n):], b)
	}
	if v.short {
		n--
	}
	return n, nil
}

// TestPersistentBatch serves persistent-grant requests: a request's
// unmapped pages are mapped in one Map call, within the budget; pages in
// place are read and written through a VectorStorage; a batch with a bad
// or read-only ref falls back to mapping (and failing) page by page; a
// short vectored transfer is an error; close unmaps everything.
func TestPersistentBatch(t *testing.T) {
	for _, vector := range []bool{false, true} {
		hub := gntheap.NewHub()
		back, _ := hub.Domain(0)
		front, _ := hub.Domain(1)
		ev, _ := evheap.NewHub().Domain(0)
		vd := &vecDisk{memDisk: make(memDisk, 1<<20)}
		var disk Storage = vd.memDisk
		if vector {
			disk = vd
		}
		for i := range vd.memDisk {
			vd.memDisk[i] = byte(i / 4096)
		}
		s, err := NewServer(Config{Events: ev, Memory: back, Disk: disk, Size: 1 << 20, MaxIndirectSegments: 16, Persistent: true, MaxPersistentGrants: 6})
		if err != nil {
			t.Fatal(err)
		}
		share, _ := front.Share(0, 8, true)
		rshare, _ := front.Share(0, 1, false)
		c := &conn{s: s, remote: 1, persistent: true, pmaps: map[gnttab.Ref][]byte{}}
		segs := func(refs ...gnttab.Ref) []blkif.Segment {
			var ss []blkif.Segment
			for _, r := range refs {
				ss = append(ss, blkif.Segment{Ref: r, First: 0, Last: 7})
			}
			return ss
		}
		r := share.Refs
		do := func(name string, req blkif.Request, want blkif.Status) {
			t.Helper()
			b := make([]byte, blkif.RequestSize)
			if err := req.Encode(b); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if rsp := c.handle(b); rsp.Status != want {
				t.Errorf("vector %v: %s: %s, want %s", vector, name, rsp.Status, want)
			}
		}
		// Sectors 8..31 (pages 1..3 of the disk) into share pages 0, 1, 0 again.
		do("read three", blkif.Request{Op: blkif.OpRead, Sector: 8, Segments: segs(r[0], r[1], r[0])}, blkif.StatusOK)
		if st := s.Stats(); st.PersistentMaps != 2 || st.Copies != 0 {
			t.Errorf("vector %v: after one read %+v, want 2 pages mapped in one batch", vector, st)
		}
		if got := hub.Stats(); got.Mappings != 1 {
			t.Errorf("vector %v: %d mappings, want 1 (one batch)", vector, got.Mappings)
		}
		if share.Buf[0] != 3 || share.Buf[4096] != 2 {
			t.Errorf("vector %v: read gave pages %d %d, want 3 2", vector, share.Buf[0], share.Buf[4096])
		}
		// A batch with a read-only ref fails as a batch; the good pages
		// before it are then mapped one by one, the bad one fails the request.
		do("read-only in batch", blkif.Request{Op: blkif.OpRead, Segments: segs(r[2], rshare.Refs[0])}, blkif.StatusError)
		do("bad ref in batch", blkif.Request{Op: blkif.OpRead, Segments: segs(r[3], 9999)}, blkif.StatusError)
		// Write pages 4..7: the budget (6) leaves room for two more mapped
		// pages; the rest are copied.
		for i := 4; i < 8; i++ {
			share.Buf[i*4096] = byte(100 + i)
		}
		do("write four", blkif.Request{Op: blkif.OpWrite, Sector: 80, Segments: segs(r[4], r[5], r[6], r[7])}, blkif.StatusOK)
		for i := 4; i < 8; i++ {
			if got := vd.memDisk[(10+i-4)*4096]; got != byte(100+i) {
				t.Errorf("vector %v: disk page %d holds %d, want %d", vector, 10+i-4, got, 100+i)
			}
		}
		st := s.Stats()
		if st.PersistentMaps != 6 || st.Copies != 2 {
			t.Errorf("vector %v: stats %+v, want 6 persistent maps and 2 copies", vector, st)
		}
		if vector && vd.calls != 1 {
			t.Errorf("vector %v: %d vectored calls, want 1 (the first read)", vector, vd.calls)
		}
		if vector {
			vd.short = true
			do("short transfer", blkif.Request{Op: blkif.OpRead, Sector: 8, Segments: segs(r[0], r[1])}, blkif.StatusError)
		}
		c.stop = func() {}
		c.done = make(chan struct{})
		close(c.done)
		c.ringMap = &gnttab.Mapping{}
		c.close()
		if got := hub.Stats(); got.Mappings != 0 {
			t.Errorf("vector %v: %d mappings left after close", vector, got.Mappings)
		}
	}
}
