package netback

import (
	"context"
	"errors"
	"fmt"

	"github.com/gozen-dev/gozen/drivers/netif"
	"github.com/gozen-dev/gozen/gnttab"
)

// Send gives a frame to the frontend (its receive path): it waits, until
// ctx ends, for a connection and for enough receive requests, copies the
// frame into the offered pages (one page per slot, a GSO extra-info slot
// after the first), answers them and notifies the frontend. Frames of
// more than one page need the frontend's feature-sg. With several queues
// the frame goes on the queue its flow hashes to (netif.FlowHash), so a
// flow's frames reach the frontend in order.
func (v *VIF) Send(ctx context.Context, f Frame) error {
	n := len(f.Data)
	slots := (n + gnttab.PageSize - 1) / gnttab.PageSize
	if n == 0 || slots > netif.SlotsMin {
		return fmt.Errorf("netback %s: frame of %d bytes", v.b.Name(), n)
	}
	need := slots
	if f.GSOType != netif.GSONone {
		need++
	}
	for {
		c, err := v.current(ctx)
		if err != nil {
			return err
		}
		// A flow's frames go on one queue, in order.
		q := c.qs[0]
		if len(c.qs) > 1 {
			q = c.qs[netif.FlowHash(f.Data)%uint32(len(c.qs))]
		}
		err = v.sendOn(ctx, c, q, f, slots, need)
		if errors.Is(err, errRetry) {
			continue
		}
		return err
	}
}

var errRetry = errors.New("netback: connection changed")

func (v *VIF) sendOn(ctx context.Context, c *conn, q *queue, f Frame, slots, need int) error {
	v.rxMu.Lock()
	defer v.rxMu.Unlock()
	if c.ctx.Err() != nil {
		return errRetry
	}
	for {
		// Wait for the whole frame's slots: asking for a notification at
		// the next request even when fewer than need already wait (else
		// this would spin, deaf to ctx, on a frontend that stopped).
		ok, err := q.rx.FinalCheckForRequestsN(need)
		if err != nil {
			v.broken(c, err)
			return fmt.Errorf("netback %s: %w", v.b.Name(), err)
		}
		if ok {
			break
		}
		seen := q.rxSeen
		v.rxMu.Unlock()
		g, err := c.ev.Wait(ctx, q.rxPort, seen)
		v.rxMu.Lock()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil || c.ctx.Err() != nil {
			return errRetry
		}
		q.rxSeen = max(q.rxSeen, g)
	}
	var raw [netif.RxRequestSize]byte
	var rsp [netif.RxResponseSize]byte
	flags := netif.RxFlags(0)
	if f.CsumBlank {
		flags |= netif.RxCsumBlank | netif.RxDataValidated
	} else if f.DataValidated {
		flags |= netif.RxDataValidated
	}
	for i := range slots {
		if _, err := q.rx.TakeRequest(raw[:]); err != nil {
			return err
		}
		req, _ := netif.DecodeRxRequest(raw[:])
		chunk := f.Data[i*gnttab.PageSize : min(len(f.Data), (i+1)*gnttab.PageSize)]
		r := netif.RxResponse{ID: req.ID, Status: int16(len(chunk))}
		if err := c.mem.CopyTo(c.front, gnttab.Ref(req.Gref), 0, chunk); err != nil {
			r.Status = netif.RspError
		}
		if i == 0 {
			r.Flags = flags
			if f.GSOType != netif.GSONone {
				r.Flags |= netif.RxExtraInfo
			}
		}
		if i < slots-1 {
			r.Flags |= netif.RxMoreData
		}
		r.Encode(rsp[:])
		if err := q.rx.PutResponse(rsp[:]); err != nil {
			return err
		}
		if i == 0 && f.GSOType != netif.GSONone {
			if _, err := q.rx.TakeRequest(raw[:]); err != nil {
				return err
			}
			netif.GSOExtra(f.GSOSize, f.GSOType, 0).Encode(rsp[:])
			if err := q.rx.PutResponse(rsp[:]); err != nil {
				return err
			}
		}
	}
	if q.rx.PushResponsesAndCheckNotify() {
		c.notify(q.rxPort)
	}
	v.mu.Lock()
	v.stats.RXFrames++
	countLocked(&v.stats.QueueRXFrames, q.index)
	v.mu.Unlock()
	return nil
}
