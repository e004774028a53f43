package wire

import (
	"io/fs"
)

// XSError is an error reported by xenstored in an ERROR reply: the name of
// an errno value such as "ENOENT". Two XSErrors match with errors.Is when
// their names are equal, so the named variables below can be used as
// targets whatever instance a reply produced.
type XSError struct {
	// Name is the errno name as sent on the wire, e.g. "EACCES".
	Name string
}

// Error implements error.
func (e *XSError) Error() string { return "xenstore: " + e.Name }

// Is reports whether target is an XSError with the same name, or the io/fs
// error of the same meaning (ENOENT is fs.ErrNotExist, EEXIST is
// fs.ErrExist, EACCES is fs.ErrPermission).
func (e *XSError) Is(target error) bool {
	if t, ok := target.(*XSError); ok {
		return t.Name == e.Name
	}
	switch target {
	case fs.ErrNotExist:
		return e.Name == "ENOENT"
	case fs.ErrExist:
		return e.Name == "EEXIST"
	case fs.ErrPermission:
		return e.Name == "EACCES"
	}
	return false
}

// The errors of xs_wire.h's xsd_errors table.
var (
	// ErrInvalid is EINVAL: bad arguments (path syntax, payload).
	ErrInvalid = &XSError{"EINVAL"}
	// ErrAccess is EACCES: permission denied.
	ErrAccess = &XSError{"EACCES"}
	// ErrExist is EEXIST: the node exists.
	ErrExist = &XSError{"EEXIST"}
	// ErrIsDir is EISDIR.
	ErrIsDir = &XSError{"EISDIR"}
	// ErrNotExist is ENOENT: no such node (or transaction).
	ErrNotExist = &XSError{"ENOENT"}
	// ErrNoMem is ENOMEM.
	ErrNoMem = &XSError{"ENOMEM"}
	// ErrNoSpace is ENOSPC: a quota is exceeded.
	ErrNoSpace = &XSError{"ENOSPC"}
	// ErrIO is EIO.
	ErrIO = &XSError{"EIO"}
	// ErrNotEmpty is ENOTEMPTY.
	ErrNotEmpty = &XSError{"ENOTEMPTY"}
	// ErrNoSys is ENOSYS: the request type is not supported.
	ErrNoSys = &XSError{"ENOSYS"}
	// ErrReadOnly is EROFS.
	ErrReadOnly = &XSError{"EROFS"}
	// ErrBusy is EBUSY: too many concurrent transactions or requests.
	ErrBusy = &XSError{"EBUSY"}
	// ErrAgain is EAGAIN: a transaction conflicted and must be retried.
	ErrAgain = &XSError{"EAGAIN"}
	// ErrIsConn is EISCONN.
	ErrIsConn = &XSError{"EISCONN"}
	// ErrTooBig is E2BIG: a request or quota limit is exceeded.
	ErrTooBig = &XSError{"E2BIG"}
)

var knownErrors = []*XSError{
	ErrInvalid, ErrAccess, ErrExist, ErrIsDir, ErrNotExist, ErrNoMem,
	ErrNoSpace, ErrIO, ErrNotEmpty, ErrNoSys, ErrReadOnly, ErrBusy,
	ErrAgain, ErrIsConn, ErrTooBig,
}

// ErrorFromName returns the error named name: one of the variables above
// if the name is known, otherwise a new *XSError carrying the name (with
// non-printable bytes replaced, since the name comes from the wire).
func ErrorFromName(name string) *XSError {
	for _, e := range knownErrors {
		if e.Name == name {
			return e
		}
	}
	if len(name) > 32 {
		name = name[:32]
	}
	b := []byte(name)
	for i, c := range b {
		if c < 0x20 || c > 0x7e {
			b[i] = '?'
		}
	}
	return &XSError{Name: string(b)}
}
