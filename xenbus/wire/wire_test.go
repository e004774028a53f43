package wire

import (
	"bytes"
	"errors"
	"io/fs"
	"slices"
	"testing"
)

func TestHeaderRoundTrip(t *testing.T) {
	m := Msg{Header: Header{Type: TransactionEnd, ReqID: 0x01020304, TxID: 7}, Payload: []byte("T\x00")}
	b, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	want := []byte{7, 0, 0, 0, 4, 3, 2, 1, 7, 0, 0, 0, 2, 0, 0, 0, 'T', 0}
	if !bytes.Equal(b, want) {
		t.Fatalf("encoding % x", b)
	}
	got, err := Unmarshal(b)
	if err != nil || got.Header != (Header{Type: TransactionEnd, ReqID: 0x01020304, TxID: 7, Len: 2}) || string(got.Payload) != "T\x00" {
		t.Fatalf("decoded %+v %v", got, err)
	}
	if _, err := Unmarshal(b[:10]); !errors.Is(err, ErrMalformed) {
		t.Fatal(err)
	}
	if _, err := Unmarshal(b[:17]); !errors.Is(err, ErrMalformed) {
		t.Fatal(err)
	}
	if _, err := (Msg{Payload: make([]byte, PayloadMax+1)}).Marshal(); !errors.Is(err, ErrTooLong) {
		t.Fatal(err)
	}
	if err := (Header{Len: PayloadMax + 1}).Check(); !errors.Is(err, ErrTooLong) {
		t.Fatal(err)
	}
}

func TestTypeValues(t *testing.T) {
	// Numbering of enum xsd_sockmsg_type.
	for typ, want := range map[Type]uint32{
		Control: 0, Directory: 1, Read: 2, GetPerms: 3, Watch: 4, Unwatch: 5,
		TransactionStart: 6, TransactionEnd: 7, Introduce: 8, Release: 9,
		GetDomainPath: 10, Write: 11, Mkdir: 12, Rm: 13, SetPerms: 14,
		WatchEvent: 15, Error: 16, IsDomainIntroduced: 17, Resume: 18,
		SetTarget: 19, Restrict: 20, ResetWatches: 21, DirectoryPart: 22,
		GetFeature: 23, SetFeature: 24, GetQuota: 25, SetQuota: 26, Invalid: 0xffff,
	} {
		if uint32(typ) != want {
			t.Errorf("%s = %d, want %d", typ, typ, want)
		}
	}
	if Read.String() != "READ" || Type(99).String() != "TYPE(99)" || Invalid.String() != "INVALID" {
		t.Error("String")
	}
}

func TestErrors(t *testing.T) {
	for _, name := range []string{"EINVAL", "EACCES", "EEXIST", "EISDIR", "ENOENT", "ENOMEM", "ENOSPC", "EIO", "ENOTEMPTY", "ENOSYS", "EROFS", "EBUSY", "EAGAIN", "EISCONN", "E2BIG"} {
		e := ErrorFromName(name)
		if e.Name != name || !errors.Is(e, &XSError{Name: name}) {
			t.Errorf("%s: %v", name, e)
		}
	}
	if !errors.Is(ErrorFromName("ENOENT"), fs.ErrNotExist) || !errors.Is(ErrAccess, fs.ErrPermission) || !errors.Is(ErrExist, fs.ErrExist) {
		t.Error("fs mapping")
	}
	if errors.Is(ErrAgain, ErrAccess) {
		t.Error("distinct errors match")
	}
	e := ErrorFromName("E\x01\xffXYZ")
	if e.Name != "E??XYZ" {
		t.Errorf("sanitised %q", e.Name)
	}
	m := Msg{Header: Header{Type: Error}, Payload: []byte("EAGAIN\x00")}
	if err := CheckReply(m, Write); !errors.Is(err, ErrAgain) {
		t.Error(err)
	}
}

