package blkback

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/gozen-dev/gozen/evtchn/evheap"
	"github.com/gozen-dev/gozen/gnttab/gntheap"
	"github.com/gozen-dev/gozen/xenbus/device"
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
			evs, gns, st := evheap.NewHub(), gntheap.NewHub(), memstore.New()
			defer st.Close()
			bEv, _ := evs.Domain(0)
			gEv, _ := evs.Domain(3)
			bMem, _ := gns.Domain(0)
			gMem, _ := gns.Domain(3)
			if _, _, err := st.AddDevice(memstore.Device{Frontend: 3, Backend: 0, Class: "vbd", ID: "51712"}); err != nil {
				t.Fatal(err)
			}
			dom0, _ := st.Connect(0)
			guest, _ := st.Connect(3)
			defer dom0.Close()
			defer guest.Close()
			s, err := NewServer(Config{Events: bEv, Memory: bMem, Disk: memDisk(make([]byte, 1<<20)), Size: 1 << 20, MaxQueues: tc.offer, MaxRingOrder: tc.order})
			if err != nil {
				t.Fatal(err)
			}
			b, err := device.OpenBackend(ctx, dom0, "vbd", 3, "51712")
			if err != nil {
				t.Fatal(err)
			}
			f, err := device.Open(ctx, guest, "vbd", "51712")
			if err != nil {
				t.Fatal(err)
			}
			write := func(k, v string) {
				t.Helper()
				var err error
				if v == "" {
					err = guest.Rm(ctx, f.Path+"/"+k)
				} else {
					err = guest.WriteString(ctx, f.Path+"/"+k, v)
				}
				if err != nil {
					t.Fatal(err)
				}
			}
			for q := range tc.queues {
				dir := ""
				if tc.mqLayout {
					dir = "queue-" + strconv.Itoa(q) + "/"
				}
				sh, err := gMem.Share(0, 1<<tc.ringOrder, true)
				if err != nil {
					t.Fatal(err)
				}
				defer gMem.Unshare(sh)
				for i, r := range sh.Refs {
					k := dir + "ring-ref"
					if tc.ringOrder > 0 {
						k += strconv.Itoa(i)
					}
					write(k, strconv.Itoa(int(r)))
				}
				p, err := gEv.AllocUnbound(0)
				if err != nil {
					t.Fatal(err)
				}
				defer gEv.Close(p)
				write(dir+"event-channel", strconv.Itoa(int(p)))
			}
			for k, v := range tc.keys {
				write(k, v)
			}
			rs, err := s.connect(ctx, b)
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
