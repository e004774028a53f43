package netfront

import (
	"fmt"

	"github.com/gozen-dev/gozen/drivers/netif"
	"github.com/gozen-dev/gozen/gnttab"
)

// txSlots returns the data slots (pages) a frame of n bytes takes.
func txSlots(n int) int { return (n + gnttab.PageSize - 1) / gnttab.PageSize }

// checkFrame checks that f can be sent with features ft.
func checkFrame(f *Frame, ft Features) error {
	n := len(f.Data)
	switch {
	case n == 0 || n > MaxFrameSize:
		return fmt.Errorf("%w: %d bytes (1 to %d)", ErrFrame, n, MaxFrameSize)
	case n > gnttab.PageSize && !ft.SG:
		return fmt.Errorf("%w: %d bytes without scatter-gather (max %d)", ErrFrame, n, gnttab.PageSize)
	}
	switch f.GSO.Type {
	case netif.GSONone:
	case netif.GSOTCPv4, netif.GSOTCPv6:
		if (f.GSO.Type == netif.GSOTCPv4 && !ft.GSOTCPv4) || (f.GSO.Type == netif.GSOTCPv6 && !ft.GSOTCPv6) {
			return fmt.Errorf("%w: GSO %v not offered by the backend", ErrFrame, f.GSO.Type)
		}
		if f.GSO.Size == 0 {
			return fmt.Errorf("%w: GSO %v with segment size 0", ErrFrame, f.GSO.Type)
		}
	default:
		return fmt.Errorf("%w: GSO type %v", ErrFrame, f.GSO.Type)
	}
	return nil
}

// gcTx consumes the transmit responses: each answered id's page is free
// again. Responses to extra-info slots (status RspNull) carry no id.
func (q *queue) gcTx(st *counters) error {
	var b [netif.TxResponseSize]byte
	for {
		ok, err := q.tx.TakeResponse(b[:])
		if err != nil {
			return q.dead.set(fmt.Errorf("netfront: tx ring: %w", err))
		}
		if !ok {
			return nil
		}
		r, _ := netif.DecodeTxResponse(b[:])
		if r.Status == netif.RspNull {
			continue
		}
		if int(r.ID) >= len(q.txBusy) || !q.txBusy[r.ID] {
			return q.dead.set(fmt.Errorf("%w: tx response for id %d, which is not in flight", ErrProtocol, r.ID))
		}
		q.txBusy[r.ID] = false
		q.txFree = append(q.txFree, r.ID)
		if r.Status != netif.RspOkay {
			st.txErrors.Add(1)
		}
	}
}

// inflight returns the number of transmit pages not answered yet.
func (q *queue) inflight() int { return len(q.txBusy) - len(q.txFree) }

// putFrame copies f into free pages and puts its requests (the first,
// the GSO extra, the others), without pushing them. It reports false if
// the ring or the pool has no room for it now.
func (q *queue) putFrame(f *Frame) (bool, error) {
	n := len(f.Data)
	slots := txSlots(n)
	extra := f.GSO.Type != netif.GSONone
	need := slots
	if extra {
		need++
	}
	if q.tx.FreeRequests() < need || len(q.txFree) < slots {
		return false, nil
	}
	var flags netif.TxFlags
	if f.Flags&CsumBlank != 0 {
		flags |= netif.TxCsumBlank | netif.TxDataValidated
	} else if f.Flags&DataValidated != 0 {
		flags |= netif.TxDataValidated
	}
	b := q.txScratch[:]
	for i := range slots {
		id := q.txFree[len(q.txFree)-1]
		q.txFree = q.txFree[:len(q.txFree)-1]
		q.txBusy[id] = true
		chunk := f.Data[i*gnttab.PageSize : min(n, (i+1)*gnttab.PageSize)]
		copy(q.txPool.Buf[int(id)*gnttab.PageSize:], chunk)
		r := netif.TxRequest{Gref: uint32(q.txPool.Refs[id]), ID: id, Size: uint16(len(chunk))}
		if i == 0 {
			r.Flags = flags
			r.Size = uint16(n) // the first request carries the packet's size
			if extra {
				r.Flags |= netif.TxExtraInfo
			}
		}
		if i < slots-1 {
			r.Flags |= netif.TxMoreData
		}
		r.Encode(b)
		if err := q.tx.PutRequest(b); err != nil {
			return false, q.dead.set(fmt.Errorf("netfront: tx ring: %w", err))
		}
		if i == 0 && extra {
			clear(b)
			netif.GSOExtra(f.GSO.Size, f.GSO.Type, 0).Encode(b)
			if err := q.tx.PutRequest(b); err != nil {
				return false, q.dead.set(fmt.Errorf("netfront: tx ring: %w", err))
			}
		}
	}
	return true, nil
}
