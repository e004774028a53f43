//go:build tamago

package hypercall

import "unsafe"

// console_io sub-operations.
const (
	consoleioWrite = 0
	consoleioRead  = 1
)

// ConsoleWrite writes b to Xen's own console (the serial line), as a
// privileged domain may. It is safe to call from the runtime's print path:
// it does not allocate.
//
//go:nosplit
func ConsoleWrite(b []byte) int64 {
	if len(b) == 0 {
		return 0
	}
	return call(opConsoleIO, consoleioWrite, uintptr(len(b)), uintptr(unsafe.Pointer(&b[0])), 0, 0)
}

// ConsoleRead reads from Xen's console into b, returning the byte count.
func ConsoleRead(b []byte) (int, error) {
	if len(b) == 0 {
		return 0, nil
	}
	r := call(opConsoleIO, consoleioRead, uintptr(len(b)), uintptr(unsafe.Pointer(&b[0])), 0, 0)
	if err := Check("console_io(read)", r); err != nil {
		return 0, err
	}
	return int(r), nil
}
