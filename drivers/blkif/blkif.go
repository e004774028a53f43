// Package blkif is the wire format of Xen's block split driver,
// io/blkif.h, shared by the frontend (package blkfront) and the backend
// (package blkback): the ring's request and response entries, the
// segments naming the granted data pages, the indirect and discard
// requests, the operations, statuses and xenstore constants.
//
// Layouts are those of the x86_64 ABI ("x86_64-abi"), little endian:
//
//	request (112 bytes):  operation u8, nr_segments u8, handle u16, pad,
//	                      id u64 @8, sector_number u64 @16,
//	                      seg[11] @24 (gref u32, first_sect u8,
//	                      last_sect u8, pad u16)
//	discard (32 bytes):   operation u8, flag u8, handle u16, pad,
//	                      id u64 @8, sector_number u64 @16,
//	                      nr_sectors u64 @24
//	indirect (64 bytes):  operation u8, indirect_op u8, nr_segments u16,
//	                      pad, id u64 @8, sector_number u64 @16,
//	                      handle u16 @24, pad, indirect_grefs[8] @28
//	response (16 bytes):  id u64, operation u8 @8, pad, status i16 @10
//
// Sector numbers and the first/last sector of a segment always count
// 512-byte units, whatever the disk's logical sector size.
//
// Decoders take bytes already copied out of the shared ring (package ring
// does that) and check everything a structure can say about itself:
// known operation, segment counts, sector ranges within a page. What
// depends on the connection (negotiated features, disk size) is checked
// by the caller. Malformed input gives an error wrapping ErrMalformed,
// never a panic.
package blkif

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"

	"github.com/gozen-dev/gozen/drivers/ring"
	"github.com/gozen-dev/gozen/gnttab"
)

// ErrMalformed means a request, response or segment page does not follow
// blkif.h.
var ErrMalformed = errors.New("blkif: malformed")

// Sizes of the structures and units of the protocol.
const (
	// RequestSize is sizeof(struct blkif_request), the largest request.
	RequestSize = 112
	// ResponseSize is sizeof(struct blkif_response).
	ResponseSize = 16
	// SegmentSize is sizeof(struct blkif_request_segment).
	SegmentSize = 8
	// SectorSize is the unit of sector numbers and segment bounds.
	SectorSize = 512
	// SectorsPerPage is the number of 512-byte sectors of one page.
	SectorsPerPage = gnttab.PageSize / SectorSize
	// MaxSegments is BLKIF_MAX_SEGMENTS_PER_REQUEST: the segments of a
	// direct request.
	MaxSegments = 11
	// MaxIndirectPages is BLKIF_MAX_INDIRECT_PAGES_PER_REQUEST: the
	// segment pages an indirect request can name.
	MaxIndirectPages = 8
	// SegmentsPerPage is how many segments one indirect page holds.
	SegmentsPerPage = gnttab.PageSize / SegmentSize
	// MaxIndirectSegments is the most segments an indirect request can
	// carry (MaxIndirectPages full pages).
	MaxIndirectSegments = MaxIndirectPages * SegmentsPerPage
)

// Layout is the ring layout of blkif: 112-byte entries, 32 of them in a
// one-page ring.
var Layout = ring.Layout{ReqSize: RequestSize, RspSize: ResponseSize, Align: 8}

// Xenstore values.
const (
	// Protocol is the value of the frontend's "protocol" key for the
	// layouts of this package.
	Protocol = "x86_64-abi"
	// DiscardSecure is BLKIF_DISCARD_SECURE, the discard request's flag.
	DiscardSecure = 1
	// VDiskCDROM is the "info" bit of a CD-ROM.
	VDiskCDROM = 1
	// VDiskRemovable is the "info" bit of removable media.
	VDiskRemovable = 2
	// VDiskReadOnly is the "info" bit of a read-only disk.
	VDiskReadOnly = 4
)

// Op is a request's operation, BLKIF_OP_*.
type Op uint8

