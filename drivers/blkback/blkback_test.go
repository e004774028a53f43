package blkback

import (
	"testing"

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
	c := &conn{s: s, remote: 1, pmaps: map[gnttab.Ref]*gnttab.Mapping{}}
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
