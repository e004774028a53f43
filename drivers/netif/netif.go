// Package netif is the wire format of Xen's network split driver, the
// structures of xen/include/public/io/netif.h shared by netfront and
// netback: the transmit and receive requests and responses, the extra-info
// slot, their flags, and the ring layouts for package ring.
//
// Every structure is little-endian (the x86 guests Xen runs) and encoded
// with encoding/binary; Decode* functions never fail on content (every bit
// pattern is some value), so callers check what they use: ids, sizes,
// offsets and types coming from the peer are untrusted.
package netif

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/gozen-dev/gozen/drivers/ring"
)

// Sizes of the structures in bytes (C's sizeof).
const (
	TxRequestSize  = 12 // struct netif_tx_request
	TxResponseSize = 4  // struct netif_tx_response
	RxRequestSize  = 8  // struct netif_rx_request
	RxResponseSize = 8  // struct netif_rx_response
	ExtraInfoSize  = 8  // struct netif_extra_info
)

// TxLayout is the layout of the transmit ring (netif_tx_sring): entries
// of 12 bytes, the request (or an extra-info slot), aligned to 4.
var TxLayout = ring.Layout{ReqSize: TxRequestSize, RspSize: TxResponseSize, Align: 4}

// RxLayout is the layout of the receive ring (netif_rx_sring): entries of
// 8 bytes, the response (or an extra-info slot), aligned to 4.
var RxLayout = ring.Layout{ReqSize: RxRequestSize, RspSize: RxResponseSize, Align: 4}

// Limits of the protocol.
const (
	// MaxTxSize is the largest packet: the first transmit request's size
	// is a uint16 (XEN_NETIF_MAX_TX_SIZE).
	MaxTxSize = 0xffff
	// SlotsMin is the number of slots per packet every backend accepts
	// (XEN_NETIF_NR_SLOTS_MIN); netfront never uses more, and refuses
	// received packets that use more.
	SlotsMin = 18
	// MaxExtras bounds an extra-info chain: one slot per extra type at
	// most.
	MaxExtras = ExtraTypeMax - 1
)

// TxFlags are the flags of a transmit request (NETTXF_*).
type TxFlags uint16

// Transmit flags.
const (
	// TxCsumBlank: the protocol checksum field is blank (to be filled
	// by the receiver or its NIC).
	TxCsumBlank TxFlags = 1 << 0
	// TxDataValidated: the packet data was validated (checksum known
	// good).
	TxDataValidated TxFlags = 1 << 1
	// TxMoreData: the packet continues in the next request.
	TxMoreData TxFlags = 1 << 2
	// TxExtraInfo: an extra-info slot follows this request.
	TxExtraInfo TxFlags = 1 << 3
)

// RxFlags are the flags of a receive response (NETRXF_*).
type RxFlags uint16

// Receive flags.
const (
	// RxDataValidated: the packet data was validated.
	RxDataValidated RxFlags = 1 << 0
	// RxCsumBlank: the protocol checksum field is blank.
	RxCsumBlank RxFlags = 1 << 1
	// RxMoreData: the packet continues in the next response.
	RxMoreData RxFlags = 1 << 2
	// RxExtraInfo: an extra-info slot follows this response.
	RxExtraInfo RxFlags = 1 << 3
	// RxGSOPrefix: the response is a GSO prefix (old protocol, never
	// requested by netfront).
	RxGSOPrefix RxFlags = 1 << 4
)

// Response status values (NETIF_RSP_*); a receive response's positive
// status is the fragment's length instead.
const (
	RspDropped int16 = -2 // NETIF_RSP_DROPPED
	RspError   int16 = -1 // NETIF_RSP_ERROR
	RspOkay    int16 = 0  // NETIF_RSP_OKAY
	RspNull    int16 = 1  // NETIF_RSP_NULL: the answer to an extra-info slot
)

// ExtraType is the type of an extra-info slot (XEN_NETIF_EXTRA_TYPE_*).
type ExtraType uint8