// The operations of blkif.h.
const (
	OpRead           Op = 0
	OpWrite          Op = 1
	OpWriteBarrier   Op = 2
	OpFlushDiskCache Op = 3
	OpDiscard        Op = 5
	OpIndirect       Op = 6
)

var opNames = map[Op]string{
	OpRead: "read", OpWrite: "write", OpWriteBarrier: "write-barrier",
	OpFlushDiskCache: "flush-diskcache", OpDiscard: "discard", OpIndirect: "indirect",
}

// String returns the operation's name, e.g. "read".
func (o Op) String() string {
	if s, ok := opNames[o]; ok {
		return s
	}
	return "op(" + strconv.Itoa(int(o)) + ")"
}

// Status is a response's status, BLKIF_RSP_*.
type Status int16

// The statuses of blkif.h.
const (
	StatusOK           Status = 0
	StatusError        Status = -1
	StatusNotSupported Status = -2
)

// String returns the status name, e.g. "okay".
func (s Status) String() string {
	switch s {
	case StatusOK:
		return "okay"
	case StatusError:
		return "error"
	case StatusNotSupported:
		return "eopnotsupp"
	}
	return "status(" + strconv.Itoa(int(s)) + ")"
}

// Known reports whether s is one of the statuses of blkif.h.
func (s Status) Known() bool { return s == StatusOK || s == StatusError || s == StatusNotSupported }

// Segment names the part of one granted page a request transfers:
// sectors First through Last (inclusive, 0..7) of page Ref.
type Segment struct {
	Ref         gnttab.Ref
	First, Last uint8
}

// Check reports a segment whose sector range is empty or leaves its page.
func (s Segment) Check() error {
	if s.First > s.Last || s.Last >= SectorsPerPage {
		return fmt.Errorf("%w: segment sectors %d..%d", ErrMalformed, s.First, s.Last)
	}
	return nil
}

// Offset returns the byte offset of the segment within its page.
func (s Segment) Offset() int { return int(s.First) * SectorSize }

// Len returns the bytes the segment transfers (for a checked segment).
func (s Segment) Len() int { return (int(s.Last) - int(s.First) + 1) * SectorSize }

func putSegment(b []byte, s Segment) {
	binary.LittleEndian.PutUint32(b, uint32(s.Ref))
	b[4], b[5], b[6], b[7] = s.First, s.Last, 0, 0
}

func getSegment(b []byte) Segment {
	return Segment{Ref: gnttab.Ref(binary.LittleEndian.Uint32(b)), First: b[4], Last: b[5]}
}

// Request is a decoded request of any kind; which fields are meaningful
// depends on Op.
type Request struct {
	// Op is the operation; OpIndirect for an indirect request.
	Op Op
	// Handle is the virtual device (blkif_vdev_t).
	Handle uint16
	// ID is the frontend's private value, echoed in the response.
	ID uint64
	// Sector is the first 512-byte sector (reads, writes, discards).
	Sector uint64
	// Segments are a direct request's segments (at most MaxSegments).
	Segments []Segment
	// IndirectOp is an indirect request's operation (OpRead or OpWrite).
	IndirectOp Op
	// NrSegments is an indirect request's segment count, 1 through
	// MaxIndirectSegments.
	NrSegments int
	// IndirectRefs are an indirect request's segment pages, exactly
	// IndirectPages(NrSegments) of them.
	IndirectRefs []gnttab.Ref
	// NrSectors is a discard's length in 512-byte sectors.
	NrSectors uint64
	// Secure is a discard's BLKIF_DISCARD_SECURE flag.
	Secure bool
}

// IndirectPages returns how many indirect pages n segments take.
func IndirectPages(n int) int { return (n + SegmentsPerPage - 1) / SegmentsPerPage }

