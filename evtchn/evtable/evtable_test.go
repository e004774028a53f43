package evtable

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/gozen-dev/gozen/evtchn"
)

func TestLimitAndPrefix(t *testing.T) {
	tab := New("evtest", 8)
	for _, c := range []struct {
		port evtchn.Port
		ok   bool
	}{{0, false}, {1, true}, {7, true}, {8, false}, {1 << 31, false}, {7, false}} {
		err := tab.Add(c.port, nil)
		if (err == nil) != c.ok {
			t.Errorf("Add(%d) = %v, want ok=%v", c.port, err, c.ok)
		}
		if err != nil && (!errors.Is(err, evtchn.ErrBadPort) || !strings.HasPrefix(err.Error(), "evtest: ")) {
			t.Errorf("Add(%d) error %q", c.port, err)
		}
	}
}

// TestFail wakes waiters with ErrClosed and the cause, keeps the ports
// for Remove, and tolerates late deliveries.
func TestFail(t *testing.T) {
	tab := New("evtest", 8)
	if err := tab.Add(3, nil); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		_, err := tab.Wait(context.Background(), 3, 0)
		done <- err
	}()
	cause := errors.New("device gone")
	tab.Fail(cause)
	tab.Fail(cause) // twice is harmless
	if err := <-done; !errors.Is(err, evtchn.ErrClosed) || !errors.Is(err, cause) {
		t.Errorf("Wait after Fail: %v", err)
	}
	tab.Deliver(3)
	if err := tab.Check(3); !errors.Is(err, evtchn.ErrClosed) {
		t.Errorf("Check after Fail: %v", err)
	}
	if err := tab.Remove(3); err != nil {
		t.Errorf("Remove after Fail: %v", err)
	}
	if tab.Len() != 0 {
		t.Errorf("%d ports left", tab.Len())
	}
}
