package control_test

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gozen-dev/gozen/xenbus/control"
)

func TestVCPUReport(t *testing.T) {
	tests := []struct {
		vcpu, n int
		avail   string
		want    string // substring, "" for no message
	}{
		{0, 2, "offline", ""},
		{1, 2, "offline", "hot-unplug is not supported"},
		{1, 2, "online", "it never left"},
		{2, 2, "online", "hot-plug is not supported"},
		{2, 2, "offline", ""},
		{1, 2, "bogus", ""},
	}
	for _, tc := range tests {
		got := control.VCPUReport(tc.vcpu, tc.n, tc.avail)
		if (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
			t.Errorf("VCPUReport(%d, %d, %q) = %q, want %q", tc.vcpu, tc.n, tc.avail, got, tc.want)
		}
	}
}

func TestWatchVCPUs(t *testing.T) {
	s, c, ctx := setup(t)
	for _, id := range []string{"0", "1"} {
		if err := s.Write(home+"/cpu/"+id+"/availability", "online"); err != nil {
			t.Fatal(err)
		}
	}
	var mu sync.Mutex
	var got []string
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() {
		done <- control.WatchVCPUs(wctx, c, 2, func(m string) {
			mu.Lock()
			got = append(got, m)
			mu.Unlock()
		})
	}()
	wait := func(n int) []string {
		t.Helper()
		for i := 0; i < 500; i++ {
			mu.Lock()
			g := append([]string(nil), got...)
			mu.Unlock()
			if len(g) >= n {
				return g
			}
			time.Sleep(10 * time.Millisecond)
		}
		t.Fatalf("got %d reports, want %d", len(got), n)
		return nil
	}
	time.Sleep(100 * time.Millisecond) // the initial state is not reported
	if err := s.Write(home+"/cpu/1/availability", "offline"); err != nil {
		t.Fatal(err)
	}
	g := wait(1)
	if !strings.Contains(g[0], "vCPU 1 asked offline") {
		t.Errorf("first report %q", g[0])
	}
	if err := s.Write(home+"/cpu/1/availability", "online"); err != nil {
		t.Fatal(err)
	}
	g = wait(2)
	if !strings.Contains(g[1], "vCPU 1 asked online: it never left") {
		t.Errorf("second report %q", g[1])
	}
	cancel()
	if err := <-done; err == nil {
		t.Error("WatchVCPUs returned nil after its context ended")
	}
	mu.Lock()
	defer mu.Unlock()
	if len(got) != 2 {
		t.Errorf("reports %q, want 2 (the initial state is not one)", got)
	}
}
