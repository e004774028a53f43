package netback

import (
	"fmt"

	"github.com/gozen-dev/gozen/drivers/netif"
	"github.com/gozen-dev/gozen/evtchn"
	"github.com/gozen-dev/gozen/gnttab"
)

// txSlot is one request slot of a packet being transmitted.
type txSlot struct {
	req   netif.TxRequest
	extra bool // an extra-info slot: req holds its bytes
	e     netif.Extra
}

// txPacket collects the slots of one transmitted packet.
type txPacket struct {
	slots               []txSlot
	wantExtra, wantData bool
	data, extras        int
}

// add adds the next request slot and reports whether the packet is
// complete.
func (p *txPacket) add(raw []byte) (bool, error) {
	r, _ := netif.DecodeTxRequest(raw)
	s := txSlot{req: r}
	switch {
	case len(p.slots) == 0:
		p.wantExtra = r.Flags&netif.TxExtraInfo != 0
		p.wantData = r.Flags&netif.TxMoreData != 0
		p.data++
	case p.wantExtra:
		s.extra = true
		s.e, _ = netif.DecodeExtra(raw)
		if s.e.Type == netif.ExtraNone || s.e.Type >= netif.ExtraTypeMax {
			return false, fmt.Errorf("%w: tx extra info of type %d", ErrProtocol, s.e.Type)
		}
		p.wantExtra = s.e.More()
		p.extras++
	default:
		if r.Flags&netif.TxExtraInfo != 0 {
			return false, fmt.Errorf("%w: tx extra info after the first slot", ErrProtocol)
		}
		p.wantData = r.Flags&netif.TxMoreData != 0
		p.data++
	}
	if p.data > netif.SlotsMin || p.extras > netif.MaxExtras {
		return false, fmt.Errorf("%w: tx packet of more than %d data or %d extra slots", ErrProtocol, netif.SlotsMin, netif.MaxExtras)
	}
	p.slots = append(p.slots, s)
	return !p.wantExtra && !p.wantData, nil
}

func (p *txPacket) reset() { *p = txPacket{slots: p.slots[:0]} }

// txLoop takes the frontend's transmitted packets on q until the
// connection ends, driven by q's (tx) event channel. With several queues
// the loops run concurrently; OnFrame is called by one at a time.
func (v *VIF) txLoop(c *conn, q *queue) {
	defer close(q.txDone)
	var (
		raw  [netif.TxRequestSize]byte
		p    txPacket
		buf  = make([]byte, netif.SlotsMin*gnttab.PageSize)
		seen evtchn.Generation
	)
	for c.ctx.Err() == nil {
		ok, err := q.tx.TakeRequest(raw[:])
		if err != nil {
			v.broken(c, err)
			return
		}
		if ok {
			done, err := p.add(raw[:])
			if err == nil && done {
				err = v.txDeliver(c, q, p.slots, buf)
				p.reset()
			}
			if err != nil {
				v.broken(c, err)
				return
			}
			continue
		}
		if q.tx.PushResponsesAndCheckNotify() {
			c.notify(q.txPort)
		}
		more, err := q.tx.FinalCheckForRequests()
		if err != nil {
			v.broken(c, err)
			return
		}
		if more {
			continue
		}
		g, err := c.ev.Wait(c.ctx, q.txPort, seen)
		if err != nil {
			return
		}
		seen = g
	}
}

// txDeliver copies a complete packet out of the frontend's pages,
// answers every slot and hands the frame to OnFrame.
func (v *VIF) txDeliver(c *conn, q *queue, slots []txSlot, buf []byte) error {
	var f Frame
	first := slots[0].req
	total, rest := int(first.Size), 0
	for _, s := range slots[1:] {
		if s.extra {
			if s.e.Type == netif.ExtraGSO {
				f.GSOSize, f.GSOType, _ = s.e.GSO()
			}
			continue
		}
		rest += int(s.req.Size)
	}
	status := netif.RspOkay
	if rest > total {
		status = netif.RspError
	}
	k := 0
	for i, s := range slots {
		if s.extra || status != netif.RspOkay {
			continue
		}
		n := int(s.req.Size)
		if i == 0 {
			n = total - rest
		}
		if int(s.req.Offset)+n > gnttab.PageSize || k+n > len(buf) {
			status = netif.RspError
			break
		}
		if err := c.mem.CopyFrom(c.front, gnttab.Ref(s.req.Gref), int(s.req.Offset), buf[k:k+n]); err != nil {
			status = netif.RspError
			break
		}
		k += n
	}
	var b [netif.TxResponseSize]byte
	for _, s := range slots {
		r := netif.TxResponse{ID: s.req.ID, Status: status}
		if s.extra {
			r = netif.TxResponse{Status: netif.RspNull}
		}
		r.Encode(b[:])
		if err := q.tx.PutResponse(b[:]); err != nil {
			return err
		}
	}
	v.mu.Lock()
	if status == netif.RspOkay {
		v.stats.TXFrames++
		countLocked(&v.stats.QueueTXFrames, q.index)
	} else {
		v.stats.TXErrors++
	}
	v.mu.Unlock()
	if status == netif.RspOkay && v.o.OnFrame != nil {
		f.Data = buf[:k]
		f.CsumBlank = first.Flags&netif.TxCsumBlank != 0
		f.DataValidated = first.Flags&netif.TxDataValidated != 0
		v.frameMu.Lock()
		v.o.OnFrame(f)
		v.frameMu.Unlock()
	}
	return nil
}
