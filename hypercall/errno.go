// Package hypercall issues Xen hypercalls from a Gozen guest through the
// hypercall page, with one file of typed wrappers per hypercall family.
//
// The assembly stubs and wrappers exist only for GOOS=tamago; the error
// types in this file are portable so that host code can name Xen errnos.
package hypercall

import "fmt"

// Errno is a Xen error number (xen/include/public/errno.h), positive.
type Errno int

// Xen error numbers, as defined by the public errno.h.
const (
	EPERM         Errno = 1
	ENOENT        Errno = 2
	ESRCH         Errno = 3
	EINTR         Errno = 4
	EIO           Errno = 5
	ENXIO         Errno = 6
	E2BIG         Errno = 7
	ENOEXEC       Errno = 8
	EBADF         Errno = 9
	ECHILD        Errno = 10
	EAGAIN        Errno = 11
	ENOMEM        Errno = 12
	EACCES        Errno = 13
	EFAULT        Errno = 14
	EBUSY         Errno = 16
	EEXIST        Errno = 17
	EXDEV         Errno = 18
	ENODEV        Errno = 19
	EISDIR        Errno = 21
	EINVAL        Errno = 22
	ENFILE        Errno = 23
	EMFILE        Errno = 24
	ENOSPC        Errno = 28
	EROFS         Errno = 30
	EMLINK        Errno = 31
	EDOM          Errno = 33
	ERANGE        Errno = 34
	EDEADLK       Errno = 35
	ENAMETOOLONG  Errno = 36
	ENOLCK        Errno = 37
	ENOSYS        Errno = 38
	ENOTEMPTY     Errno = 39
	ENODATA       Errno = 61
	ETIME         Errno = 62
	EBADMSG       Errno = 74
	EOVERFLOW     Errno = 75
	EILSEQ        Errno = 84
	ERESTART      Errno = 85
	ENOTSOCK      Errno = 88
	EMSGSIZE      Errno = 90
	EOPNOTSUPP    Errno = 95
	EADDRINUSE    Errno = 98
	EADDRNOTAVAIL Errno = 99
	ENOBUFS       Errno = 105
	EISCONN       Errno = 106
	ENOTCONN      Errno = 107
	ETIMEDOUT     Errno = 110
	ECONNREFUSED  Errno = 111
)

var errnoNames = map[Errno][2]string{
	EPERM: {"EPERM", "operation not permitted"}, ENOENT: {"ENOENT", "no such entry"},
	ESRCH: {"ESRCH", "no such domain or process"}, EINTR: {"EINTR", "interrupted"},
	EIO: {"EIO", "I/O error"}, ENXIO: {"ENXIO", "no such device or address"},
	E2BIG: {"E2BIG", "argument list too long"}, ENOEXEC: {"ENOEXEC", "exec format error"},
	EBADF: {"EBADF", "bad file number"}, ECHILD: {"ECHILD", "no child"},
	EAGAIN: {"EAGAIN", "try again"}, ENOMEM: {"ENOMEM", "out of memory"},
	EACCES: {"EACCES", "permission denied"}, EFAULT: {"EFAULT", "bad address"},
	EBUSY: {"EBUSY", "device or resource busy"}, EEXIST: {"EEXIST", "exists"},
	EXDEV: {"EXDEV", "cross-domain link"}, ENODEV: {"ENODEV", "no such device"},
	EISDIR: {"EISDIR", "is a directory"}, EINVAL: {"EINVAL", "invalid argument"},
	ENFILE: {"ENFILE", "file table overflow"}, EMFILE: {"EMFILE", "too many open files"},
	ENOSPC: {"ENOSPC", "no space left"}, EROFS: {"EROFS", "read-only"},
	EMLINK: {"EMLINK", "too many links"}, EDOM: {"EDOM", "argument out of domain"},
	ERANGE: {"ERANGE", "result out of range"}, EDEADLK: {"EDEADLK", "deadlock would occur"},
	ENAMETOOLONG: {"ENAMETOOLONG", "name too long"}, ENOLCK: {"ENOLCK", "no locks available"},
	ENOSYS: {"ENOSYS", "function not implemented"}, ENOTEMPTY: {"ENOTEMPTY", "not empty"},
	ENODATA: {"ENODATA", "no data available"}, ETIME: {"ETIME", "timer expired"},
	EBADMSG: {"EBADMSG", "not a data message"}, EOVERFLOW: {"EOVERFLOW", "value too large"},
	EILSEQ: {"EILSEQ", "illegal byte sequence"}, ERESTART: {"ERESTART", "restart the call"},
	ENOTSOCK: {"ENOTSOCK", "not a socket"}, EMSGSIZE: {"EMSGSIZE", "message too long"},
	EOPNOTSUPP: {"EOPNOTSUPP", "operation not supported"}, EADDRINUSE: {"EADDRINUSE", "address in use"},
	EADDRNOTAVAIL: {"EADDRNOTAVAIL", "address not available"}, ENOBUFS: {"ENOBUFS", "no buffer space"},
	EISCONN: {"EISCONN", "already connected"}, ENOTCONN: {"ENOTCONN", "not connected"},
	ETIMEDOUT: {"ETIMEDOUT", "timed out"}, ECONNREFUSED: {"ECONNREFUSED", "connection refused"},
}

// Name returns the errno's symbolic name, such as "ENOSYS".
func (e Errno) Name() string {
	if n, ok := errnoNames[e]; ok {
		return n[0]
	}
	return fmt.Sprintf("errno %d", int(e))
}

// Error returns the name and description, such as
// "ENOSYS (function not implemented)".
func (e Errno) Error() string {
	if n, ok := errnoNames[e]; ok {
		return n[0] + " (" + n[1] + ")"
	}
	return fmt.Sprintf("errno %d", int(e))
}

// Error is a failed hypercall: which one and the errno Xen returned.
// errors.Is(err, hypercall.ENOSYS) works through Unwrap.
type Error struct {
	// Op names the hypercall and sub-operation, e.g. "memory_op(add_to_physmap)".
	Op string
	// Errno is the error Xen returned.
	Errno Errno
}

func (e *Error) Error() string { return "hypercall " + e.Op + ": " + e.Errno.Error() }

// Unwrap returns the Errno.
func (e *Error) Unwrap() error { return e.Errno }

// Check turns a raw hypercall return value into an error: nil for values
// that are not negative, an *Error naming op otherwise.
func Check(op string, ret int64) error {
	if ret >= 0 {
		return nil
	}
	return &Error{Op: op, Errno: Errno(-ret)}
}
