package blkback

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/gozen-dev/gozen/internal/heapdev"
	"github.com/gozen-dev/gozen/xenbus/memstore"
	"github.com/gozen-dev/gozen/xenbus/wire"
)

// TestHostileQueueKeys hands connect a frontend directory with the
// multi-queue keys a hostile or broken frontend could write: each is
// refused with a clear error, and whatever was mapped or bound for the
// queues before the bad one is released.
func TestHostileQueueKeys(t *testing.T) {
	type keys map[string]string
	for _, tc := range []struct {
		name      string
		offer     int
		order     int  // offered max-ring-page-order
		queues    int  // rings granted by the test (the good keys)
		mqLayout  bool // write the good keys under queue-N/
		ringOrder int  // ring pages 2^ringOrder per queue
		keys      keys // written after the good keys (value "" deletes)
		want      error
		rings     int // if want is nil
	}{
		{"flat", 0, 0, 1, false, 0, nil, nil, 1},
		{"flat, num-queues 1", 2, 0, 1, false, 0, keys{"multi-queue-num-queues": "1"}, nil, 1},
		{"two", 2, 0, 2, true, 0, keys{"multi-queue-num-queues": "2"}, nil, 2},
		{"four, order 1", 4, 1, 4, true, 1, keys{"multi-queue-num-queues": "4", "ring-page-order": "1"}, nil, 4},
		{"more than offered", 2, 0, 3, true, 0, keys{"multi-queue-num-queues": "3"}, wire.ErrMalformed, 0},
		{"not offered", 0, 0, 2, true, 0, keys{"multi-queue-num-queues": "2"}, wire.ErrMalformed, 0},
		{"zero", 2, 0, 1, false, 0, keys{"multi-queue-num-queues": "0"}, wire.ErrMalformed, 0},
		{"huge", 2, 0, 1, false, 0, keys{"multi-queue-num-queues": "4294967295"}, wire.ErrMalformed, 0},
		{"past 32 bits", 2, 0, 1, false, 0, keys{"multi-queue-num-queues": "99999999999"}, wire.ErrMalformed, 0},
		{"not a number", 2, 0, 1, false, 0, keys{"multi-queue-num-queues": "two"}, wire.ErrMalformed, 0},
		{"flat keys for two", 2, 0, 2, false, 0, keys{"multi-queue-num-queues": "2"}, wire.ErrNotExist, 0},
		{"queue-1/ring-ref missing", 2, 0, 2, true, 0, keys{"multi-queue-num-queues": "2", "queue-1/ring-ref": ""}, wire.ErrNotExist, 0},
		{"queue-1/ring-ref bad", 2, 0, 2, true, 0, keys{"multi-queue-num-queues": "2", "queue-1/ring-ref": "-3"}, wire.ErrMalformed, 0},
		{"queue-1/event-channel missing", 2, 0, 2, true, 0, keys{"multi-queue-num-queues": "2", "queue-1/event-channel": ""}, wire.ErrNotExist, 0},
		{"queue-1/event-channel bad", 2, 0, 2, true, 0, keys{"multi-queue-num-queues": "2", "queue-1/event-channel": "1x"}, wire.ErrMalformed, 0},
		{"queue-1/ring-ref1 missing", 2, 1, 2, true, 1, keys{"multi-queue-num-queues": "2", "ring-page-order": "1", "queue-1/ring-ref1": ""}, wire.ErrNotExist, 0},
		{"queue-1 ring not granted", 2, 0, 2, true, 0, keys{"multi-queue-num-queues": "2", "queue-1/ring-ref": "4000"}, errAny, 0},
		{"queue-1 port not ours", 2, 0, 2, true, 0, keys{"multi-queue-num-queues": "2", "queue-1/event-channel": "4000"}, errAny, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			d := heapdev.New(t, ctx, memstore.Device{Frontend: 3, Backend: 0, Class: "vbd", ID: "51712"})
			bEv, bMem := d.BackEvents, d.BackGrants
			s, err := NewServer(Config{Events: bEv, Memory: bMem, Disk: memDisk(make([]byte, 1<<20)), Size: 1 << 20, MaxQueues: tc.offer, MaxRingOrder: tc.order})
			if err != nil {
				t.Fatal(err)
			}
			for q := range tc.queues {
				dir := ""
				if tc.mqLayout {
					dir = "queue-" + strconv.Itoa(q) + "/"
				}
				for i, r := range d.Share(1 << tc.ringOrder) {
					k := dir + "ring-ref"
					if tc.ringOrder > 0 {
						k += strconv.Itoa(i)
					}
					d.Write(k, strconv.Itoa(int(r)))
				}
				d.Write(dir+"event-channel", strconv.Itoa(int(d.Port())))
			}
			for k, v := range tc.keys {
				d.Write(k, v)
			}
			rs, err := s.connect(ctx, d.Back)
			switch {
			case tc.want == nil && err != nil:
				t.Fatalf("connect: %v", err)
			case tc.want == nil:
				if len(rs) != tc.rings || s.Stats().Queues != tc.rings {
					t.Errorf("%d rings, stats %+v", len(rs), s.Stats())
				}
				if err := rs.close(); err != nil {
					t.Error(err)
				}
			case err == nil:
				rs.close()
				t.Fatalf("connect accepted: %d rings", len(rs))
			case tc.want != errAny && !errors.Is(err, tc.want):
				t.Errorf("connect: %v, want %v", err, tc.want)
			default:
				t.Logf("refused: %v", err)
			}
			if s := bEv.Stats(); s.Ports != 0 {
				t.Errorf("leftover: %d backend ports", s.Ports)
			}
			if s := bMem.Stats(); s.Mappings != 0 {
				t.Errorf("leftover: %d mappings", s.Mappings)
			}
		})
	}
}

// errAny stands for any error.
var errAny = errors.New("any error")
