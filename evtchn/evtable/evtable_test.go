package evtable

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

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

// TestConcurrentPorts delivers to many ports from several goroutines while
// others wait on them and further ports are bound and removed meanwhile:
// every waiter sees every notification (no lost wake-up), and a port
// removed and bound again starts afresh. Run with -race.
func TestConcurrentPorts(t *testing.T) {
	const ports, rounds = 64, 200
	tab := New("evtest", 1<<17)
	for p := evtchn.Port(1); p <= ports; p++ {
		if err := tab.Add(p*1000, nil); err != nil { // spread over chunks
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, ports)
	for p := evtchn.Port(1); p <= ports; p++ {
		port := p * 1000
		wg.Add(2)
		go func() { // waiter: sees the generation reach rounds
			defer wg.Done()
			var seen evtchn.Generation
			for seen < rounds {
				g, err := tab.Wait(ctx, port, seen)
				if err != nil {
					errs <- fmt.Errorf("port %d: %w", port, err)
					return
				}
				seen = g
			}
		}()
		go func() { // deliverer
			defer wg.Done()
			for i := 0; i < rounds; i++ {
				tab.Deliver(port)
			}
		}()
	}
	churn := make(chan struct{})
	go func() { // binding changes on other ports meanwhile
		defer close(churn)
		for i := 0; i < 500; i++ {
			p := evtchn.Port(70000 + i%7)
			if err := tab.Add(p, nil); err != nil {
				errs <- err
				return
			}
			if g, ok := tab.Generation(p); !ok || g != 0 {
				errs <- fmt.Errorf("fresh port %d: generation %d %v", p, g, ok)
				return
			}
			tab.Deliver(p)
			if err := tab.Remove(p); err != nil {
				errs <- err
				return
			}
			if err := tab.Check(p); !errors.Is(err, evtchn.ErrBadPort) {
				errs <- fmt.Errorf("Check of removed port %d: %v", p, err)
				return
			}
		}
	}()
	wg.Wait()
	<-churn
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if n := tab.Len(); n != ports {
		t.Errorf("%d ports in the table, want %d", n, ports)
	}
	got, ok := tab.AppendPorts(nil, 1000)
	if !ok || len(got) != ports || got[0] != 1000 || got[ports-1] != ports*1000 {
		t.Errorf("AppendPorts: %v %v", got, ok)
	}
	if _, ok := tab.AppendPorts(nil, ports-1); ok {
		t.Error("AppendPorts with too small a max succeeded")
	}
}
