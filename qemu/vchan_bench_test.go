package qemu

import (
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gozen-dev/gozen/qemu/rig"
)

// vchanBenchCase is one transfer BenchmarkVchan measures twice, from a
// Gozen domU and from a Linux domU: the domU serves a vchan with 64 KiB
// rings to the dom0 libxenvchan client and 64 MiB move one way in 64 KiB
// writes, checked (the stream generated and CRC-32 checksummed on both
// ends) or transport only.
type vchanBenchCase struct {
	what   string // the metric's name: direction and checking
	gozen  vsess  // the Gozen domU's session (vchansession as server)
	linux  vsess  // the Linux domU's session (vchanpeer as server)
	toDom0 bool   // domU->dom0: the rate is dom0's; else the domU's
}

// vchanBenchRounds is how many times BenchmarkVchan runs each transfer in
// each domU: single 64 MiB transfers of the emulated machine vary by up to
// a factor of two from run to run, so it reports the medians.
const vchanBenchRounds = 3

// vchanBenchCases are BenchmarkVchan's transfers, every one rounds times
// in a row of rounds. Each domU's sessions run one after the other with the
// same seeds, sizes and rings; ports differ so that dom0's lines name the
// domain and round they belong to.
func vchanBenchCases(rounds int) []vchanBenchCase {
	var cs []vchanBenchCase
	for r := 0; r < rounds; r++ {
		for i, c := range []struct {
			what    string
			toDom0  bool
			nocheck bool
		}{
			{"domU->dom0,checked", true, false},
			{"dom0->domU,checked", false, false},
			{"domU->dom0,transport", true, true},
			{"dom0->domU,transport", false, true},
		} {
			s := vsess{read: "64K", write: "64K", send: "0", recv: "0", seed: i + 1, rseed: i + 1,
				nocheck: c.nocheck, close: "eof", what: "bench " + c.what}
			if c.toDom0 {
				s.send = "64M"
			} else {
				s.recv = "64M"
			}
			g, l := s, s
			n := r*4 + i + 1
			g.port, l.port = fmt.Sprintf("b%d", n), fmt.Sprintf("l%d", n)
			cs = append(cs, vchanBenchCase{what: c.what, gozen: g, linux: l, toDom0: c.toDom0})
		}
	}
	return cs
}

