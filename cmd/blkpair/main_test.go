//go:build !tamago

package main

import (
	"crypto/rand"
	"crypto/sha256"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gozen-dev/gozen/internal/devpair/pairtest"
)

// TestMain lets the test binary stand in for blkpair in child processes.
func TestMain(m *testing.M) {
	pairtest.Main(main)
	os.Exit(m.Run())
}

const imageSize = 4 << 20

// setup makes a rendezvous directory (the commands remove it, which the
// tests check) and a disk image of random bytes, and returns them with
// the image's SHA-256.
func setup(t *testing.T) (dir, image, sum string) {
	t.Helper()
	dir = pairtest.Dir(t, "bp")
	image = filepath.Join(t.TempDir(), "disk.img")
	b := make([]byte, imageSize)
	rand.Read(b)
	if err := os.WriteFile(image, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return dir, image, fmt.Sprintf("%x", sha256.Sum256(b))
}

func fileSum(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("%x", sha256.Sum256(b))
}

func startPair(t *testing.T, dir, image string, clientArgs ...string) (serve, client *pairtest.Proc) {
	t.Helper()
	serve = pairtest.Start(t, "serve", "serve", "-dir", dir, "-file", image)
	serve.WaitLine("connect with")
	client = pairtest.Start(t, "client", append([]string{"client", "-dir", dir}, clientArgs...)...)
	return serve, client
}

// TestReadWrite runs blkfront against blkback in two processes: the
// client reads the image as it is, writes and verifies, and the file
// ends up as the client says it wrote it.
func TestReadWrite(t *testing.T) {
	dir, image, before := setup(t)
	serve, client := startPair(t, dir, image, "-n", "150", "-seed", "3")
	out := client.Ended(false, "sha256 before "+before, "150 rounds verified")
	serve.Ended(false, "Connections:1")
	pairtest.DirGone(t, dir)
	after := fileSum(t, image)
	if after == before {
		t.Fatal("the image did not change")
	}
	if !strings.Contains(out, "sha256 after "+after) {
		t.Fatalf("the image's sha256 is %s; the client said:\n%s", after, out)
	}
}

// TestQueues runs the pair with the server offering some queues and the
// client wanting some: the data is checked as in TestReadWrite, and every
// queue used carried requests.
func TestQueues(t *testing.T) {
	for _, tc := range []struct {
		offer, want, used int
	}{{1, 4, 1}, {2, 2, 2}, {4, 4, 4}, {4, 2, 2}, {2, 4, 2}} {
		t.Run(fmt.Sprintf("offer%d-want%d", tc.offer, tc.want), func(t *testing.T) {
			dir, image, before := setup(t)
			serve := pairtest.Start(t, "serve", "serve", "-dir", dir, "-file", image, "-queues", fmt.Sprint(tc.offer))
			serve.WaitLine("connect with")
			client := pairtest.Start(t, "client", "client", "-dir", dir, "-n", "60", "-seed", fmt.Sprint(tc.want), "-queues", fmt.Sprint(tc.want))
			out := client.Ended(false, "sha256 before "+before, "50 rounds verified")
			serve.Ended(false, "Connections:1", fmt.Sprintf("Queues:%d ", tc.used))
			pairtest.DirGone(t, dir)
			for q := range tc.used + 1 {
				line := fmt.Sprintf("queue %d: ", q)
				i := strings.Index(out, line)
				switch {
				case q == tc.used && i >= 0:
					t.Errorf("queue %d used:\n%s", q, out)
				case q < tc.used && (i < 0 || strings.HasPrefix(out[i+len(line):], "0 ")):
					t.Errorf("queue %d carried no requests:\n%s", q, out)
				}
			}
			after := fileSum(t, image)
			if !strings.Contains(out, "sha256 after "+after) {
				t.Fatalf("the image's sha256 is %s; the client said:\n%s", after, out)
			}
		})
	}
}

// TestKilled kills one side mid-transfer: the other notices through the
// store, reports it, releases everything and removes the directory.
func TestKilled(t *testing.T) {
	for _, victim := range []string{"client", "serve"} {
		t.Run(victim, func(t *testing.T) {
			dir, image, _ := setup(t)
			serve, client := startPair(t, dir, image, "-n", "0")
			client.WaitLine("100 rounds verified")
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

func TestParseSize(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
	}{{"512", 512}, {"4K", 4096}, {"16M", 16 << 20}, {"2G", 2 << 30}, {"0", 0}, {"x", 0}, {"-1K", 0}, {"99999999999G", 0}} {
		got, err := parseSize(tc.in)
		if got != tc.want || (err != nil) != (tc.want == 0) {
			t.Errorf("parseSize(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
}
