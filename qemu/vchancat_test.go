package qemu

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gozen-dev/gozen/qemu/rig"
)

// vcatSize is what each vchancat session moves one way.
const vcatSize = "16M"

// vcatGozenServer are the sessions of the Gozen guest that serves dom0's
// vchancat (cmd/vchancat -xen over evlinux, gntlinux and xslinux); the
// last one is cut by destroying the guest while dom0 receives.
var vcatGozenServer = []vsess{
	{port: "k1", read: "64K", write: "64K", send: vcatSize, recv: "0", seed: 301, rseed: 301, close: "first", what: "Gozen sends, vchancat receives"},
	{port: "k2", read: "64K", write: "64K", send: "0", recv: vcatSize, seed: 302, rseed: 302, close: "eof", what: "vchancat sends, Gozen receives"},
	{port: "k3", read: "64K", write: "64K", send: "4096M", recv: "0", seed: 303, rseed: 303, nocheck: true, close: "first", what: "the guest is destroyed mid-transfer"},
}

// vcatGozenClient are the sessions of the Gozen guest that dials dom0's
// listening vchancat.
var vcatGozenClient = []vsess{
	{port: "k4", read: "64K", write: "64K", send: vcatSize, recv: "0", seed: 304, rseed: 304, close: "first", what: "Gozen sends, vchancat (server) receives"},
	{port: "k5", read: "64K", write: "64K", send: "0", recv: vcatSize, seed: 305, rseed: 305, close: "eof", what: "vchancat (server) sends, Gozen receives"},
}

// vcatLinuxInit is the Linux domU's part: libxenvchan (qemu/vchanpeer) as
// the server of l1, sending, then as the client of l2 (dom0's vchancat
// serves it), receiving; both checked by the stream's CRC-32.
var vcatLinuxInit = fmt.Sprintf(`
me=$(/gozen/dom0tool xsread domid)
echo "GOZEN-LVC-BEGIN l1"
/gozen/vchanpeer server 0 data/vchan/0/l1 64K 64K -send %[1]s -seed 401 -timeout 120
echo "GOZEN-LVC-END l1 rc=$?"
echo "GOZEN-LVC-BEGIN l2"
/gozen/vchanpeer client 0 /local/domain/0/data/vchan/$me/l2 -recv %[1]s -rseed 402 -timeout 120
echo "GOZEN-LVC-END l2 rc=$?"
`, vcatSize)

// vcatScript is dom0's part. Each vchancat session prints
// "GOZEN-VCAT port rc=N" and, where dom0 received, whether the bytes are
// the stream ("cmp=ok"); vchancat -v prints its rate.
var vcatScript = fmt.Sprintf(`
V="/gozen/vchancat -xen -v"
for s in 301 302 304 305 401 402; do /gozen/dom0tool blob /tmp/s$s %[1]d $s; done
# vc PORT CMD...: run a vchancat, its stdout left to the caller's
# redirection; its stderr and how it ended go to the console (stderr)
vc() { port=$1; shift; "$@" 2>/tmp/vc-$port.err; rc=$?; sed "s/^/GOZEN-VCAT-ERR $port| /" /tmp/vc-$port.err >&2; echo "GOZEN-VCAT $port rc=$rc" >&2; }
same() { cmp -s /tmp/out-$1 /tmp/s$2 && echo "GOZEN-VCAT $1 cmp=ok" || echo "GOZEN-VCAT $1 cmp=bad $(wc -c < /tmp/out-$1) bytes"; rm -f /tmp/out-$1; }

# the example app: a line echoed by apps/vchan-echo
gozen-guest vecho /gozen/vecho.cfg 300 &
ep=$!
wait-for log vecho 'vchan-echo: waiting' 90
g=$(wait-for domid vecho 10)
{ echo hello-gozen-vchan; sleep 3; } | vc echo timeout 60 $V -peer $g echo > /tmp/out-echo
echo "GOZEN-VCAT echo got $(cat /tmp/out-echo)"
xl shutdown -w vecho >/dev/null 2>&1 || xl destroy vecho
wait $ep

# a Gozen server
gozen-guest vcs /gozen/vcs.cfg 600 &
sp=$!
wait-for log vcs 'vchan-echo: ready' 90
g=$(wait-for domid vcs 10)
vc k1 timeout 120 $V -n -peer $g k1 > /tmp/out-k1; same k1 301
vc k2 timeout 120 $V -peer $g k2 < /tmp/s302
( sleep 4; xl destroy vcs; echo "GOZEN-VCAT k3 destroyed" ) &
vc k3 timeout 60 $V -n -peer $g k3 > /dev/null
wait $sp

# a Gozen client: dom0's vchancat serves it
gozen-guest vcc /gozen/vcc.cfg 600 &
cp=$!
wait-for log vcc 'vchan-echo: ready' 90
g=$(wait-for domid vcc 10)
vc k4 timeout 120 $V -l -n -peer $g k4 > /tmp/out-k4; same k4 304
vc k5 timeout 120 $V -l -peer $g k5 < /tmp/s305
wait $cp

# libxenvchan in a Linux domU, both roles
gozen-guest lvc /gozen/lvc.cfg 600 &
lp=$!
lg=$(wait-for domid lvc 60)
vc l2 timeout 180 $V -l -peer $lg l2 < /tmp/s402 &
l2=$!
wait-for log lvc 'GOZEN-LVC-BEGIN l1' 120
vc l1 timeout 120 $V -n -peer $lg l1 > /tmp/out-l1; same l1 401
wait $l2
wait $lp
`, 16<<20)