// Extra-info types.
const (
	ExtraNone     ExtraType = 0
	ExtraGSO      ExtraType = 1
	ExtraMcastAdd ExtraType = 2
	ExtraMcastDel ExtraType = 3
	ExtraHash     ExtraType = 4
	ExtraXDP      ExtraType = 5
	// ExtraTypeMax is one past the last known type.
	ExtraTypeMax = 6
)

// ExtraFlagMore means another extra-info slot follows
// (XEN_NETIF_EXTRA_FLAG_MORE).
const ExtraFlagMore = 1 << 0

// GSOType is the segmentation type of a GSO extra (XEN_NETIF_GSO_TYPE_*).
type GSOType uint8

// GSO types.
const (
	GSONone  GSOType = 0
	GSOTCPv4 GSOType = 1
	GSOTCPv6 GSOType = 2
)

// String returns "none", "tcpv4", "tcpv6" or "gso(N)".
func (g GSOType) String() string {
	switch g {
	case GSONone:
		return "none"
	case GSOTCPv4:
		return "tcpv4"
	case GSOTCPv6:
		return "tcpv6"
	}
	return fmt.Sprintf("gso(%d)", uint8(g))
}

// ErrShort means a buffer is smaller than the structure decoded from or
// encoded into it.
var ErrShort = errors.New("netif: buffer too short")

func short(what string, n, want int) error {
	return fmt.Errorf("%w: %s needs %d bytes, got %d", ErrShort, what, want, n)
}

// TxRequest is struct netif_tx_request.
type TxRequest struct {
	Gref   uint32  // grant of the page holding the data
	Offset uint16  // offset of the data in the page
	Flags  TxFlags // NETTXF_*
	ID     uint16  // echoed in the response
	Size   uint16  // the packet's total size in the first request, the fragment's in the others
}

// Encode writes r into b (at least TxRequestSize bytes).
func (r TxRequest) Encode(b []byte) error {
	if len(b) < TxRequestSize {
		return short("tx request", len(b), TxRequestSize)
	}
	binary.LittleEndian.PutUint32(b[0:], r.Gref)
	binary.LittleEndian.PutUint16(b[4:], r.Offset)
	binary.LittleEndian.PutUint16(b[6:], uint16(r.Flags))
	binary.LittleEndian.PutUint16(b[8:], r.ID)
	binary.LittleEndian.PutUint16(b[10:], r.Size)
	return nil
}

// DecodeTxRequest reads a TxRequest from b.
func DecodeTxRequest(b []byte) (TxRequest, error) {
	if len(b) < TxRequestSize {
		return TxRequest{}, short("tx request", len(b), TxRequestSize)
	}
	return TxRequest{
		Gref:   binary.LittleEndian.Uint32(b[0:]),
		Offset: binary.LittleEndian.Uint16(b[4:]),
		Flags:  TxFlags(binary.LittleEndian.Uint16(b[6:])),
		ID:     binary.LittleEndian.Uint16(b[8:]),
		Size:   binary.LittleEndian.Uint16(b[10:]),
	}, nil
}

// TxResponse is struct netif_tx_response.
type TxResponse struct {
	ID     uint16 // the request's id
	Status int16  // RspOkay, RspError, RspDropped, or RspNull for an extra slot
}

// Encode writes r into b (at least TxResponseSize bytes).
func (r TxResponse) Encode(b []byte) error {
	if len(b) < TxResponseSize {
		return short("tx response", len(b), TxResponseSize)
	}
	binary.LittleEndian.PutUint16(b[0:], r.ID)
	binary.LittleEndian.PutUint16(b[2:], uint16(r.Status))
	return nil
}

// DecodeTxResponse reads a TxResponse from b.
func DecodeTxResponse(b []byte) (TxResponse, error) {
	if len(b) < TxResponseSize {
		return TxResponse{}, short("tx response", len(b), TxResponseSize)
	}
	return TxResponse{ID: binary.LittleEndian.Uint16(b[0:]), Status: int16(binary.LittleEndian.Uint16(b[2:]))}, nil
}

// RxRequest is struct netif_rx_request: a page offered for a received
// packet.
type RxRequest struct {
	ID   uint16 // echoed in the response
	Gref uint32 // grant of the (writable) page
}

