package wire

import (
	"bytes"
	"fmt"
	"strconv"
	"strings"

	"github.com/gozen-dev/gozen/domid"
)

// Strings encodes each string followed by a nul byte, the usual request
// payload ("<path>|<token>|").
func Strings(s ...string) []byte {
	n := 0
	for _, x := range s {
		n += len(x) + 1
	}
	b := make([]byte, 0, n)
	for _, x := range s {
		b = append(b, x...)
		b = append(b, 0)
	}
	return b
}

// PathValue encodes a WRITE payload: "<path>|<value|>" (the value is not
// terminated).
func PathValue(path string, value []byte) []byte {
	b := make([]byte, 0, len(path)+1+len(value))
	b = append(b, path...)
	b = append(b, 0)
	return append(b, value...)
}

// SplitStrings parses a payload of zero or more nul-terminated strings
// ("<x>|*"). Data after the last nul is an error wrapping ErrMalformed.
func SplitStrings(p []byte) ([]string, error) {
	var out []string
	for len(p) > 0 {
		i := bytes.IndexByte(p, 0)
		if i < 0 {
			return nil, fmt.Errorf("%w: %d bytes of unterminated string in payload", ErrMalformed, len(p))
		}
		out = append(out, string(p[:i]))
		p = p[i+1:]
	}
	return out, nil
}

// SingleString parses a payload holding exactly one nul-terminated string.
func SingleString(p []byte) (string, error) {
	i := bytes.IndexByte(p, 0)
	if i < 0 {
		return "", fmt.Errorf("%w: unterminated string in payload of %d bytes", ErrMalformed, len(p))
	}
	if i != len(p)-1 {
		return "", fmt.Errorf("%w: %d bytes after string in payload", ErrMalformed, len(p)-1-i)
	}
	return string(p[:i]), nil
}

// CheckReply checks that m is a reply of type want. An ERROR reply is
// turned into its *XSError (test with errors.Is against ErrNotExist,
// ErrAccess...); any other type mismatch, or a malformed error name, gives
// an error wrapping ErrMalformed.
func CheckReply(m Msg, want Type) error {
	if m.Type == Error {
		name, err := SingleString(m.Payload)
		if err != nil {
			return fmt.Errorf("ERROR reply to %s: %w", want, err)
		}
		return ErrorFromName(name)
	}
	if m.Type != want {
		return fmt.Errorf("%w: got %s reply to %s request", ErrMalformed, m.Type, want)
	}
	return nil
}

// ParseOK parses the "OK|" payload of a successful reply. Servers differ in
// details, so any single string is accepted.
func ParseOK(p []byte) error {
	_, err := SingleString(p)
	return err
}

// ParseTxID parses a TRANSACTION_START reply: "<transid>|", an unsigned
// decimal. Zero is rejected, since it means "no transaction".
func ParseTxID(p []byte) (uint32, error) {
	s, err := SingleString(p)
	if err != nil {
		return 0, err
	}
	id, err := strconv.ParseUint(s, 10, 32)
	if err != nil || id == 0 {
		return 0, fmt.Errorf("%w: bad transaction id %q", ErrMalformed, clip(s))
	}
	return uint32(id), nil
}

// WatchEventPayload is the content of a WATCH_EVENT message.
type WatchEventPayload struct {
	// Path is the path that changed (a child of the watched path).
	Path string
	// Token is the token given when the watch was registered.
	Token string
}

// ParseWatchEvent parses a WATCH_EVENT payload: "<epath>|<token>|". Extra
// strings after the token are tolerated (reserved for extensions).
func ParseWatchEvent(p []byte) (WatchEventPayload, error) {
	s, err := SplitStrings(p)
	if err != nil {
		return WatchEventPayload{}, fmt.Errorf("watch event: %w", err)
	}
	if len(s) < 2 {
		return WatchEventPayload{}, fmt.Errorf("%w: watch event with %d strings, want 2", ErrMalformed, len(s))
	}
	return WatchEventPayload{Path: s[0], Token: s[1]}, nil
}

// clip shortens untrusted strings used in error messages.
func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}

// Access is the access part of a permission.
type Access byte

// Access values, as their wire letters.
const (
	// AccessNone denies access.
	AccessNone Access = 'n'
	// AccessRead allows reading.
	AccessRead Access = 'r'
	// AccessWrite allows writing.
	AccessWrite Access = 'w'
	// AccessBoth allows reading and writing.
	AccessBoth Access = 'b'
)