var vcatLineRE = regexp.MustCompile(`^GOZEN-VCAT (\S+) (.*)$`)

// TestTierBVchanCat runs cmd/vchancat in dom0's user space over /dev/xen
// (evlinux, gntlinux, xslinux) against Gozen domUs in both roles (16 MiB
// each way, checked by the guest's CRC-32 and by cmp in dom0), against
// apps/vchan-echo, and against Debian's libxenvchan in a Linux PVH domU in
// both roles; and destroys a Gozen server mid-transfer: vchancat must
// notice and fail, not hang.
func TestTierBVchanCat(t *testing.T) {
	needGuest(t, needPeer)
	sess := buildGuest(t, "./qemu/guests/vchansession")
	echo := buildGuest(t, "./apps/vchan-echo")
	tool, err := rig.BuildDom0Tool()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rig.BuildVchanPeer(); err != nil {
		t.Fatalf("FAIL building the vchan peer: %v", err)
	}
	guests := []rig.Guest{
		{Name: "vecho", ELF: echo, Memory: 64, Cmdline: "-peer 0 -port echo"},
		{Name: "vcs", ELF: sess, Memory: 64, Cmdline: vchanCmdline(true, vcatGozenServer)},
		{Name: "vcc", ELF: sess, Memory: 64, Cmdline: vchanCmdline(false, vcatGozenClient)},
		{Name: "lvc", Linux: true, Memory: 128, Init: vcatLinuxInit,
			Files: []rig.CPIOFile{{Name: "gozen/dom0tool", Mode: 0o755, Data: tool}}},
	}
	run, err := bootLinux(t, guests, vcatScript, rig.Options{Timeout: 20 * time.Minute, Stream: liveLog(t)})
	if err != nil {
		t.Fatalf("FAIL tier B run: %v", err)
	}
	checkWaits(t, run)
	got := map[string][]string{}
	for _, l := range run.Serial {
		if m := vcatLineRE.FindStringSubmatch(strings.TrimSpace(l.Text)); m != nil {
			got[m[1]] = append(got[m[1]], m[2])
		}
	}
	has := func(port, want string) bool {
		for _, v := range got[port] {
			if v == want {
				return true
			}
		}
		return false
	}
	errLines := func(port string) string { return grepLines(run.SerialText(), "GOZEN-VCAT-ERR "+port+"|") }
	// the example app
	if has("echo", "rc=0") && has("echo", "got hello-gozen-vchan") {
		t.Logf("PASS vchancat in dom0 <-> apps/vchan-echo: a line sent and echoed back")
	} else {
		t.Errorf("FAIL vchancat <-> apps/vchan-echo: %v\n%s", got["echo"], errLines("echo"))
	}
	// Gozen sessions: the guest's own verdict, and dom0's
	gozen := func(guest string, sessions []vsess, role string) {
		g := run.Guests[guest]
		if g == nil {
			t.Errorf("FAIL guest %s never started", guest)
			return
		}
		for i, s := range sessions {
			if s.port == "k3" {
				continue
			}
			name := fmt.Sprintf("%s (Gozen %s, vchancat in dom0: %s)", s.port, role, s.what)
			ok := len(guestFields(g, i+1, "PASS")) > 0 && has(s.port, "rc=0")
			if s.recv == "0" { // dom0 received: it compared
				ok = ok && has(s.port, "cmp=ok")
			}
			if ok {
				t.Logf("PASS %s: %s", name, strings.TrimSpace(errLines(s.port)))
			} else {
				t.Errorf("FAIL %s: dom0 %v\n%s\nguest: %s", name, got[s.port], errLines(s.port), grepLines(g.Text(), fmt.Sprintf("session=%d ", i+1)))
			}
		}
	}
	gozen("vcs", vcatGozenServer, "server")
	gozen("vcc", vcatGozenClient, "client")
	// the peer that died
	switch {
	case !has("k3", "destroyed"):
		t.Errorf("FAIL k3: the Gozen server was not destroyed mid-transfer: %v", got["k3"])
	case has("k3", "rc=0") || has("k3", "rc=124") || has("k3", "rc=143"):
		t.Errorf("FAIL k3: vchancat did not notice the destroyed peer (%v)\n%s", got["k3"], errLines("k3"))
	default:
		t.Logf("PASS k3: the Gozen server was destroyed mid-transfer and vchancat failed with: %s", strings.TrimSpace(errLines("k3")))
	}
	// libxenvchan
	l := run.Guests["lvc"]
	if l == nil {
		t.Fatalf("FAIL the Linux domU never started")
	}
	for _, c := range []struct{ port, what string }{
		{"l1", "libxenvchan server sends, vchancat client receives"},
		{"l2", "vchancat server sends, libxenvchan client receives"},
	} {
		peer, rc := linuxSession(l, c.port)
		ok := rc == 0 && has(c.port, "rc=0")
		if c.port == "l1" {
			ok = ok && has("l1", "cmp=ok")
		} else {
			r := firstWith(peer, "recv")
			ok = ok && r != nil && r["ok"] == "1"
		}
		if ok {
			t.Logf("PASS %s (%s): %s", c.port, c.what, strings.TrimSpace(errLines(c.port)))
		} else {
			t.Errorf("FAIL %s (%s): Linux domU rc %d %v, dom0 %v\n%s", c.port, c.what, rc, peer, got[c.port], errLines(c.port))
		}
	}
}