// Encode writes r into b (at least RxRequestSize bytes); the padding is
// zeroed.
func (r RxRequest) Encode(b []byte) error {
	if len(b) < RxRequestSize {
		return short("rx request", len(b), RxRequestSize)
	}
	binary.LittleEndian.PutUint16(b[0:], r.ID)
	binary.LittleEndian.PutUint16(b[2:], 0)
	binary.LittleEndian.PutUint32(b[4:], r.Gref)
	return nil
}

// DecodeRxRequest reads an RxRequest from b.
func DecodeRxRequest(b []byte) (RxRequest, error) {
	if len(b) < RxRequestSize {
		return RxRequest{}, short("rx request", len(b), RxRequestSize)
	}
	return RxRequest{ID: binary.LittleEndian.Uint16(b[0:]), Gref: binary.LittleEndian.Uint32(b[4:])}, nil
}

// RxResponse is struct netif_rx_response.
type RxResponse struct {
	ID     uint16  // the request's id
	Offset uint16  // offset of the data in the page
	Flags  RxFlags // NETRXF_*
	Status int16   // the fragment's length if >= 0, else RspError or RspDropped
}

// Encode writes r into b (at least RxResponseSize bytes).
func (r RxResponse) Encode(b []byte) error {
	if len(b) < RxResponseSize {
		return short("rx response", len(b), RxResponseSize)
	}
	binary.LittleEndian.PutUint16(b[0:], r.ID)
	binary.LittleEndian.PutUint16(b[2:], r.Offset)
	binary.LittleEndian.PutUint16(b[4:], uint16(r.Flags))
	binary.LittleEndian.PutUint16(b[6:], uint16(r.Status))
	return nil
}

// DecodeRxResponse reads an RxResponse from b.
func DecodeRxResponse(b []byte) (RxResponse, error) {
	if len(b) < RxResponseSize {
		return RxResponse{}, short("rx response", len(b), RxResponseSize)
	}
	return RxResponse{
		ID:     binary.LittleEndian.Uint16(b[0:]),
		Offset: binary.LittleEndian.Uint16(b[2:]),
		Flags:  RxFlags(binary.LittleEndian.Uint16(b[4:])),
		Status: int16(binary.LittleEndian.Uint16(b[6:])),
	}, nil
}

// Extra is struct netif_extra_info. Its 6-byte union is kept raw in U;
// the GSO accessors read and write the gso member.
type Extra struct {
	Type  ExtraType // XEN_NETIF_EXTRA_TYPE_*
	Flags uint8     // ExtraFlagMore
	U     [6]byte   // the union: gso, mcast, hash...
}

// GSOExtra returns an extra-info slot of type GSO: segment size, type and
// features (XEN_NETIF_GSO_FEATURE_*, none defined yet).
func GSOExtra(size uint16, typ GSOType, features uint16) Extra {
	e := Extra{Type: ExtraGSO}
	binary.LittleEndian.PutUint16(e.U[0:], size)
	e.U[2] = uint8(typ)
	binary.LittleEndian.PutUint16(e.U[4:], features)
	return e
}

// GSO returns the gso member: segment size, type and features.
func (e Extra) GSO() (size uint16, typ GSOType, features uint16) {
	return binary.LittleEndian.Uint16(e.U[0:]), GSOType(e.U[2]), binary.LittleEndian.Uint16(e.U[4:])
}

// More reports whether another extra-info slot follows.
func (e Extra) More() bool { return e.Flags&ExtraFlagMore != 0 }

// Encode writes e into b (at least ExtraInfoSize bytes).
func (e Extra) Encode(b []byte) error {
	if len(b) < ExtraInfoSize {
		return short("extra info", len(b), ExtraInfoSize)
	}
	b[0], b[1] = uint8(e.Type), e.Flags
	copy(b[2:8], e.U[:])
	return nil
}

// DecodeExtra reads an Extra from b.
func DecodeExtra(b []byte) (Extra, error) {
	if len(b) < ExtraInfoSize {
		return Extra{}, short("extra info", len(b), ExtraInfoSize)
	}
	e := Extra{Type: ExtraType(b[0]), Flags: b[1]}
	copy(e.U[:], b[2:8])
	return e, nil
}
