package ring

import (
	"encoding/binary"
	"errors"
	"testing"
)

// The fuzz input is a start index (4 bytes, little endian) and then
// operations of 2 bytes, op and arg, on a ring of 8 entries (two-entry
// layouts are too small to reach interesting states). The local end runs
// its protocol honestly; the peer is played by the input: it moves its
// producer index anywhere, answers, and scribbles on the slots and on the
// event indices.
var fuzzLayout = Layout{ReqSize: 480, RspSize: 24, Align: 8} // 8 entries in a page

func fuzzSeeds(f *testing.F) {
	in := func(start uint32, ops ...byte) []byte {
		return append(binary.LittleEndian.AppendUint32(nil, start), ops...)
	}
	f.Add(in(0, 0, 3, 1, 3, 2, 3, 3, 0))
	f.Add(in(0xfffffffe, 0, 8, 1, 8, 2, 8, 0, 8, 1, 16, 2, 8))
	f.Add(in(5, 0, 2, 1, 9, 2, 1))
	f.Add(in(0, 0, 4, 4, 0xff, 2, 1))
	f.Add(in(0x7ffffffc, 0, 1, 5, 0x80, 2, 1, 6, 9, 3, 0))
}

// FuzzFront fuzzes the response-consuming side of a Front against a
// hostile backend.
func FuzzFront(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) < 4 {
			return
		}
		start := binary.LittleEndian.Uint32(in)
		mem, fr, _ := pair(t, fuzzLayout, 0, start)
		size := uint32(fr.Size())
		req := make([]byte, fuzzLayout.ReqSize)
		rsp := make([]byte, fuzzLayout.RspSize)
		dead := false
		peerProd := start
		for in = in[4:]; len(in) >= 2; in = in[2:] {
			op, arg := in[0], in[1]
			cons0, cached := fr.rspCons, fr.rspProd
			var err error
			switch op % 7 {
			case 0: // put and push up to arg requests
				for i := 0; i < int(arg%16) && !fr.Full(); i++ {
					seqEntry(req, fr.reqProdPvt)
					if err = fr.PutRequest(req); err != nil {
						break
					}
				}
				fr.PushRequestsAndCheckNotify()
			case 1: // the peer answers arg requests (or claims to)
				peerProd += uint32(arg)
				store32(mem, OffRspProd, peerProd)
			case 2: // take up to arg responses
				for range arg % 16 {
					var ok bool
					before := fr.rspCons
					if ok, err = fr.TakeResponse(rsp); !ok || err != nil {
						break
					}
					if fr.rspCons != before+1 {
						t.Fatalf("rsp_cons %d -> %d", before, fr.rspCons)
					}
				}
			case 3:
				_, err = fr.FinalCheckForResponses()
			case 4: // the peer jumps
				peerProd += uint32(arg) << 24
				store32(mem, OffRspProd, peerProd)
			case 5: // the peer scribbles on a slot or the event index
				mem[HeaderSize+int(arg)*int(fuzzLayout.EntrySize())/32] = arg
				store32(mem, OffReqEvent, uint32(arg)*0x01010101)
			case 6:
				_, err = fr.UnconsumedResponses()
			}
			switch {
			case err != nil && !errors.Is(err, ErrCorrupt):
				t.Fatalf("op %d: unexpected error %v", op%7, err)
			case dead && err == nil && (op%7 == 3 || op%7 == 6 || op%7 == 2 && arg%16 != 0):
				t.Fatalf("op %d on a dead front succeeded", op%7)
			case dead && fr.rspCons != cons0:
				t.Fatal("dead front consumed")
			case fr.reqPushed-fr.rspCons > size || fr.reqProdPvt-fr.rspCons > size:
				t.Fatalf("req_prod_pvt %d, pushed %d, rsp_cons %d", fr.reqProdPvt, fr.reqPushed, fr.rspCons)
			case fr.rspCons != cons0 && fr.rspCons-cons0 > fr.rspProd-cons0:
				t.Fatalf("consumed %d -> %d past the checked rsp_prod %d (cached %d)", cons0, fr.rspCons, fr.rspProd, cached)
			}
			if err != nil {
				dead = true
			}
		}
	})
}

// FuzzBack fuzzes the request-consuming side of a Back against a hostile
// frontend.
func FuzzBack(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, in []byte) {
		if len(in) < 4 {
			return
		}
		start := binary.LittleEndian.Uint32(in)
		mem, _, bk := pair(t, fuzzLayout, 0, start)
		size := uint32(bk.Size())
		req := make([]byte, fuzzLayout.ReqSize)
		rsp := make([]byte, fuzzLayout.RspSize)
		dead := false
		peerProd := start
		for in = in[4:]; len(in) >= 2; in = in[2:] {
			op, arg := in[0], in[1]
			cons0 := bk.reqCons
			var err error
			switch op % 7 {
			case 0: // answer up to arg consumed requests and push
				for range arg % 16 {
					if bk.rspProdPvt == bk.reqCons {
						break
					}
					if err = bk.PutResponse(rsp); err != nil {
						break
					}
				}
				bk.PushResponsesAndCheckNotify()
			case 1: // the peer pushes arg requests (or claims to)
				peerProd += uint32(arg)
				store32(mem, OffReqProd, peerProd)
			case 2: // take up to arg requests
				for range arg % 16 {
					var ok bool
					before := bk.reqCons
					if ok, err = bk.TakeRequest(req); !ok || err != nil {
						break
					}
					if bk.reqCons != before+1 {
						t.Fatalf("req_cons %d -> %d", before, bk.reqCons)
					}
				}
			case 3:
				_, err = bk.FinalCheckForRequests()
			case 4:
				peerProd += uint32(arg) << 24
				store32(mem, OffReqProd, peerProd)
			case 5:
				mem[HeaderSize+int(arg)*int(fuzzLayout.EntrySize())/32] = arg
				store32(mem, OffRspEvent, uint32(arg)*0x01010101)
			case 6:
				_, err = bk.UnconsumedRequests()
			}
			switch {
			case err != nil && !errors.Is(err, ErrCorrupt):
				t.Fatalf("op %d: unexpected error %v", op%7, err)
			case dead && err == nil && (op%7 == 3 || op%7 == 6 || op%7 == 2 && arg%16 != 0):
				t.Fatalf("op %d on a dead back succeeded", op%7)
			case dead && bk.reqCons != cons0:
				t.Fatal("dead back consumed")
			case bk.reqCons-bk.rspProdPvt > size || op%7 == 0 && bk.rspPushed != bk.rspProdPvt:
				t.Fatalf("req_cons %d, rsp_prod_pvt %d, pushed %d", bk.reqCons, bk.rspProdPvt, bk.rspPushed)
			case bk.reqCons != cons0 && bk.reqCons-cons0 > bk.reqProd-cons0:
				t.Fatalf("consumed %d -> %d past the checked req_prod %d", cons0, bk.reqCons, bk.reqProd)
			}
			if err != nil {
				dead = true
			}
		}
	})
}