// CanRead reports whether a allows reading.
func (a Access) CanRead() bool { return a == AccessRead || a == AccessBoth }

// CanWrite reports whether a allows writing.
func (a Access) CanWrite() bool { return a == AccessWrite || a == AccessBoth }

// Perm is one permission entry, on the wire "<access><domid>" such as "r0"
// or "b5". In a node's permission list the first entry names the owner
// (who always has full access) and the access of every domain not listed;
// the following entries grant access to single domains.
type Perm struct {
	// Dom is the domain the entry is about.
	Dom domid.ID
	// Access is what Dom may do.
	Access Access
}

// String returns the wire form, e.g. "b1".
func (p Perm) String() string {
	return string(rune(p.Access)) + strconv.FormatUint(uint64(p.Dom), 10)
}

// ParsePerm parses the wire form of a permission, e.g. "n5".
func ParsePerm(s string) (Perm, error) {
	if len(s) < 2 {
		return Perm{}, fmt.Errorf("%w: permission %q", ErrMalformed, clip(s))
	}
	a := Access(s[0])
	switch a {
	case AccessNone, AccessRead, AccessWrite, AccessBoth:
	default:
		return Perm{}, fmt.Errorf("%w: permission %q has unknown access %q", ErrMalformed, clip(s), s[0])
	}
	for _, c := range s[1:] {
		if c < '0' || c > '9' {
			return Perm{}, fmt.Errorf("%w: permission %q has bad domid", ErrMalformed, clip(s))
		}
	}
	d, err := strconv.ParseUint(s[1:], 10, 16)
	if err != nil {
		return Perm{}, fmt.Errorf("%w: permission %q has bad domid", ErrMalformed, clip(s))
	}
	return Perm{Dom: domid.ID(d), Access: a}, nil
}

// ParsePerms parses a GET_PERMS reply: one or more permission strings.
func ParsePerms(p []byte) ([]Perm, error) {
	s, err := SplitStrings(p)
	if err != nil {
		return nil, err
	}
	if len(s) == 0 {
		return nil, fmt.Errorf("%w: empty permission list", ErrMalformed)
	}
	out := make([]Perm, len(s))
	for i, x := range s {
		if out[i], err = ParsePerm(x); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// PermStrings encodes permissions for a SET_PERMS payload (after the path).
func PermStrings(perms []Perm) []string {
	s := make([]string, len(perms))
	for i, p := range perms {
		s[i] = p.String()
	}
	return s
}

// CheckPath validates a node path: absolute (starting with /) or, if
// relative is set, relative to the domain's home. Allowed characters are
// ASCII letters, digits and -/_@; doubled and trailing slashes are
// forbidden except for the root "/". Errors wrap ErrInvalid, or ErrTooLong
// for long paths.
func CheckPath(p string, relative bool) error {
	if p == "" {
		return fmt.Errorf("%w: empty path", ErrInvalid)
	}
	if p[0] != '/' && !relative {
		return fmt.Errorf("%w: path %q is not absolute", ErrInvalid, clip(p))
	}
	max := AbsPathMax
	if p[0] != '/' {
		max = RelPathMax
	}
	if len(p) > max {
		return fmt.Errorf("%w: path of %d bytes, max %d", ErrTooLong, len(p), max)
	}
	if p == "/" {
		return nil
	}
	if strings.HasSuffix(p, "/") || strings.Contains(p, "//") {
		return fmt.Errorf("%w: path %q has a doubled or trailing slash", ErrInvalid, clip(p))
	}
	for i := 0; i < len(p); i++ {
		c := p[i]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		case c == '-', c == '/', c == '_', c == '@':
		default:
			return fmt.Errorf("%w: path %q has character %q", ErrInvalid, clip(p), c)
		}
	}
	return nil
}

// IsSpecialWatch reports whether p names a special watch such as
// "@introduceDomain" or "@releaseDomain".
func IsSpecialWatch(p string) bool { return strings.HasPrefix(p, "@") }

// DomainPath returns /local/domain/<domid>, a domain's home.
func DomainPath(d domid.ID) string {
	return "/local/domain/" + strconv.FormatUint(uint64(d), 10)
}
