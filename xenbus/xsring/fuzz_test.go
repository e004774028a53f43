package xsring

import (
	"context"
	"encoding/binary"
	"errors"
	"testing"

	"github.com/gozen-dev/gozen/evtchn"
	"github.com/gozen-dev/gozen/xenbus/wire"
)

// deadNotifier never delivers: Wait fails at once, so a reader that needs
// more data returns instead of blocking.
type deadNotifier struct{}

func (deadNotifier) Notify() error { return nil }
func (deadNotifier) Wait(context.Context, evtchn.Generation) (evtchn.Generation, error) {
	return 0, evtchn.ErrClosed
}

// FuzzRingReader gives the client-side reader an arbitrary response ring:
// 4 bytes rsp_cons, 4 bytes rsp_prod, then the ring contents. Reading must
// never panic nor loop, must only return messages within the protocol
// limits, and must never consume more than was produced.
func FuzzRingReader(f *testing.F) {
	seed := func(cons, prod uint32, data []byte) []byte {
		b := binary.LittleEndian.AppendUint32(nil, cons)
		b = binary.LittleEndian.AppendUint32(b, prod)
		return append(b, data...)
	}
	msg, _ := wire.Msg{Header: wire.Header{Type: wire.Read, ReqID: 1}, Payload: []byte("value")}.Marshal()
	f.Add(seed(0, uint32(len(msg)), msg))
	f.Add(seed(0xfffffffa, 0xfffffffa+uint32(len(msg)), msg))
	f.Add(seed(0, 2000, nil))
	f.Add(seed(0, 16, []byte{2, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff}))
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) < 8 {
			return
		}
		page := make([]byte, PageSize)
		cons0 := binary.LittleEndian.Uint32(in)
		prod := binary.LittleEndian.Uint32(in[4:])
		copy(page[OffRsp:OffRsp+Size], in[8:])
		r, err := New(page, Client, deadNotifier{})
		if err != nil {
			t.Fatal(err)
		}
		r.Store(OffRspCons, cons0)
		r.Store(OffRspProd, prod)
		for i := 0; ; i++ {
			if i > Size/wire.HeaderSize+1 {
				t.Fatal("read more messages than fit in the ring")
			}
			m, err := r.ReadMsg(context.Background())
			if err != nil {
				if prod-cons0 > Size && !errors.Is(err, ErrCorrupt) {
					t.Fatalf("bad indices gave %v", err)
				}
				break
			}
			if len(m.Payload) > wire.PayloadMax || int(m.Len) != len(m.Payload) {
				t.Fatalf("message of %d bytes", len(m.Payload))
			}
		}
		if consumed := r.Load(OffRspCons) - cons0; prod-cons0 <= Size && consumed > prod-cons0 {
			t.Fatalf("consumed %d of %d bytes", consumed, prod-cons0)
		}
	})
}
