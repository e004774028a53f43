package gnttab_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/gozen-dev/gozen/domid"
	"github.com/gozen-dev/gozen/gnttab"
	"github.com/gozen-dev/gozen/gnttab/gntheap"
)

// batcher counts CopyBatch calls and passes them on one segment at a time.
type batcher struct {
	gnttab.SharedMemory
	calls int
}

func (b *batcher) CopyBatch(remote domid.ID, segs []gnttab.CopySegment, to bool) error {
	b.calls++
	return gnttab.CopyMany(b.SharedMemory, remote, segs, to)
}

// TestCopyMany copies segments to and from granted pages, through a
// BatchCopier in one call and through plain CopyTo/CopyFrom, and fails
// with the failing segment's error.
func TestCopyMany(t *testing.T) {
	hub := gntheap.NewHub()
	granter, _ := hub.Domain(1)
	mapper, _ := hub.Domain(0)
	sh, err := granter.Share(0, 2, true)
	if err != nil {
		t.Fatal(err)
	}
	ro, _ := granter.Share(0, 1, false)
	for _, batch := range []bool{false, true} {
		var m gnttab.SharedMemory = mapper
		b := &batcher{SharedMemory: mapper}
		if batch {
			m = b
		}
		out := []gnttab.CopySegment{
			{Ref: sh.Refs[0], Offset: 100, Local: []byte("hello")},
			{Ref: sh.Refs[1], Offset: 4090, Local: []byte("world!")},
		}
		if err := gnttab.CopyMany(m, 1, out, true); err != nil {
			t.Fatalf("batch %v: to: %v", batch, err)
		}
		if !bytes.Equal(sh.Buf[100:105], []byte("hello")) || !bytes.Equal(sh.Buf[4096+4090:], []byte("world!")) {
			t.Errorf("batch %v: pages hold %q %q", batch, sh.Buf[100:105], sh.Buf[4096+4090:])
		}
		in := []gnttab.CopySegment{
			{Ref: sh.Refs[1], Offset: 4090, Local: make([]byte, 6)},
			{Ref: sh.Refs[0], Offset: 100, Local: make([]byte, 5)},
		}
		if err := gnttab.CopyMany(m, 1, in, false); err != nil || string(in[0].Local) != "world!" || string(in[1].Local) != "hello" {
			t.Errorf("batch %v: from: %v, %q %q", batch, err, in[0].Local, in[1].Local)
		}
		bad := []gnttab.CopySegment{out[0], {Ref: ro.Refs[0], Local: []byte("x")}}
		if err := gnttab.CopyMany(m, 1, bad, true); !errors.Is(err, gnttab.ErrReadOnly) {
			t.Errorf("batch %v: copy to a read-only grant: %v", batch, err)
		}
		if batch && b.calls != 3 {
			t.Errorf("%d CopyBatch calls, want 3", b.calls)
		}
	}
}