// vcatRateRE matches vchancat -v's summary.
var vcatRateRE = regexp.MustCompile(`vchancat: sent (\d+) received (\d+) bytes in (\S+) s \((\S+) MB/s\)`)

// BenchmarkVchanDom0Go compares, against one Gozen domU serving vchans,
// a dom0 peer written in Go (cmd/vchancat -xen over evlinux, gntlinux,
// xslinux) with Debian's libxenvchan (qemu/vchanpeer) in one rig run: 64
// MiB each way over 64 KiB rings, transport only (nothing generated or
// checked, so the two peers do the same work: each sends from memory,
// vchanpeer -nocheck one chunk over and over, vchancat -zero zeros, and
// each receives into a buffer it throws away), three rounds; the rate is
// the receiver's, the median reported. goback/libxenvchan above 1: the Go
// peer moved the data faster.
func BenchmarkVchanDom0Go(b *testing.B) {
	needGuest(b, needPeer)
	elf := buildGuest(b, "./qemu/guests/vchansession")
	if _, err := rig.BuildVchanPeer(); err != nil {
		b.Fatalf("building the vchan peer: %v", err)
	}
	const rounds = 3
	var sessions []vsess
	var sh strings.Builder
	sh.WriteString(`gozen-guest vdg /gozen/vdg.cfg 900 &
gp=$!
wait-for log vdg 'vchan-echo: ready' 90
g=$(wait-for domid vdg 10)
`)
	for r := 0; r < rounds; r++ {
		for _, dir := range []string{"out", "in"} {
			for _, peer := range []string{"go", "c"} {
				s := vsess{port: fmt.Sprintf("%s%s%d", peer, dir, r), read: "64K", write: "64K", send: "0", recv: "0",
					seed: 1, rseed: 1, nocheck: true, close: "eof", what: peer + " " + dir}
				if dir == "out" {
					s.send, s.close = "64M", "first"
				} else {
					s.recv = "64M"
				}
				sessions = append(sessions, s)
				// vchancat -v reports on stderr, vchanpeer on stdout
				cmd := s.peerCmd(true)
				if peer == "go" {
					cmd = "/gozen/vchancat -xen -v -n -peer $g " + s.port + " 2>&1 >/dev/null"
					if dir == "in" {
						// from memory, as vchanpeer -nocheck sends
						cmd = "/gozen/vchancat -xen -v -zero 67108864 -peer $g " + s.port + " </dev/null 2>&1"
					}
				}
				fmt.Fprintf(&sh, "echo \"GOZEN-VC-BEGIN %[1]s\"; %[2]s; echo \"GOZEN-VC-END %[1]s rc=$?\"\n", s.port, cmd)
			}
		}
	}
	sh.WriteString("wait $gp\n")
	guests := []rig.Guest{{Name: "vdg", ELF: elf, Memory: benchMemory, Cmdline: vchanCmdline(true, sessions)}}
	for i := 0; i < b.N; i++ {
		run := bootBench(b, guests, sh.String(), rig.Options{Timeout: 30 * time.Minute})
		g := run.Guests["vdg"]
		if g == nil {
			b.Fatalf("FAIL the guest never started\n%s", run.SerialText())
		}
		// each session's lines in dom0 (vchancat's summary, vchanpeer's
		// fields) and the guest's
		section := map[string][]string{}
		cur := ""
		for _, l := range run.Serial {
			t := strings.TrimSpace(l.Text)
			if m := vcBegin.FindStringSubmatch(t); m != nil {
				cur = m[1]
				continue
			}
			if m := vcEnd.FindStringSubmatch(t); m != nil {
				if m[2] != "0" {
					b.Fatalf("FAIL session %s: dom0's peer exited %s\n%s", m[1], m[2], strings.Join(section[m[1]], "\n"))
				}
				cur = ""
				continue
			}
			if cur != "" && !strings.HasPrefix(t, "GZ|") {
				section[cur] = append(section[cur], t)
			}
		}
		rates := map[string][]float64{}
		for n, s := range sessions {
			var mbps float64
			switch {
			case strings.HasSuffix(s.what, " in"): // the guest received
				f := firstWith(guestFields(g, n+1, "recv"), "recv")
				if f == nil || f["ok"] != "1" {
					b.Fatalf("FAIL session %s: the guest's receive: %v", s.port, f)
				}
				mbps, _ = strconv.ParseFloat(f["MBps"], 64)
			case strings.HasPrefix(s.what, "go "):
				for _, t := range section[s.port] {
					if m := vcatRateRE.FindStringSubmatch(t); m != nil && m[2] == "67108864" {
						mbps, _ = strconv.ParseFloat(m[4], 64)
					}
				}
			default:
				for _, t := range section[s.port] {
					if m := vchanPeerLine.FindStringSubmatch(t); m != nil {
						if f := peerFields(m[1]); f["recv"] == "67108864" {
							mbps, _ = strconv.ParseFloat(f["MBps"], 64)
						}
					}
				}
			}
			if mbps <= 0 {
				b.Fatalf("FAIL session %s (%s): no rate\n%s", s.port, s.what, strings.Join(section[s.port], "\n"))
			}
			rates[s.what] = append(rates[s.what], mbps)
		}
		for _, dir := range []string{"out", "in"} {
			gop, cp := median(rates["go "+dir]), median(rates["c "+dir])
			name := map[string]string{"out": "domU->dom0", "in": "dom0->domU"}[dir]
			b.ReportMetric(gop, "go-MB/s("+name+")")
			b.ReportMetric(cp, "libxenvchan-MB/s("+name+")")
			b.ReportMetric(gop/cp, "go/libxenvchan("+name+")")
		}
	}
}
