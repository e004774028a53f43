package boot

import (
	"errors"
	"fmt"

	"github.com/gozen-dev/gozen/internal/bytering"
)

// consoleIn is the input side of the PV console ring (io/console.h's
// in[], in_cons, in_prod): xenconsoled produces, the guest consumes. The
// page is shared with dom0, so the indices are hostile input; they are
// read through a bytering.Reader, which loads each once and checks it.
// Indices that claim more than the ring holds (in_cons past in_prod, or
// lagging by more than the size) kill the input side for good, as Linux's
// hvc_xen treats them: the ring is never read nor in_cons written again,
// the backend is not notified, and the first drain to find it dead
// reports one line.
type consoleIn struct {
	r      bytering.Reader
	buf    []byte            // one ring's worth: the copy deliver sees
	kick   func()            // notify the backend that room was made
	report func(line string) // says once that the input side died

	bytes    uint64 // taken from the ring
	reported bool   // report was called
}

// init sets i up over the ring's data area and indices.
func (i *consoleIn) init(data []byte, cons, prod *uint32, kick func(), report func(string)) error {
	if err := i.r.Init(data, cons, prod); err != nil {
		return fmt.Errorf("boot: console input: %w", err)
	}
	if kick == nil || report == nil {
		return errors.New("boot: console input: nil kick or report")
	}
	i.buf = make([]byte, len(data))
	i.kick, i.report = kick, report
	i.bytes, i.reported = 0, false
	return nil
}

// drain takes everything the ring holds, chunk by chunk: each chunk is
// copied out, its room handed back (in_cons moved, the backend notified),
// then the copy passed to deliver, which must not keep it. It returns nil
// once the ring is empty, or the error that killed the input side (now or
// earlier; it wraps bytering.ErrCorrupt for hostile indices). The first
// drain to meet that error calls report with one line.
func (i *consoleIn) drain(deliver func([]byte)) error {
	for {
		n, err := i.r.Take(i.buf)
		if err != nil {
			if !i.reported {
				i.reported = true
				i.report(consoleInDeadLine(err))
			}
			return fmt.Errorf("boot: console input: %w", err)
		}
		if n == 0 {
			return nil
		}
		i.kick()
		i.bytes += uint64(n)
		deliver(i.buf[:n])
	}
}

// consoleInDeadLine is the line that reports the death of the input
// side: the indices as found, or the error.
func consoleInDeadLine(err error) string {
	var ce *bytering.CorruptError
	if errors.As(err, &ce) {
		return fmt.Sprintf("gozen: console input ring corrupt (in_prod %d, in_cons %d: %d outstanding in a ring of %d); console input stopped\n",
			ce.Prod, ce.Cons, ce.Prod-ce.Cons, ce.Size)
	}
	return fmt.Sprintf("gozen: console input failed (%v); console input stopped\n", err)
}
