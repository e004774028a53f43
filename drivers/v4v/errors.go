package v4v

import (
	"errors"

	"github.com/gozen-dev/gozen/hypercall"
)

// Named errors. Operations wrap them with context (and, for hypervisor
// failures, the Xen errno in an [*Error]), so test with errors.Is.
var (
	// ErrWouldBlock means the destination ring has no room for the message
	// now (EAGAIN). The hypervisor has queued a space notification for the
	// sender: VIRQ_ARGO fires once the receiver has consumed enough and
	// called notify.
	ErrWouldBlock = errors.New("v4v: destination ring full, would block")
	// ErrNoRing means no ring is registered at the destination address
	// for the sender, neither with the sender as partner nor for any
	// partner (ECONNREFUSED), or the destination has no Argo at all.
	ErrNoRing = errors.New("v4v: no such ring")
	// ErrMsgSize means the message can never fit the destination ring, or
	// is larger than Argo's maximum (EMSGSIZE).
	ErrMsgSize = errors.New("v4v: message larger than the ring")
	// ErrPermission means the operation is not permitted (EPERM): for
	// example a ring whose partner is ANY on a hypervisor booted without
	// argo=mac-permissive, or a send on behalf of another domain.
	ErrPermission = errors.New("v4v: operation not permitted")
	// ErrAccess means the security policy refused the operation (EACCES),
	// or a notify asked about too many rings.
	ErrAccess = errors.New("v4v: access denied")
	// ErrTooManyRings means the domain already has the maximum number of
	// rings registered (ENOSPC).
	ErrTooManyRings = errors.New("v4v: too many rings")
	// ErrExists means the ring exists and may not be re-registered: the
	// caller asked for RegisterFailExist, or asked for another size
	// (EEXIST).
	ErrExists = errors.New("v4v: ring already registered")
	// ErrNotRegistered means there is no such ring to unregister (ENOENT).
	ErrNotRegistered = errors.New("v4v: ring not registered")
	// ErrNoDomain means the named domain does not exist (ESRCH).
	ErrNoDomain = errors.New("v4v: no such domain")
	// ErrBusy means too many senders already wait for space on the
	// destination ring (EBUSY); no space notification was queued.
	ErrBusy = errors.New("v4v: too many senders waiting")
	// ErrInvalid means an argument is malformed (EINVAL): a ring size that
	// is not a multiple of SlotSize or out of range, too many buffers, a
	// buffer larger than Argo allows.
	ErrInvalid = errors.New("v4v: invalid argument")
	// ErrFault means the hypervisor could not access memory passed to it
	// (EFAULT).
	ErrFault = errors.New("v4v: bad address")
	// ErrNoMemory means the hypervisor ran out of memory (ENOMEM).
	ErrNoMemory = errors.New("v4v: hypervisor out of memory")
	// ErrNotSupported means the hypervisor has no Argo, or Argo is not
	// enabled (ENOSYS, EOPNOTSUPP, ENODEV): boot Xen with argo=1.
	ErrNotSupported = errors.New("v4v: Argo not available")
	// ErrCorrupt means the ring's contents are impossible: pointers out of
	// range or misaligned, or a message whose length runs past the filled
	// part of the ring or is below the header size.
	ErrCorrupt = errors.New("v4v: corrupt ring")
	// ErrEmpty means the ring holds no message (a non-blocking read).
	ErrEmpty = errors.New("v4v: ring empty")
)

// errnoErrors maps Xen errnos to the named errors.
var errnoErrors = map[hypercall.Errno]error{
	hypercall.EAGAIN:       ErrWouldBlock,
	hypercall.ECONNREFUSED: ErrNoRing,
	hypercall.EMSGSIZE:     ErrMsgSize,
	hypercall.EPERM:        ErrPermission,
	hypercall.EACCES:       ErrAccess,
	hypercall.ENOSPC:       ErrTooManyRings,
	hypercall.EEXIST:       ErrExists,
	hypercall.ENOENT:       ErrNotRegistered,
	hypercall.ESRCH:        ErrNoDomain,
	hypercall.EBUSY:        ErrBusy,
	hypercall.EINVAL:       ErrInvalid,
	hypercall.EFAULT:       ErrFault,
	hypercall.ENOMEM:       ErrNoMemory,
	hypercall.ENOSYS:       ErrNotSupported,
	hypercall.EOPNOTSUPP:   ErrNotSupported,
	hypercall.ENODEV:       ErrNotSupported,
}

// Error is a failed Argo operation: which one, the Xen errno, and the named
// error it maps to. errors.Is matches both the named error and the errno.
type Error struct {
	// Op names the operation, e.g. "sendv 0:1000".
	Op string
	// Errno is the error number the hypervisor returned.
	Errno hypercall.Errno
	// Err is the named error for Errno (nil when there is none).
	Err error
}

// Error returns "v4v: <op>: <named error> (<errno>)".
func (e *Error) Error() string {
	if e.Err == nil {
		return "v4v: " + e.Op + ": " + e.Errno.Error()
	}
	return e.Op + ": " + e.Err.Error() + " (" + e.Errno.Name() + ")"
}

// Unwrap returns the named error and the errno.
func (e *Error) Unwrap() []error {
	if e.Err == nil {
		return []error{e.Errno}
	}
	return []error{e.Err, e.Errno}
}

// ErrnoError returns the error for a Xen errno from operation op: an
// [*Error] unwrapping to the named error and to errno. Implementations of
// [Hypervisor] use it so that every implementation fails alike.
func ErrnoError(op string, errno hypercall.Errno) error {
	return &Error{Op: op, Errno: errno, Err: errnoErrors[errno]}
}
