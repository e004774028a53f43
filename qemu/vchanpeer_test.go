package qemu

import (
	"context"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gozen-dev/gozen/internal/teststream"
	"github.com/gozen-dev/gozen/qemu/rig"
)

// vchanPeerLine matches the peer's key=value report lines.
var vchanPeerLine = regexp.MustCompile(`^VCHANPEER (.*)$`)

// peerFields parses the key=value words of a VCHANPEER line.
func peerFields(s string) map[string]string {
	m := map[string]string{}
	for _, w := range strings.Fields(s) {
		if k, v, ok := strings.Cut(w, "="); ok {
			m[k] = v
		} else {
			m[w] = ""
		}
	}
	return m
}

// peerLines returns the fields of every VCHANPEER line of a run that has
// all the given keys.
func peerLines(run *rig.Run, keys ...string) []map[string]string {
	var out []map[string]string
next:
	for _, l := range run.Serial {
		m := vchanPeerLine.FindStringSubmatch(l.Text)
		if m == nil {
			continue
		}
		f := peerFields(m[1])
		for _, k := range keys {
			if _, ok := f[k]; !ok {
				continue next
			}
		}
		out = append(out, f)
	}
	return out
}

// TestTierBVchanPeerSelf proves the dom0 libxenvchan peer (qemu/vchanpeer,
// Xen's real libxenvchan) in the rig without Gozen: its bench mode runs a
// libxenvchan server and client in dom0 (domain 0 to itself) and moves
// 64 MiB server->client, 64 MiB client->server and 64 MiB each way at once
// in 64 KiB writes over 64 KiB rings, checking every byte's CRC-32; then
// the server and client modes run as two processes, the server echoing 8 MiB
// that the client sends and receives at once over in-page (1 and 2 KiB)
// rings. The bench rates are the reference for Gozen's vchan.
func TestTierBVchanPeerSelf(t *testing.T) {
	needGuest(t, needPeer)
	if _, err := rig.BuildVchanPeer(); err != nil {
		t.Fatalf("FAIL building the vchan peer: %v", err)
	}
	script := rig.Script(`
echo "GOZEN-VP-BENCH-START"
/gozen/vchanpeer bench -size 64M -chunk 64K -ring 64K; echo "GOZEN-VP-BENCH-RC $?"
/gozen/vchanpeer bench -size 64M -chunk 64K -ring 64K -nocheck -path /local/domain/0/data/vchanpeer-bench2; echo "GOZEN-VP-BENCH2-RC $?"
P=/local/domain/0/data/vchanpeer-echo
/gozen/vchanpeer server 0 $P 1024 1024 -echo -timeout 60 & sp=$!
/gozen/vchanpeer client 0 $P -send 8M -recv 8M -seed 7 -timeout 60; echo "GOZEN-VP-CLIENT-RC $?"
wait $sp; echo "GOZEN-VP-SERVER-RC $?"
`)
	run, err := rig.BootDomUs(context.Background(), nil, script, rig.Options{Timeout: 6 * time.Minute})
	saveSerial(t, run)
	if err != nil {
		t.Fatalf("FAIL tier B run: %v\n%s", err, run.SerialText())
	}
	text := run.SerialText()
	if strings.Contains(text, "VCHANPEER error=unavailable") {
		t.Fatalf("FAIL the peer was not built:\n%s", text)
	}

	phases := map[string]bool{}
	for _, f := range peerLines(run, "bench", "phase") {
		p := f["phase"]
		mb, _ := strconv.ParseFloat(f["MBps"], 64)
		if p == "cpu" {
			t.Logf("INFO dom0 CPU generates and checksums the stream (sender's and receiver's per-byte work) at %s MB/s",
				f["MBps"])
			continue
		}
		p += map[string]string{"0": "-nocheck", "1": ""}[f["check"]]
		phases[p] = true
		if f["ok"] != "1" || f["crc_sent"] != f["crc_recv"] || mb <= 0 {
			t.Errorf("FAIL bench %s: %v", p, f)
			continue
		}
		t.Logf("PASS libxenvchan<->libxenvchan in dom0, %s: %s bytes in %s s = %s MB/s (%s MiB/s), "+
			"%s-byte writes, %s-byte rings, crc %s both ends",
			p, f["bytes"], f["secs"], f["MBps"], f["MiBps"], f["chunk"], f["ring"], f["crc_recv"])
		if p == "s2c" {
			// the stream is specified in vchanpeer.c; Gozen's side must
			// produce the same bytes
			if want := fmt.Sprintf("0x%08x", teststream.CRC(1, 64<<20)); f["crc_recv"] != want {
				t.Errorf("FAIL the peer's stream of seed 1 has crc %s, the Go definition %s", f["crc_recv"], want)
			} else {
				t.Logf("PASS the peer's stream matches its Go definition (internal/teststream)")
			}
		}
	}
	for _, p := range []string{"s2c", "c2s", "duplex", "s2c-nocheck", "c2s-nocheck", "duplex-nocheck"} {
		if !phases[p] {
			t.Errorf("FAIL bench phase %s did not report", p)
		}
	}
	if !strings.Contains(text, "GOZEN-VP-BENCH-RC 0") || !strings.Contains(text, "GOZEN-VP-BENCH2-RC 0") {
		t.Errorf("FAIL vchanpeer bench exited non-zero")
	}

	var echoed, got map[string]string
	for _, f := range peerLines(run, "role") {
		switch {
		case f["role"] == "server" && f["echoed"] != "":
			echoed = f
		case f["role"] == "client" && f["recv"] != "" && f["crc"] != "" && f["expect"] != "" && f["bench"] == "" && f["ok"] != "":
			got = f
		}
	}
	switch {
	case echoed == nil || got == nil:
		t.Errorf("FAIL the echo run did not report (server %v, client %v)", echoed, got)
	case got["ok"] != "1" || got["recv"] != strconv.Itoa(8<<20) || echoed["crc"] != got["crc"]:
		t.Errorf("FAIL echo run: server %v, client %v", echoed, got)
	default:
		t.Logf("PASS client/server processes: 8 MiB echoed over in-page rings, crc %s, %s MB/s round trip",
			got["crc"], got["MBps"])
	}
	for _, rc := range []string{"GOZEN-VP-CLIENT-RC 0", "GOZEN-VP-SERVER-RC 0"} {
		if !strings.Contains(text, rc) {
			t.Errorf("FAIL want %q in the serial output", rc)
		}
	}
	if t.Failed() {
		t.Logf("dom0 output:\n%s", grepSerial(run, "VCHANPEER", "GOZEN-VP"))
	}
}

// grepSerial returns the serial lines containing any of the given strings.
func grepSerial(run *rig.Run, subs ...string) string {
	var b strings.Builder
	for _, l := range run.Serial {
		for _, s := range subs {
			if strings.Contains(l.Text, s) {
				b.WriteString(l.Text + "\n")
				break
			}
		}
	}
	return b.String()
}
