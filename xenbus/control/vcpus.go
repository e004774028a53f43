package control

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/gozen-dev/gozen/xenbus"
)

// VCPUNode is the directory where the toolstack asks for vCPUs online or
// offline: xl vcpu-set writes cpu/<N>/availability ("online", "offline")
// of a PVH domain.
const VCPUNode = "cpu"

// VCPUReport is what WatchVCPUs says about one change of a vCPU's
// availability of a domain running Go on n vCPUs: hot-unplug is not
// supported (an M of the Go runtime never leaves its vCPU, so the vCPU
// keeps running), and a vCPU beyond the n the domain started with is not
// brought up later. It returns "" when nothing is to be said.
func VCPUReport(vcpu, n int, availability string) string {
	switch {
	case vcpu == 0:
		return ""
	case vcpu >= n && availability == "online":
		return fmt.Sprintf("gozen: xl vcpu-set: vCPU %d asked online; vCPU hot-plug is not supported: Go runs on the %d vCPUs the domain started with", vcpu, n)
	case vcpu >= n:
		return ""
	case availability == "offline":
		return fmt.Sprintf("gozen: xl vcpu-set: vCPU %d asked offline; vCPU hot-unplug is not supported: it keeps running Go (GOMAXPROCS stays %d)", vcpu, n)
	case availability == "online":
		return fmt.Sprintf("gozen: xl vcpu-set: vCPU %d asked online: it never left (%d vCPUs run Go)", vcpu, n)
	}
	return ""
}

// WatchVCPUs watches VCPUNode until ctx ends or the client fails, and
// calls report with VCPUReport's message for each vCPU whose availability
// changed, for a domain running Go on n vCPUs. The availability found
// when it starts is taken as the initial state, not reported.
func WatchVCPUs(ctx context.Context, c *xenbus.Client, n int, report func(string)) error {
	w, err := c.Watch(ctx, VCPUNode)
	if err != nil {
		return fmt.Errorf("control: watching %s: %w", VCPUNode, err)
	}
	defer func() {
		uctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		w.Unwatch(uctx)
		cancel()
	}()
	last := map[int]string{}
	first := true
	for {
		select {
		case _, ok := <-w.Events():
			if !ok {
				return c.Err()
			}
		case <-ctx.Done():
			return ctx.Err()
		}
		ids, err := c.Directory(ctx, VCPUNode)
		if err != nil {
			if c.Err() != nil || ctx.Err() != nil {
				return err
			}
			continue // no cpu/ directory (yet)
		}
		for _, s := range ids {
			id, err := strconv.Atoi(s)
			if err != nil || id < 0 {
				continue
			}
			a, err := c.ReadString(ctx, VCPUNode+"/"+s+"/availability")
			if err != nil || a == last[id] {
				continue
			}
			last[id] = a
			if first {
				continue
			}
			if m := VCPUReport(id, n, a); m != "" {
				report(m)
			}
		}
		first = false
	}
}
