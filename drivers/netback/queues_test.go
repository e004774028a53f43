package netback

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

// errAny stands for any error.
var errAny = errors.New("any error")

// TestHostileQueueKeys hands connect a frontend directory with the
// multi-queue keys a hostile or broken frontend could write: each is
// refused with a clear error, and whatever was mapped or bound for the
// queues before the bad one is released.
func TestHostileQueueKeys(t *testing.T) {
	type keys map[string]string
	for _, tc := range []struct {
		name     string
		offer    int
		split    bool // offered and used by the test's keys
		queues   int  // queues granted by the test (the good keys)
		mqLayout bool // the good keys under queue-N/
		keys     keys // written after the good keys ("" deletes)
		want     error
	}{
		{"flat", 0, false, 1, false, nil, nil},
		{"no request-rx-copy", 2, false, 1, false, keys{"request-rx-copy": ""}, ErrProtocol},
		{"flat, num-queues 1 not offered", 0, false, 1, false, keys{"multi-queue-num-queues": "1"}, nil},
		{"two", 2, false, 2, true, keys{"multi-queue-num-queues": "2"}, nil},
		{"four split", 4, true, 4, true, keys{"multi-queue-num-queues": "4"}, nil},
		{"more than offered", 2, false, 3, true, keys{"multi-queue-num-queues": "3"}, ErrProtocol},
		{"not offered", 0, false, 2, true, keys{"multi-queue-num-queues": "2"}, ErrProtocol},
		{"zero", 2, false, 1, false, keys{"multi-queue-num-queues": "0"}, ErrProtocol},
		{"huge", 2, false, 1, false, keys{"multi-queue-num-queues": "4294967295"}, ErrProtocol},
		{"past 32 bits", 2, false, 1, false, keys{"multi-queue-num-queues": "99999999999"}, wire.ErrMalformed},
		{"not a number", 2, false, 1, false, keys{"multi-queue-num-queues": "two"}, wire.ErrMalformed},
		{"flat keys for two", 2, false, 2, false, keys{"multi-queue-num-queues": "2"}, wire.ErrNotExist},
		{"queue-1/tx-ring-ref missing", 2, false, 2, true, keys{"multi-queue-num-queues": "2", "queue-1/tx-ring-ref": ""}, wire.ErrNotExist},
		{"queue-1/rx-ring-ref bad", 2, false, 2, true, keys{"multi-queue-num-queues": "2", "queue-1/rx-ring-ref": "0x10"}, wire.ErrMalformed},
		{"queue-1/event-channel missing", 2, false, 2, true, keys{"multi-queue-num-queues": "2", "queue-1/event-channel": ""}, wire.ErrNotExist},
		{"queue-1/event-channel-rx missing", 2, true, 2, true, keys{"multi-queue-num-queues": "2", "queue-1/event-channel-rx": ""}, wire.ErrNotExist},
		{"queue-1/event-channel-tx bad", 2, true, 2, true, keys{"multi-queue-num-queues": "2", "queue-1/event-channel-tx": "-1"}, wire.ErrMalformed},
		{"queue-1 ring not granted", 2, false, 2, true, keys{"multi-queue-num-queues": "2", "queue-1/rx-ring-ref": "4000"}, errAny},
		{"queue-1 port not ours", 2, true, 2, true, keys{"multi-queue-num-queues": "2", "queue-1/event-channel-rx": "4000"}, errAny},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			d := heapdev.New(t, ctx, memstore.Device{Frontend: 3, Backend: 0, Class: "vif", ID: "0"})
			bEv, bMem := d.BackEvents, d.BackGrants
			d.Write("request-rx-copy", "1")
			for q := range tc.queues {
				dir := ""
				if tc.mqLayout {
					dir = "queue-" + strconv.Itoa(q) + "/"
				}
				for _, k := range []string{"tx-ring-ref", "rx-ring-ref"} {
					d.Write(dir+k, strconv.Itoa(int(d.Share(1)[0])))
				}
				evKeys := []string{"event-channel"}
				if tc.split {
					evKeys = []string{"event-channel-tx", "event-channel-rx"}
				}
				for _, k := range evKeys {
					d.Write(dir+k, strconv.Itoa(int(d.Port())))
				}
			}
			for k, v := range tc.keys {
				d.Write(k, v)
			}
			v := &VIF{b: d.Back, o: Options{Events: bEv, Grants: bMem, MaxQueues: tc.offer, SplitEventChannels: tc.split}, changed: make(chan struct{})}
			v.ctx, v.end = context.WithCancel(ctx)
			defer v.end()
			c, err := v.connect(ctx)
			switch {
			case tc.want == nil && err != nil:
				t.Fatalf("connect: %v", err)
			case tc.want == nil:
				if len(c.qs) != tc.queues {
					t.Errorf("%d queues", len(c.qs))
				}
				for _, q := range c.qs {
					close(q.txDone) // no txLoop ran
				}
				v.teardown(c)
			case err == nil:
				t.Fatalf("connect accepted %d queues", len(c.qs))
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