// median returns the middle value of xs (the mean of the two middle ones
// for an even count).
func median(xs []float64) float64 {
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// linuxPeerArgs is the Linux domU's vchanpeer command for session s: a
// libxenvchan server for dom0 at its own data/vchan/0/PORT (a relative
// xenstore path), doing what the Gozen server does in the same session.
func (s vsess) linuxPeerArgs() string {
	c := fmt.Sprintf("/gozen/vchanpeer server 0 data/vchan/0/%s %s %s -send %s -recv %s -seed %d -rseed %d -timeout 120",
		s.port, s.read, s.write, s.send, s.recv, s.seed, s.rseed)
	if s.nocheck {
		c += " -nocheck"
	}
	return c
}

var (
	lvcBegin = regexp.MustCompile(`^GOZEN-LVC-BEGIN (\S+)`)
	lvcEnd   = regexp.MustCompile(`^GOZEN-LVC-END (\S+) rc=(\d+)`)
)

// linuxSession returns the VCHANPEER lines the Linux domU printed for one
// session and the peer's exit status (-1 if it never ended).
func linuxSession(g *rig.GuestResult, port string) ([]map[string]string, int) {
	var out []map[string]string
	in, rc := false, -1
	for _, l := range g.Lines {
		text := strings.TrimSpace(l.Text)
		if m := lvcBegin.FindStringSubmatch(text); m != nil {
			in = m[1] == port
			continue
		}
		if m := lvcEnd.FindStringSubmatch(text); m != nil && m[1] == port {
			rc, _ = strconv.Atoi(m[2])
			in = false
			continue
		}
		if m := vchanPeerLine.FindStringSubmatch(text); m != nil && in {
			out = append(out, peerFields(m[1]))
		}
	}
	return out, rc
}

// linuxRate checks one session between the Linux domU's libxenvchan server
// and the dom0 client and returns the receiver's rate in MB/s.
func linuxRate(run *rig.Run, g *rig.GuestResult, c vchanBenchCase) (float64, error) {
	s := c.linux
	lin, lrc := linuxSession(g, s.port)
	dom0, drc := peerSession(run, s.port)
	if lrc != 0 || drc != 0 {
		return 0, fmt.Errorf("vchanpeer exited %d in the Linux domU (%v) and %d in dom0 (%v)", lrc, lin, drc, dom0)
	}
	sender, receiver := firstWith(lin, "sent"), firstWith(dom0, "recv")
	if !c.toDom0 {
		sender, receiver = firstWith(dom0, "sent"), firstWith(lin, "recv")
	}
	if sender == nil || receiver == nil || receiver["ok"] != "1" || (!s.nocheck && sender["crc"] != receiver["crc"]) {
		return 0, fmt.Errorf("sender %v, receiver %v", sender, receiver)
	}
	mbps, err := strconv.ParseFloat(receiver["MBps"], 64)
	if err != nil || mbps <= 0 {
		return 0, fmt.Errorf("receiver's rate %q", receiver["MBps"])
	}
	return mbps, nil
}

// BenchmarkVchan compares Gozen's vchan with Xen's libxenvchan like with
// like: in one tier-B rig run a Gozen domU (qemu/guests/vchansession) and
// then a Linux PVH domU running the libxenvchan C peer (qemu/vchanpeer,
// the rig's reference Linux guest, see rig.Guest.Init), with the same
// memory (benchMemory) and one vCPU each on the same pCPU, serve the same
// transfers to the same dom0 libxenvchan client: 64 MiB one way over
// 64 KiB rings in 64 KiB writes, each direction, checked and transport
// only, vchanBenchRounds times each. It reports the median rate of each
// transfer (MB/s, 10^6 bytes, timed by the receiver from its first byte
// to its last) and the ratio of the medians, gozen/linux: above 1, the
// Gozen domU moved the data faster. Run it with -benchtime 1x.
func BenchmarkVchan(b *testing.B) {
	needGuest(b, needPeer)
	elf := buildGuest(b, "./qemu/guests/vchansession")
	if _, err := rig.BuildVchanPeer(); err != nil {
		b.Fatalf("building the vchan peer: %v", err)
	}
	var gs, ls []vsess
	var linit strings.Builder
	cases := vchanBenchCases(vchanBenchRounds)
	for _, c := range cases {
		gs, ls = append(gs, c.gozen), append(ls, c.linux)
		fmt.Fprintf(&linit, "echo \"GOZEN-LVC-BEGIN %[1]s\"; %[2]s; echo \"GOZEN-LVC-END %[1]s rc=$?\"\n", c.linux.port, c.linux.linuxPeerArgs())
	}
	guests := []rig.Guest{
		{Name: "vbg", ELF: elf, Memory: benchMemory, Cmdline: vchanCmdline(true, gs)},
		{Name: "vbl", Linux: true, Memory: benchMemory, Init: linit.String()},
	}
	// the Gozen domU's sessions, then the Linux domU's against the same
	// dom0 client (vchanScript's peer commands name the domain $g)
	var sh strings.Builder
	sh.WriteString(vchanScript("vbg", true, gs))
	sh.WriteString(`gozen-guest vbl /gozen/vbl.cfg 900 &
gp=$!
g=$(wait-for domid vbl 90); echo "GOZEN-VC-DOMID vbl $g"
`)
	for _, s := range ls {
		fmt.Fprintf(&sh, "echo \"GOZEN-VC-BEGIN %s\"; %s; echo \"GOZEN-VC-END %s rc=$?\"\n", s.port, s.peerCmd(true), s.port)
	}
	sh.WriteString("wait $gp\n")
	for i := 0; i < b.N; i++ {
		run := bootBench(b, guests, sh.String(), rig.Options{Timeout: 30 * time.Minute})
		checkWaits(b, run)
		g, l := run.Guests["vbg"], run.Guests["vbl"]
		if g == nil || l == nil {
			b.Fatalf("guests missing: Gozen %v, Linux %v\n%s", g != nil, l != nil, run.SerialText())
		}
		if l.Reason != rig.ReasonPoweroff {
			b.Fatalf("the Linux domU ended with %s:\n%s", l.Reason, l.Text())
		}
		// checkSessions' PASS lines would push the figures out of the
		// benchmark's log, which go test truncates
		rates := checkSessions(quietTB{b}, run, g, true, gs)
		if b.Failed() {
			b.FailNow()
		}
		gzs, lxs := map[string][]float64{}, map[string][]float64{}
		var order []string
		for _, c := range cases {
			key := c.gozen.port + "/recv"
			if c.toDom0 {
				key = c.gozen.port + "/send"
			}
			gz := rates[key]
			lx, err := linuxRate(run, l, c)
			if err != nil {
				b.Fatalf("Linux domU, %s: %v\n%s", c.what, err, l.Text())
			}
			if gz <= 0 {
				b.Fatalf("Gozen domU, %s: no rate", c.what)
			}
			if gzs[c.what] == nil {
				order = append(order, c.what)
			}
			gzs[c.what], lxs[c.what] = append(gzs[c.what], gz), append(lxs[c.what], lx)
		}
		for _, what := range order {
			gz, lx := median(gzs[what]), median(lxs[what])
			b.ReportMetric(gz, "gozen-MB/s("+what+")")
			b.ReportMetric(lx, "linux-MB/s("+what+")")
			b.ReportMetric(gz/lx, "gozen/linux("+what+")")
			b.Logf("%s, 64 MiB in 64 KiB writes over 64 KiB rings, %d MiB domUs, median of %d: Gozen domU %.1f MB/s %.1f, "+
				"Linux domU (libxenvchan) %.1f MB/s %.1f, gozen/linux %.2f", what, benchMemory, vchanBenchRounds,
				gz, gzs[what], lx, lxs[what], gz/lx)
		}
	}
}

// quietTB is a testing.TB whose Logf says nothing: failures still fail.
type quietTB struct{ testing.TB }

// Logf drops the line.
func (quietTB) Logf(string, ...any) {}