// Encode writes r into b (at least RequestSize bytes), zeroing the rest
// of the entry. It fails for a request Decode would reject.
func (r *Request) Encode(b []byte) error {
	if len(b) < RequestSize {
		return fmt.Errorf("blkif: request buffer of %d bytes", len(b))
	}
	if err := r.check(); err != nil {
		return err
	}
	b = b[:RequestSize]
	clear(b)
	le := binary.LittleEndian
	b[0] = byte(r.Op)
	le.PutUint64(b[8:], r.ID)
	le.PutUint64(b[16:], r.Sector)
	switch r.Op {
	case OpDiscard:
		if r.Secure {
			b[1] = DiscardSecure
		}
		le.PutUint16(b[2:], r.Handle)
		le.PutUint64(b[24:], r.NrSectors)
	case OpIndirect:
		b[1] = byte(r.IndirectOp)
		le.PutUint16(b[2:], uint16(r.NrSegments))
		le.PutUint16(b[24:], r.Handle)
		for i, ref := range r.IndirectRefs {
			le.PutUint32(b[28+4*i:], uint32(ref))
		}
	default:
		b[1] = byte(len(r.Segments))
		le.PutUint16(b[2:], r.Handle)
		for i, s := range r.Segments {
			putSegment(b[24+SegmentSize*i:], s)
		}
	}
	return nil
}

func (r *Request) check() error {
	switch r.Op {
	case OpRead, OpWrite, OpWriteBarrier, OpFlushDiskCache:
		if len(r.Segments) > MaxSegments {
			return fmt.Errorf("%w: %s request with %d segments (max %d)", ErrMalformed, r.Op, len(r.Segments), MaxSegments)
		}
		if (r.Op == OpRead || r.Op == OpWrite) && len(r.Segments) == 0 {
			return fmt.Errorf("%w: %s request without segments", ErrMalformed, r.Op)
		}
		for i, s := range r.Segments {
			if err := s.Check(); err != nil {
				return fmt.Errorf("segment %d: %w", i, err)
			}
		}
	case OpDiscard:
	case OpIndirect:
		if r.IndirectOp != OpRead && r.IndirectOp != OpWrite {
			return fmt.Errorf("%w: indirect %s request", ErrMalformed, r.IndirectOp)
		}
		if r.NrSegments < 1 || r.NrSegments > MaxIndirectSegments {
			return fmt.Errorf("%w: indirect request with %d segments (max %d)", ErrMalformed, r.NrSegments, MaxIndirectSegments)
		}
		if len(r.IndirectRefs) != IndirectPages(r.NrSegments) {
			return fmt.Errorf("%w: indirect request of %d segments with %d pages", ErrMalformed, r.NrSegments, len(r.IndirectRefs))
		}
	default:
		return fmt.Errorf("%w: unknown operation %d", ErrMalformed, r.Op)
	}
	return nil
}

// DecodeRequest decodes a request entry (at least RequestSize bytes,
// already copied out of shared memory) and checks it (see Request). The
// segments of an indirect request are in its indirect pages: read them
// with DecodeSegments.
func DecodeRequest(b []byte) (Request, error) {
	if len(b) < RequestSize {
		return Request{}, fmt.Errorf("%w: request of %d bytes", ErrMalformed, len(b))
	}
	le := binary.LittleEndian
	r := Request{Op: Op(b[0]), ID: le.Uint64(b[8:]), Sector: le.Uint64(b[16:])}
	switch r.Op {
	case OpRead, OpWrite, OpWriteBarrier, OpFlushDiskCache:
		n := int(b[1])
		r.Handle = le.Uint16(b[2:])
		if n > MaxSegments {
			return Request{}, fmt.Errorf("%w: %s request with %d segments (max %d)", ErrMalformed, r.Op, n, MaxSegments)
		}
		r.Segments = make([]Segment, n)
		for i := range n {
			r.Segments[i] = getSegment(b[24+SegmentSize*i:])
		}
	case OpDiscard:
		r.Secure = b[1]&DiscardSecure != 0
		r.Handle = le.Uint16(b[2:])
		r.NrSectors = le.Uint64(b[24:])
	case OpIndirect:
		r.IndirectOp = Op(b[1])
		r.NrSegments = int(le.Uint16(b[2:]))
		r.Handle = le.Uint16(b[24:])
		if r.NrSegments >= 1 && r.NrSegments <= MaxIndirectSegments {
			r.IndirectRefs = make([]gnttab.Ref, IndirectPages(r.NrSegments))
			for i := range r.IndirectRefs {
				r.IndirectRefs[i] = gnttab.Ref(le.Uint32(b[28+4*i:]))
			}
		}
	}
	if err := r.check(); err != nil {
		return Request{}, err
	}
	return r, nil
}

