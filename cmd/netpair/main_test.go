//go:build !tamago

package main

import (
	"fmt"
	"math/rand/v2"
	"os"
	"strings"
	"testing"

	"github.com/gozen-dev/gozen/internal/devpair/pairtest"
)

// TestMain lets the test binary stand in for netpair in child processes.
func TestMain(m *testing.M) {
	pairtest.Main(main)
	os.Exit(m.Run())
}

func startPair(t *testing.T, clientArgs ...string) (dir string, serve, client *pairtest.Proc) {
	t.Helper()
	dir = pairtest.Dir(t, "np")
	serve = pairtest.Start(t, "serve", "serve", "-dir", dir)
	serve.WaitLine("connect with")
	client = pairtest.Start(t, "client", append([]string{"client", "-dir", dir}, clientArgs...)...)
	return dir, serve, client
}

// TestEcho sends frames of every size class up to 64 KiB from netfront
// to netback and back, across two processes.
func TestEcho(t *testing.T) {
	dir, serve, client := startPair(t, "-n", "300", "-seed", "7")
	client.Ended(false, "300 frames echoed", "sent 300 frames", "received 300")
	serve.Ended(false, "300 frames received (0 bad), 300 sent")
	pairtest.DirGone(t, dir)
}

// TestQueues echoes frames of 16 flows over the queues the server
// offers and the client wants: every queue used carries frames both
// ways, each flow's frames come back whole and in order.
func TestQueues(t *testing.T) {
	for _, tc := range []struct{ offer, want, used int }{{1, 4, 1}, {2, 2, 2}, {4, 4, 4}, {4, 2, 2}, {2, 4, 2}} {
		t.Run(fmt.Sprintf("offer%d-want%d", tc.offer, tc.want), func(t *testing.T) {
			dir := pairtest.Dir(t, "np")
			serve := pairtest.Start(t, "serve", "serve", "-dir", dir, "-queues", fmt.Sprint(tc.offer))
			serve.WaitLine("connect with")
			client := pairtest.Start(t, "client", "client", "-dir", dir, "-n", "400", "-max", "9000", "-queues", fmt.Sprint(tc.want))
			cout := client.Ended(false, "400 frames echoed", "sent 400 frames", "received 400")
			sout := serve.Ended(false, "400 frames received (0 bad), 400 sent")
			pairtest.DirGone(t, dir)
			// Each queue's counts, as both sides print them.
			counts := func(out, format string, q int) (a, b int, ok bool) {
				for _, l := range strings.Split(out, "\n") {
					var k int
					if n, _ := fmt.Sscanf(l, format, &k, &a, &b); n == 3 && k == q {
						return a, b, true
					}
				}
				return 0, 0, false
			}
			for q := range tc.used + 1 {
				ct, cr, cok := counts(cout, "netpair: queue %d: sent %d frames, received %d", q)
				sr, ss, sok := counts(sout, "netpair: queue %d: %d frames received, %d sent", q)
				switch {
				case q == tc.used || tc.used == 1:
					if cok || (sok && tc.used > 1) {
						t.Errorf("queue %d of %d reported:\n%s\n%s", q, tc.used, cout, sout)
					}
				case !cok || !sok || ct == 0 || cr == 0 || ct != sr || cr != ss:
					t.Errorf("queue %d: client sent %d received %d, server received %d sent %d:\n%s\n%s", q, ct, cr, sr, ss, cout, sout)
				}
			}
		})
	}
}

// TestKilled kills one side mid-transfer: the other notices through the
// store, reports it, releases everything and removes the directory.
func TestKilled(t *testing.T) {
	for _, victim := range []string{"client", "serve"} {
		t.Run(victim, func(t *testing.T) {
			dir, serve, client := startPair(t, "-n", "0")
			client.WaitLine("100 frames echoed")
			if victim == "client" {
				client.Kill()
				client.Wait()
				serve.Ended(true, "peer gone")
			} else {
				serve.Kill()
				serve.Wait()
				client.Ended(true, "peer gone")
			}
			pairtest.DirGone(t, dir)
		})
	}
}

// TestFrames checks the frame codec: every size round-trips and any
// corruption is caught.
func TestFrames(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 40; i++ {
		n := frameSize(rng, i, 65535)
		f := makeFrame(nil, uint32(i), n, rng, false)
		if seq, size, err := checkFrame(f); err != nil || seq != uint32(i) || size != n {
			t.Fatalf("frame %d of %d bytes: %d %d %v", i, n, seq, size, err)
		}
		bad := append([]byte(nil), f...)
		bad[rng.IntN(len(bad))] ^= 1 << rng.IntN(8)
		if _, _, err := checkFrame(bad); err == nil {
			t.Fatalf("frame %d: corruption not caught", i)
		}
		if _, _, err := checkFrame(f[:len(f)-1]); err == nil {
			t.Fatalf("frame %d: truncation not caught", i)
		}
	}
}
