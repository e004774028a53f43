// Package wire implements the xenstore wire protocol of Xen's public header
// io/xs_wire.h and docs/misc/xenstore.txt: message headers, message types,
// payload encoding and parsing, error strings and permission strings.
//
// Everything here is pure data manipulation and safe to use on untrusted
// input: parsers return errors wrapping [ErrMalformed], never panic.
package wire

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
)

// HeaderSize is the size of a message header (struct xsd_sockmsg).
const HeaderSize = 16

// PayloadMax is XENSTORE_PAYLOAD_MAX: the largest payload allowed in either
// direction.
const PayloadMax = 4096

// AbsPathMax is XENSTORE_ABS_PATH_MAX, the longest absolute path.
const AbsPathMax = 3072

// RelPathMax is XENSTORE_REL_PATH_MAX, the longest relative path a client
// should send.
const RelPathMax = 2048

// Type is a message type (enum xsd_sockmsg_type).
type Type uint32

// Message types of xs_wire.h.
const (
	// Control (formerly Debug) sends implementation-specific commands.
	Control Type = 0
	// Directory lists the children of a node.
	Directory Type = 1
	// Read reads a node's value.
	Read Type = 2
	// GetPerms reads a node's permissions.
	GetPerms Type = 3
	// Watch registers a watch.
	Watch Type = 4
	// Unwatch removes a watch.
	Unwatch Type = 5
	// TransactionStart starts a transaction.
	TransactionStart Type = 6
	// TransactionEnd commits or aborts a transaction.
	TransactionEnd Type = 7
	// Introduce introduces a domain to xenstored (dom0 only).
	Introduce Type = 8
	// Release releases a domain (dom0 only).
	Release Type = 9
	// GetDomainPath returns /local/domain/<domid>.
	GetDomainPath Type = 10
	// Write writes a node's value.
	Write Type = 11
	// Mkdir creates a node.
	Mkdir Type = 12
	// Rm removes a node and its children.
	Rm Type = 13
	// SetPerms sets a node's permissions.
	SetPerms Type = 14
	// WatchEvent is an unsolicited watch notification (replies only).
	WatchEvent Type = 15
	// Error is an error reply (replies only).
	Error Type = 16
	// IsDomainIntroduced asks whether a domain is introduced.
	IsDomainIntroduced Type = 17
	// Resume re-arms @releaseDomain for a domain (dom0 only).
	Resume Type = 18
	// SetTarget lets a domain act for another (dom0 only).
	SetTarget Type = 19
	// Restrict is no longer supported; the value is invalid.
	Restrict Type = 20
	// ResetWatches removes all watches and transactions of the caller.
	ResetWatches Type = 21
	// DirectoryPart lists children of a node in parts.
	DirectoryPart Type = 22
	// GetFeature reads the feature bitmap of a domain.
	GetFeature Type = 23
	// SetFeature sets the feature bitmap of a domain.
	SetFeature Type = 24
	// GetQuota reads a quota.
	GetQuota Type = 25
	// SetQuota sets a quota.
	SetQuota Type = 26
	// Invalid is guaranteed never to be a valid type.
	Invalid Type = 0xffff
)

var typeNames = [...]string{
	"CONTROL", "DIRECTORY", "READ", "GET_PERMS", "WATCH", "UNWATCH",
	"TRANSACTION_START", "TRANSACTION_END", "INTRODUCE", "RELEASE",
	"GET_DOMAIN_PATH", "WRITE", "MKDIR", "RM", "SET_PERMS", "WATCH_EVENT",
	"ERROR", "IS_DOMAIN_INTRODUCED", "RESUME", "SET_TARGET", "RESTRICT",
	"RESET_WATCHES", "DIRECTORY_PART", "GET_FEATURE", "SET_FEATURE",
	"GET_QUOTA", "SET_QUOTA",
}