// EncodeSegments writes segs into consecutive indirect pages: segment i
// goes to page i/SegmentsPerPage. pages must hold IndirectPages(len(segs))
// pages of gnttab.PageSize bytes each.
func EncodeSegments(pages [][]byte, segs []Segment) error {
	if len(pages) < IndirectPages(len(segs)) {
		return fmt.Errorf("blkif: %d segments need %d indirect pages, have %d", len(segs), IndirectPages(len(segs)), len(pages))
	}
	for i, s := range segs {
		p := pages[i/SegmentsPerPage]
		if len(p) < gnttab.PageSize {
			return fmt.Errorf("blkif: indirect page of %d bytes", len(p))
		}
		putSegment(p[(i%SegmentsPerPage)*SegmentSize:], s)
	}
	return nil
}

// DecodeSegments reads n segments from indirect pages (copies of the
// frontend's pages, gnttab.PageSize bytes each) and checks each.
func DecodeSegments(pages [][]byte, n int) ([]Segment, error) {
	if n < 0 || len(pages) < IndirectPages(n) {
		return nil, fmt.Errorf("%w: %d segments in %d indirect pages", ErrMalformed, n, len(pages))
	}
	segs := make([]Segment, n)
	for i := range segs {
		p := pages[i/SegmentsPerPage]
		off := (i % SegmentsPerPage) * SegmentSize
		if len(p) < off+SegmentSize {
			return nil, fmt.Errorf("%w: indirect page of %d bytes", ErrMalformed, len(p))
		}
		segs[i] = getSegment(p[off:])
		if err := segs[i].Check(); err != nil {
			return nil, fmt.Errorf("indirect segment %d: %w", i, err)
		}
	}
	return segs, nil
}

// Response is a response entry.
type Response struct {
	// ID is the request's id, echoed.
	ID uint64
	// Op is the request's operation, echoed (OpIndirect for an indirect
	// request).
	Op Op
	// Status is the outcome.
	Status Status
}

// Encode writes r into b (at least ResponseSize bytes).
func (r Response) Encode(b []byte) error {
	if len(b) < ResponseSize {
		return fmt.Errorf("blkif: response buffer of %d bytes", len(b))
	}
	b = b[:ResponseSize]
	clear(b)
	binary.LittleEndian.PutUint64(b, r.ID)
	b[8] = byte(r.Op)
	binary.LittleEndian.PutUint16(b[10:], uint16(r.Status))
	return nil
}

// DecodeResponse decodes a response entry (at least ResponseSize bytes,
// already copied out of shared memory). Its id, operation and status are
// the backend's word: the caller matches them to its requests; a status
// other than the three of blkif.h is an error wrapping ErrMalformed.
func DecodeResponse(b []byte) (Response, error) {
	if len(b) < ResponseSize {
		return Response{}, fmt.Errorf("%w: response of %d bytes", ErrMalformed, len(b))
	}
	r := Response{ID: binary.LittleEndian.Uint64(b), Op: Op(b[8]), Status: Status(int16(binary.LittleEndian.Uint16(b[10:])))}
	if !r.Status.Known() {
		return r, fmt.Errorf("%w: response %#x (%s) with status %d", ErrMalformed, r.ID, r.Op, r.Status)
	}
	return r, nil
}
