package wire

import (
	"bytes"
	"testing"
)

// FuzzParseReply feeds arbitrary bytes to every parser the client applies
// to replies: none may panic, and decoded messages must re-encode to the
// same bytes.
func FuzzParseReply(f *testing.F) {
	for _, s := range []string{
		"\x02\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x05\x00\x00\x00hello",
		"\x10\x00\x00\x00\x01\x00\x00\x00\x00\x00\x00\x00\x07\x00\x00\x00ENOENT\x00",
		"\x03\x00\x00\x00\x02\x00\x00\x00\x00\x00\x00\x00\x06\x00\x00\x00n0\x00r5\x00",
		"\x0f\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00\x08\x00\x00\x00/a\x00tok\x00",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := Unmarshal(b)
		if err != nil {
			// Parsers must still cope with a raw payload.
			m = Msg{Header: Header{Type: Read}, Payload: b}
		} else {
			re, err := m.Marshal()
			if err != nil || !bytes.Equal(re, b) {
				t.Fatalf("re-encoding differs: %v", err)
			}
		}
		for _, want := range []Type{Read, Directory, GetPerms, TransactionStart, Write} {
			CheckReply(m, want)
		}
		SplitStrings(m.Payload)
		SingleString(m.Payload)
		ParseOK(m.Payload)
		ParseTxID(m.Payload)
		ParseWatchEvent(m.Payload)
		if perms, err := ParsePerms(m.Payload); err == nil {
			for i, p := range PermStrings(perms) {
				if q, err := ParsePerm(p); err != nil || q != perms[i] {
					t.Fatalf("perm %q does not round-trip", p)
				}
			}
		}
		if s, err := SingleString(m.Payload); err == nil {
			CheckPath(s, true)
			ErrorFromName(s)
		}
	})
}
