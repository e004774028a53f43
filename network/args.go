package network

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// MaxQueuesArg is the most queues "queues=N" may ask for.
const MaxQueuesArg = 16

// ErrQueues is wrapped by ParseQueues' errors.
var ErrQueues = errors.New("network: bad queues=")

// ParseQueues returns how many queues per vif the command line asks for
// with "queues=N" (1 to MaxQueuesArg; netfront uses as many as netback
// offers up to N), or 1 without it. Words without "=" and other keys are
// ignored: the command line is shared with the stack's ip=, gw=, dns= and
// the application's own flags.
func ParseQueues(args []string) (int, error) {
	n := 1
	for _, w := range args {
		val, ok := strings.CutPrefix(w, "queues=")
		if !ok {
			continue
		}
		v, err := strconv.Atoi(val)
		if err != nil || v < 1 || v > MaxQueuesArg {
			return 0, fmt.Errorf("%w%q: want 1 to %d", ErrQueues, val, MaxQueuesArg)
		}
		n = v
	}
	return n, nil
}
