package blkfront

import (
	"context"
	"encoding/binary"
	"errors"
	"sync/atomic"
	"testing"
	"unsafe"

	"github.com/gozen-dev/gozen/domid"
	"github.com/gozen-dev/gozen/drivers/blkif"
	"github.com/gozen-dev/gozen/drivers/ring"
	"github.com/gozen-dev/gozen/evtchn"
	"github.com/gozen-dev/gozen/gnttab"
	"github.com/gozen-dev/gozen/gnttab/gntheap"
)

type nopEvents struct{}

func (nopEvents) AllocUnbound(domid.ID) (evtchn.Port, error)                 { return 1, nil }
func (nopEvents) BindInterdomain(domid.ID, evtchn.Port) (evtchn.Port, error) { return 1, nil }
func (nopEvents) Notify(evtchn.Port) error                                   { return nil }
func (nopEvents) Close(evtchn.Port) error                                    { return nil }
func (nopEvents) Wait(ctx context.Context, _ evtchn.Port, _ evtchn.Generation) (evtchn.Generation, error) {
	<-ctx.Done()
	return 0, ctx.Err()
}

// FuzzResponses issues requests on a disk whose ring is plain memory,
// then plays the backend from the input: responses (16 bytes each, their
// ids taken modulo a few real ones, or raw) and a response producer
// index. Whatever it writes, draining must not panic or block, every
// request gets at most one result, and a device that did not fail has
// answered exactly the requests whose responses were right.
func FuzzResponses(f *testing.F) {
	rsp := func(id uint64, op blkif.Op, st blkif.Status) []byte {
		b := make([]byte, blkif.ResponseSize)
		blkif.Response{ID: id, Op: op, Status: st}.Encode(b)
		return b
	}
	f.Add(uint8(3), uint8(2), false, append(rsp(0, blkif.OpRead, 0), rsp(1, blkif.OpWrite, 0)...))
	f.Add(uint8(2), uint8(2), true, append(rsp(0, blkif.OpRead, 0), rsp(0, blkif.OpRead, 0)...))
	f.Add(uint8(1), uint8(200), false, rsp(5, blkif.OpRead, -1))
	f.Add(uint8(4), uint8(1), true, rsp(1<<32, blkif.OpDiscard, -2))
	f.Fuzz(func(t *testing.T, nreq, prod uint8, raw bool, data []byte) {
		gn, _ := gntheap.NewHub().Domain(1)
		mem := make([]byte, ring.PageSize)
		front, err := ring.NewFront(mem, blkif.Layout)
		if err != nil {
			t.Fatal(err)
		}
		d := &Disk{cfg: Config{Events: nopEvents{}, Memory: gn}, name: "vbd/fuzz", avail: make(chan struct{}),
			shares: map[*gnttab.Share]struct{}{}, maxPages: 64, running: true}
		d.info = Info{Sectors: 1 << 20, SectorSize: 512, MaxSegments: blkif.MaxSegments, Persistent: raw, Discard: true}
		q := &queue{front: front, remote: 0}
		q.initShadow()
		d.qs, d.requests, d.queuePages = []*queue{q}, []uint64{0}, 64
		ops := []blkif.Op{blkif.OpRead, blkif.OpWrite, blkif.OpDiscard}
		var cs []*chunk
		var ids []uint64
		for i := range int(nreq % 8) {
			op := ops[i%3]
			var buf []byte
			if op != blkif.OpDiscard {
				buf = make([]byte, 512*(1+i))
			}
			c, _, err := d.issue(context.Background(), op, uint64(i), buf, 1, false)
			if err != nil {
				t.Fatal(err)
			}
			cs = append(cs, c)
			ids = append(ids, makeID(c.idx, q.shadow[c.idx].gen))
		}
		// The backend's responses go into the slots from index 0.
		n := 0
		for ; len(data) >= blkif.ResponseSize && n < front.Size(); n++ {
			e := mem[ring.HeaderSize+n*blkif.RequestSize:]
			copy(e, data[:blkif.ResponseSize])
			if !raw && len(ids) > 0 {
				id := ids[binary.LittleEndian.Uint64(e)%uint64(len(ids))]
				binary.LittleEndian.PutUint64(e, id)
			}
			data = data[blkif.ResponseSize:]
		}
		atomic.StoreUint32((*uint32)(unsafe.Pointer(&mem[ring.OffRspProd])), uint32(prod))
		d.mu.Lock()
		derr := d.drainLocked(q)
		d.mu.Unlock()
		if derr != nil && !errors.Is(derr, ErrProtocol) {
			t.Fatalf("drain: %v", derr)
		}
		results := 0
		for _, c := range cs {
			select {
			case err := <-c.res:
				results++
				if derr == nil && err != nil && !errors.Is(err, ErrIO) && !errors.Is(err, ErrNotSupported) {
					t.Fatalf("result %v", err)
				}
			default:
				if derr != nil {
					t.Fatal("device failed but a request got no result")
				}
			}
			if len(c.res) != 0 {
				t.Fatal("two results")
			}
		}
		// Answered and outstanding requests make up all of them.
		if out := q.front.Size() - q.front.FreeRequests(); derr == nil && results+out != len(cs) {
			t.Fatalf("%d results, %d outstanding, %d requests", results, out, len(cs))
		}
		d.mu.Lock()
		d.releaseSharesLocked()
		d.mu.Unlock()
		if s := gn.Stats(); s.Grants != 0 && derr == nil && results == len(cs) && !raw {
			t.Fatalf("leftover %v", s)
		}
	})
}