// String returns the xs_wire.h name without the XS_ prefix.
func (t Type) String() string {
	if int(t) < len(typeNames) {
		return typeNames[t]
	}
	if t == Invalid {
		return "INVALID"
	}
	return "TYPE(" + strconv.FormatUint(uint64(t), 10) + ")"
}

// Header is a message header (struct xsd_sockmsg): four little-endian
// uint32s.
type Header struct {
	// Type is the message type.
	Type Type
	// ReqID is chosen by the client and echoed in the reply.
	ReqID uint32
	// TxID is the transaction id, 0 outside transactions.
	TxID uint32
	// Len is the payload length that follows the header.
	Len uint32
}

// Put encodes h into b, which must be at least HeaderSize bytes long.
func (h Header) Put(b []byte) {
	_ = b[HeaderSize-1]
	binary.LittleEndian.PutUint32(b[0:], uint32(h.Type))
	binary.LittleEndian.PutUint32(b[4:], h.ReqID)
	binary.LittleEndian.PutUint32(b[8:], h.TxID)
	binary.LittleEndian.PutUint32(b[12:], h.Len)
}

// ParseHeader decodes a header from the first HeaderSize bytes of b. It
// checks only that b is long enough; see [Header.Check].
func ParseHeader(b []byte) (Header, error) {
	if len(b) < HeaderSize {
		return Header{}, fmt.Errorf("%w: header of %d bytes, want %d", ErrMalformed, len(b), HeaderSize)
	}
	return Header{
		Type:  Type(binary.LittleEndian.Uint32(b[0:])),
		ReqID: binary.LittleEndian.Uint32(b[4:]),
		TxID:  binary.LittleEndian.Uint32(b[8:]),
		Len:   binary.LittleEndian.Uint32(b[12:]),
	}, nil
}

// Check reports an error wrapping ErrTooLong if the payload length exceeds
// PayloadMax. Such a message cannot be resynchronised: the connection is
// broken.
func (h Header) Check() error {
	if h.Len > PayloadMax {
		return fmt.Errorf("%w: %s message (req %d) announces %d bytes of payload, max %d",
			ErrTooLong, h.Type, h.ReqID, h.Len, PayloadMax)
	}
	return nil
}

// Msg is one message: a header and its payload. Header.Len is ignored when
// encoding and set from len(Payload).
type Msg struct {
	// Header is the message header.
	Header
	// Payload is the data after the header.
	Payload []byte
}

// Marshal encodes m into a fresh buffer: header followed by payload.
func (m Msg) Marshal() ([]byte, error) {
	if len(m.Payload) > PayloadMax {
		return nil, fmt.Errorf("%w: %s payload of %d bytes, max %d", ErrTooLong, m.Type, len(m.Payload), PayloadMax)
	}
	b := make([]byte, HeaderSize+len(m.Payload))
	h := m.Header
	h.Len = uint32(len(m.Payload))
	h.Put(b)
	copy(b[HeaderSize:], m.Payload)
	return b, nil
}

// Unmarshal decodes one whole message from b, which must hold exactly the
// header and the payload it announces.
func Unmarshal(b []byte) (Msg, error) {
	h, err := ParseHeader(b)
	if err != nil {
		return Msg{}, err
	}
	if err := h.Check(); err != nil {
		return Msg{}, err
	}
	if uint64(len(b)-HeaderSize) != uint64(h.Len) {
		return Msg{}, fmt.Errorf("%w: %s message announces %d bytes of payload, has %d",
			ErrMalformed, h.Type, h.Len, len(b)-HeaderSize)
	}
	return Msg{Header: h, Payload: append([]byte(nil), b[HeaderSize:]...)}, nil
}

// Protocol errors detected locally (not sent by the server).
var (
	// ErrMalformed means a message or payload does not follow the
	// protocol: missing nul terminators, bad numbers, wrong reply type.
	ErrMalformed = errors.New("xenstore: malformed message")
	// ErrTooLong means a payload or path exceeds the protocol limits.
	ErrTooLong = errors.New("xenstore: message or path too long")
)