func TestPayloads(t *testing.T) {
	tests := []struct {
		in   string
		want []string
		ok   bool
	}{
		{"", nil, true},
		{"a\x00", []string{"a"}, true},
		{"a\x00\x00b\x00", []string{"a", "", "b"}, true},
		{"a\x00b", nil, false},
		{"a", nil, false},
	}
	for _, tc := range tests {
		got, err := SplitStrings([]byte(tc.in))
		if (err == nil) != tc.ok || !slices.Equal(got, tc.want) {
			t.Errorf("SplitStrings(%q) = %q, %v", tc.in, got, err)
		}
	}
	if s, err := SingleString([]byte("OK\x00")); err != nil || s != "OK" {
		t.Error(s, err)
	}
	for _, bad := range []string{"OK", "OK\x00x", ""} {
		if _, err := SingleString([]byte(bad)); !errors.Is(err, ErrMalformed) {
			t.Errorf("SingleString(%q): %v", bad, err)
		}
	}
	if id, err := ParseTxID([]byte("4294967295\x00")); err != nil || id != 0xffffffff {
		t.Error(id, err)
	}
	for _, bad := range []string{"0\x00", "-1\x00", "4294967296\x00", "x\x00", "1"} {
		if _, err := ParseTxID([]byte(bad)); !errors.Is(err, ErrMalformed) {
			t.Errorf("ParseTxID(%q): %v", bad, err)
		}
	}
	ev, err := ParseWatchEvent([]byte("/a/b\x00tok\x00"))
	if err != nil || ev.Path != "/a/b" || ev.Token != "tok" {
		t.Error(ev, err)
	}
	if _, err := ParseWatchEvent([]byte("/a/b\x00")); !errors.Is(err, ErrMalformed) {
		t.Error(err)
	}
	if got := PathValue("/p", []byte{0, 1}); !bytes.Equal(got, []byte("/p\x00\x00\x01")) {
		t.Errorf("%q", got)
	}
}

func TestPerms(t *testing.T) {
	perms, err := ParsePerms([]byte("n0\x00r5\x00w7\x00b65535\x00"))
	want := []Perm{{0, AccessNone}, {5, AccessRead}, {7, AccessWrite}, {65535, AccessBoth}}
	if err != nil || !slices.Equal(perms, want) {
		t.Fatal(perms, err)
	}
	if got := PermStrings(want); !slices.Equal(got, []string{"n0", "r5", "w7", "b65535"}) {
		t.Fatal(got)
	}
	for _, bad := range []string{"", "r", "x1", "r-1", "r+1", "r65536", "r1a", "R1"} {
		if _, err := ParsePerm(bad); !errors.Is(err, ErrMalformed) {
			t.Errorf("ParsePerm(%q): %v", bad, err)
		}
	}
	if !AccessBoth.CanRead() || !AccessBoth.CanWrite() || AccessRead.CanWrite() || AccessWrite.CanRead() || AccessNone.CanRead() {
		t.Error("access bits")
	}
}

func TestCheckPath(t *testing.T) {
	long := "/" + string(bytes.Repeat([]byte("a"), AbsPathMax))
	tests := []struct {
		p   string
		rel bool
		err error
	}{
		{"/", false, nil},
		{"/local/domain/0", false, nil},
		{"/a-b_c@d/9", false, nil},
		{"device/vif", true, nil},
		{"device/vif", false, ErrInvalid},
		{"", true, ErrInvalid},
		{"/a//b", false, ErrInvalid},
		{"/a/", false, ErrInvalid},
		{"/a b", false, ErrInvalid},
		{"/a\x00", false, ErrInvalid},
		{"/a.b", false, ErrInvalid},
		{long, false, ErrTooLong},
		{long[1 : RelPathMax+2], true, ErrTooLong},
	}
	for _, tc := range tests {
		err := CheckPath(tc.p, tc.rel)
		if (tc.err == nil && err != nil) || (tc.err != nil && !errors.Is(err, tc.err)) {
			t.Errorf("CheckPath(%.20q, %v) = %v, want %v", tc.p, tc.rel, err, tc.err)
		}
	}
	if DomainPath(12) != "/local/domain/12" {
		t.Error(DomainPath(12))
	}
}
