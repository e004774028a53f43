package qemu

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gozen-dev/gozen/qemu/rig"
)

// vsess is one vchan session between qemu/guests/vchansession in a Gozen
// domU and the dom0 libxenvchan peer (qemu/vchanpeer), described once and
// turned into both the guest's arguments and the dom0 command.
type vsess struct {
	port        string
	read, write string // the server's minimum ring sizes (whichever end serves)
	send, recv  string // what Gozen sends and receives (the peer mirrors it)
	seed, rseed int    // Gozen's stream seeds (the peer mirrors them)
	nocheck     bool
	close       string // Gozen: "first" (the peer waits for EOF) or "eof"
	expect      string // Gozen: "", "protocol" or "error" (hostile peer)
	hostile     string // the peer's -hostile mode
	what        string // for the log
}

// guestArgs are vchansession's flags for the session (every flag given, so
// nothing carries over from the session before).
func (s vsess) guestArgs(server bool) string {
	a := fmt.Sprintf("-port %s -send %s -recv %s -seed %d -rseed %d -close %s -expect=%s -nocheck=%v",
		s.port, s.send, s.recv, s.seed, s.rseed, s.close, s.expect, s.nocheck)
	if server {
		a += fmt.Sprintf(" -read %s -write %s", s.read, s.write)
	}
	return a
}

// peerCmd is the dom0 vchanpeer command line, with $g the guest's domid.
func (s vsess) peerCmd(gozenServer bool) string {
	var c string
	if gozenServer {
		c = fmt.Sprintf("/gozen/vchanpeer client $g /local/domain/$g/data/vchan/0/%s", s.port)
	} else {
		c = fmt.Sprintf("/gozen/vchanpeer server $g /local/domain/0/data/vchan/$g/%s %s %s", s.port, s.read, s.write)
	}
	c += fmt.Sprintf(" -send %s -recv %s -seed %d -rseed %d -timeout 60", s.recv, s.send, s.rseed, s.seed)
	if s.nocheck {
		c += " -nocheck"
	}
	if s.hostile != "" {
		c += " -hostile " + s.hostile
	} else if s.close == "first" {
		c += " -waiteof"
	}
	return c
}

// vchanScript runs a guest's sessions: the guest starts in the background,
// and once it is ready dom0 runs one peer per session, each between
// GOZEN-VC-BEGIN and GOZEN-VC-END markers.
func vchanScript(guest string, gozenServer bool, sessions []vsess) string {
	var b strings.Builder
	fmt.Fprintf(&b, `gozen-guest %[1]s /gozen/%[1]s.cfg 1500 &
gp=$!
wait-for log %[1]s 'vchan-echo: ready' 90
g=$(wait-for domid %[1]s 10); echo "GOZEN-VC-DOMID %[1]s $g"
`, guest)
	for _, s := range sessions {
		fmt.Fprintf(&b, "echo \"GOZEN-VC-BEGIN %s\"; %s; echo \"GOZEN-VC-END %s rc=$?\"\n", s.port, s.peerCmd(gozenServer), s.port)
	}
	b.WriteString("wait $gp\n")
	return b.String()
}

func vchanCmdline(server bool, sessions []vsess) string {
	role := "-dial"
	if server {
		role = "-listen"
	}
	var parts []string
	for i, s := range sessions {
		a := s.guestArgs(server)
		if i == 0 {
			a = role + " -peer 0 " + a
		}
		parts = append(parts, a)
	}
	return strings.Join(parts, " -- ")
}

var (
	vchanGuestLine = regexp.MustCompile(`^VCHAN (.*)$`)
	vcBegin        = regexp.MustCompile(`^GOZEN-VC-BEGIN (\S+)`)
	vcEnd          = regexp.MustCompile(`^GOZEN-VC-END (\S+) rc=(\d+)`)
)

// guestFields returns the fields of the guest's VCHAN lines of one
// session that have all the given keys.
func guestFields(g *rig.GuestResult, session int, keys ...string) []map[string]string {
	var out []map[string]string
next:
	for _, l := range g.Lines {
		m := vchanGuestLine.FindStringSubmatch(l.Text)
		if m == nil {
			continue
		}
		f := peerFields(m[1])
		if f["session"] != strconv.Itoa(session) {
			continue
		}
		for _, k := range keys {
			if _, ok := f[k]; !ok {
				continue next
			}
		}
		out = append(out, f)
	}
	return out
}

// peerSession returns the VCHANPEER lines dom0 printed for one session
// and the peer's exit status (-1 if it never ended).
func peerSession(run *rig.Run, port string) ([]map[string]string, int) {
	var out []map[string]string
	in, rc := false, -1
	for _, l := range run.Serial {
		if m := vcBegin.FindStringSubmatch(l.Text); m != nil {
			in = m[1] == port
			continue
		}
		if m := vcEnd.FindStringSubmatch(l.Text); m != nil && m[1] == port {
			rc, _ = strconv.Atoi(m[2])
			in = false
			continue
		}
		if m := vchanPeerLine.FindStringSubmatch(l.Text); m != nil && in {
			out = append(out, peerFields(m[1]))
		}
	}
	return out, rc
}

func firstWith(fs []map[string]string, key string) map[string]string {
	for _, f := range fs {
		if _, ok := f[key]; ok {
			return f
		}
	}
	return nil
}

// checkSessions checks every session of a guest against its dom0 peer and
// returns the receivers' rates by session port.
func checkSessions(t testing.TB, run *rig.Run, g *rig.GuestResult, gozenServer bool, sessions []vsess) map[string]float64 {
	t.Helper()
	rates := map[string]float64{}
	role := "client"
	if gozenServer {
		role = "server"
	}
	for i, s := range sessions {
		n := i + 1
		name := fmt.Sprintf("%s (Gozen %s, %s)", s.port, role, s.what)
		peer, rc := peerSession(run, s.port)
		passed := guestFields(g, n, "PASS")
		td := firstWith(guestFields(g, n, "teardown"), "teardown")
		if len(passed) == 0 {
			var lines []string
			for _, l := range g.Lines {
				if strings.Contains(l.Text, fmt.Sprintf("session=%d ", n)) {
					lines = append(lines, l.Text)
				}
			}
			t.Errorf("FAIL %s: the guest did not pass:\n%s\npeer (rc %d): %v", name, strings.Join(lines, "\n"), rc, peer)
			continue
		}
		if rc != 0 {
			t.Errorf("FAIL %s: vchanpeer exited %d: %v", name, rc, peer)
			continue
		}
		if s.hostile != "" {
			h := firstWith(peer, "hostile")
			ms, _ := strconv.ParseFloat(h["ms"], 64)
			gerr := ""
			for _, l := range g.Lines {
				if strings.Contains(l.Text, fmt.Sprintf("session=%d error=", n)) {
					gerr = l.Text
					break
				}
			}
			switch {
			case h == nil || h["detected"] != "1":
				t.Errorf("FAIL %s: the peer did not see Gozen give up: %v", name, peer)
			case ms >= 1000:
				t.Errorf("FAIL %s: Gozen took %.0f ms to report the broken page", name, ms)
			default:
				t.Logf("PASS %s: libxenvchan peer corrupted the page (%s); Gozen marked itself closed %.1f ms later "+
					"and reported: %s; teardown: %s", name, s.hostile, ms, gerr, fmtTeardown(td))
			}
			continue
		}
		grecv := firstWith(guestFields(g, n, "recv"), "recv")
		gsent := firstWith(guestFields(g, n, "sent"), "sent")
		precv, psent := firstWith(peer, "recv"), firstWith(peer, "sent")
		conn := firstWith(peer, "read_ring")
		bad := false
		if s.recv != "0" {
			if grecv == nil || psent == nil || grecv["ok"] != "1" || (!s.nocheck && grecv["crc"] != psent["crc"]) {
				t.Errorf("FAIL %s: dom0->Gozen: Gozen %v, peer %v", name, grecv, psent)
				bad = true
			} else {
				rates[s.port+"/recv"], _ = strconv.ParseFloat(grecv["MBps"], 64)
			}
		}
		if s.send != "0" {
			if gsent == nil || precv == nil || precv["ok"] != "1" || (!s.nocheck && gsent["crc"] != precv["crc"]) {
				t.Errorf("FAIL %s: Gozen->dom0: Gozen %v, peer %v", name, gsent, precv)
				bad = true
			} else {
				rates[s.port+"/send"], _ = strconv.ParseFloat(precv["MBps"], 64)
			}
		}
		eofLine := firstWith(peer, "eof")
		if s.close == "first" && (eofLine == nil || eofLine["eof"] != "1") {
			t.Errorf("FAIL %s: Gozen closed first but the peer did not see EOF: %v", name, peer)
			bad = true
		}
		if td == nil || td["eof"] == "0" {
			t.Errorf("FAIL %s: teardown %v", name, td)
			bad = true
		}
		if bad {
			continue
		}
		t.Logf("PASS %s: rings %s/%s (peer read/write), Gozen sent %s crc %s, received %s crc %s; closing: %s; teardown %s",
			name, conn["read_ring"], conn["write_ring"], s.send, gsent["crc"], s.recv, grecv["crc"],
			map[string]string{"first": "Gozen first, peer saw EOF", "eof": "peer first, Gozen saw EOF"}[s.close], fmtTeardown(td))
		if gozenServer && s.close == "first" {
			if td["refused"] == "0" {
				t.Logf("NOTE %s: no revocation was refused: dom0 had already unmapped when Gozen revoked", name)
			} else {
				t.Logf("PASS %s: gnttab Unshare was refused %s times while dom0 still mapped the pages, then succeeded after "+
					"it unmapped (%s ms)", name, td["refused"], td["wait_ms"])
			}
		}
	}
	for _, p := range caseProblems("VCHAN", sessionCases(len(sessions)), guestLines(g), g.Reason) {
		t.Errorf("FAIL guest %s: %s", g.Name, p)
	}
	if d, ok := g.Find("VCHAN DONE"); ok {
		t.Logf("guest %s: %s", g.Name, d.Text)
	}
	return rates
}

// sessionCases are the case names of a vchansession guest running n
// sessions: its PASS and FAIL lines name a session as session=N.
func sessionCases(n int) []string {
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("session=%d", i+1)
	}
	return names
}

func fmtTeardown(td map[string]string) string {
	return fmt.Sprintf("revocations refused %s, %s ms, xenstore nodes gone %s, leftover grants %s shares %s mappings %s ports %s",
		td["refused"], td["wait_ms"], td["xs_gone"], td["grants"], td["shares"], td["mappings"], td["ports"])
}

// TestTierBVchanDom0 is the interop test of Gozen's vchan with Xen's real
// libxenvchan (qemu/vchanpeer in dom0), both directions: a Gozen server
// with dom0 clients and a Gozen client of dom0 servers, 64 MiB each way at
// once with CRC-32 checks over one-page and 64 KiB rings (4 MiB over the
// in-page 1 and 2 KiB rings, see GOZEN_VCHAN_INPAGE), both closing orders; hostile dom0 peers that corrupt indexes, live
// states, ring orders and grant references. Throughput against a Linux
// domU running libxenvchan is BenchmarkVchan's.
func TestTierBVchanDom0(t *testing.T) {
	needGuest(t, needPeer)
	elf := buildGuest(t, "./qemu/guests/vchansession")
	if _, err := rig.BuildVchanPeer(); err != nil {
		t.Fatalf("FAIL building the vchan peer: %v", err)
	}
	// In-page rings cost an event round trip per KiB: about 1 ms between
	// two vCPUs of the emulated machine on a quiet host (64 MiB each way
	// then takes 2-7 minutes), 20 ms when other QEMUs compete for the
	// host's cores. These sessions move 4 MiB (4096 trips round each ring)
	// unless GOZEN_VCHAN_INPAGE says otherwise (e.g. 64M).
	inPage := "4M"
	if v := os.Getenv("GOZEN_VCHAN_INPAGE"); v != "" {
		inPage = v
	}
	srv := []vsess{
		{port: "s1", read: "1K", write: "2K", send: inPage, recv: inPage, seed: 101, rseed: 102, close: "first", what: "in-page rings, duplex " + inPage + " each way"},
		{port: "s2", read: "4K", write: "4K", send: "64M", recv: "64M", seed: 103, rseed: 104, close: "eof", what: "1-page rings, duplex 64M each way"},
		{port: "s3", read: "64K", write: "64K", send: "64M", recv: "64M", seed: 105, rseed: 106, close: "first", what: "64 KiB rings, duplex 64M each way"},
		{port: "h1", read: "4K", write: "4K", send: "0", recv: "64M", seed: 7, rseed: 7, close: "first", expect: "protocol", hostile: "prod", what: "hostile producer index"},
		{port: "h2", read: "4K", write: "4K", send: "64M", recv: "0", seed: 7, rseed: 7, close: "first", expect: "protocol", hostile: "cons", what: "hostile consumer index"},
		{port: "h3", read: "1K", write: "2K", send: "0", recv: "64M", seed: 7, rseed: 7, close: "first", expect: "protocol", hostile: "live", what: "hostile live state"},
	}
	cli := []vsess{
		{port: "c1", read: "2K", write: "1K", send: inPage, recv: inPage, seed: 201, rseed: 202, close: "first", what: "in-page rings, duplex " + inPage + " each way"},
		{port: "c2", read: "4K", write: "4K", send: "64M", recv: "64M", seed: 203, rseed: 204, close: "eof", what: "1-page rings, duplex 64M each way"},
		{port: "c3", read: "64K", write: "64K", send: "64M", recv: "64M", seed: 205, rseed: 206, close: "first", what: "64 KiB rings, duplex 64M each way"},
		{port: "h4", read: "4K", write: "4K", send: "0", recv: "0", close: "first", expect: "protocol", hostile: "order", what: "hostile ring order"},
		{port: "h5", read: "64K", write: "4K", send: "0", recv: "0", close: "first", expect: "error", hostile: "grant", what: "hostile grant reference"},
		{port: "h6", read: "4K", write: "64K", send: "0", recv: "64M", seed: 7, rseed: 7, close: "first", expect: "protocol", hostile: "prod", what: "hostile producer index"},
	}
	srv, cli = pickSessions(srv), pickSessions(cli)
	var guests []rig.Guest
	var script string
	if len(srv) > 0 {
		guests = append(guests, rig.Guest{Name: "vsrv", ELF: elf, Memory: 64, Cmdline: vchanCmdline(true, srv)})
		script += vchanScript("vsrv", true, srv)
	}
	if len(cli) > 0 {
		guests = append(guests, rig.Guest{Name: "vcli", ELF: elf, Memory: 64, Cmdline: vchanCmdline(false, cli)})
		script += vchanScript("vcli", false, cli)
	}
	run, err := rig.BootDomUs(context.Background(), guests, rig.Script(script), rig.Options{Timeout: 30 * time.Minute, Stream: liveLog(t)})
	saveSerial(t, run)
	if err != nil {
		t.Fatalf("FAIL tier B run: %v", err)
	}
	checkWaits(t, run)
	if strings.Contains(run.SerialText(), "VCHANPEER error=unavailable") {
		t.Fatalf("FAIL the peer was not built")
	}
	t.Run("gozen-server", func(t *testing.T) {
		g := run.Guests["vsrv"]
		if len(srv) == 0 {
			t.Skip("no sessions selected")
		}
		if g == nil {
			t.Fatal("FAIL guest vsrv never started")
		}
		checkSessions(t, run, g, true, srv)
	})
	t.Run("gozen-client", func(t *testing.T) {
		g := run.Guests["vcli"]
		if len(cli) == 0 {
			t.Skip("no sessions selected")
		}
		if g == nil {
			t.Fatal("FAIL guest vcli never started")
		}
		checkSessions(t, run, g, false, cli)
	})
}

// TestTierBVchanDomUs runs two Gozen domUs that talk over vchan: a server
// (told its client's domid through xenstore by dom0) and a client, 64 MiB
// each way at once over 64 KiB rings with the server closing first, 4 MiB
// each way over in-page rings with the client closing first, and a
// one-way throughput run.
func TestTierBVchanDomUs(t *testing.T) {
	elf := buildGuest(t, "./qemu/guests/vchansession")
	srvArgs := "-listen -peer xs -port gz1 -read 64K -write 64K -send 64M -recv 64M -seed 301 -rseed 302 -close first" +
		" -- -port gz2 -read 1K -write 2K -send 4M -recv 4M -seed 303 -rseed 304 -close eof" +
		" -- -port gz3 -read 64K -write 64K -send 64M -recv 0 -nocheck -close first"
	cliArgs := "-dial -peer @S@ -port gz1 -send 64M -recv 64M -seed 302 -rseed 301 -close eof" +
		" -- -port gz2 -send 4M -recv 4M -seed 304 -rseed 303 -close first" +
		" -- -port gz3 -send 0 -recv 64M -nocheck -close eof"
	guests := []rig.Guest{
		{Name: "vga", ELF: elf, Memory: 64, Cmdline: srvArgs},
		{Name: "vgb", ELF: elf, Memory: 64, Cmdline: cliArgs},
	}
	script := rig.Script(`
gozen-guest vga /gozen/vga.cfg 600 &
sp=$!
wait-for log vga 'vchan-echo: ready' 90
s=$(wait-for domid vga 10)
sed -i "s/@S@/$s/" /gozen/vgb.cfg
gozen-guest vgb /gozen/vgb.cfg 600 &
cp=$!
c=$(wait-for domid vgb 90)
echo "GOZEN-VC-DOMUS server=$s client=$c"
xenstore-write /local/domain/$s/data/vchan-peer $c
( while kill -0 $cp 2>/dev/null; do
	echo "GOZEN-VC-CPU t=$(cut -d' ' -f1 /proc/uptime) $(xl list | awk 'NR>1 {printf "%s=%s ", $1, $6}')"; sleep 5
done ) &
wait $cp
wait $sp
`)
	run, err := rig.BootDomUs(context.Background(), guests, script, rig.Options{Timeout: 12 * time.Minute, Stream: liveLog(t)})
	saveSerial(t, run)
	if err != nil {
		t.Fatalf("FAIL tier B run: %v", err)
	}
	checkWaits(t, run)
	s, c := run.Guests["vga"], run.Guests["vgb"]
	if s == nil || c == nil {
		t.Fatalf("FAIL guests missing: server %v client %v", s != nil, c != nil)
	}
	for n, what := range []string{"64 KiB rings, 64 MiB each way at once, server closes first",
		"in-page rings, 4 MiB each way at once, client closes first", "one way, transport only"} {
		sess := n + 1
		sp, cp := guestFields(s, sess, "PASS"), guestFields(c, sess, "PASS")
		if len(sp) == 0 || len(cp) == 0 {
			t.Errorf("FAIL session %d (%s):\nserver:\n%s\nclient:\n%s", sess, what, s.Text(), c.Text())
			continue
		}
		ssent, crecv := firstWith(guestFields(s, sess, "sent"), "sent"), firstWith(guestFields(c, sess, "recv"), "recv")
		csent, srecv := firstWith(guestFields(c, sess, "sent"), "sent"), firstWith(guestFields(s, sess, "recv"), "recv")
		std, ctd := firstWith(guestFields(s, sess, "teardown"), "teardown"), firstWith(guestFields(c, sess, "teardown"), "teardown")
		if crecv["crc"] != ssent["crc"] || (csent != nil && srecv["crc"] != csent["crc"]) {
			t.Errorf("FAIL session %d: checksums differ: server sent %v, client got %v; client sent %v, server got %v",
				sess, ssent, crecv, csent, srecv)
			continue
		}
		c2s := "nothing"
		if srecv != nil {
			c2s = fmt.Sprintf("%s bytes crc %s at %s MB/s", srecv["recv"], srecv["crc"], srecv["MBps"])
		}
		t.Logf("PASS Gozen<->Gozen session %d (%s): server->client %s bytes crc %s at %s MB/s; client->server %s; "+
			"EOF seen by the side closing last (server eof=%s, client eof=%s); server teardown: %s; client teardown: %s",
			sess, what, crecv["recv"], crecv["crc"], crecv["MBps"], c2s, std["eof"], ctd["eof"], fmtTeardown(std), fmtTeardown(ctd))
		if std["eof"] == "0" || ctd["eof"] == "0" {
			t.Errorf("FAIL session %d: the side closing last did not see EOF", sess)
		}
	}
	for _, g := range []*rig.GuestResult{s, c} {
		for _, p := range caseProblems("VCHAN", sessionCases(3), guestLines(g), g.Reason) {
			t.Errorf("FAIL guest %s: %s", g.Name, p)
		}
	}
}

// liveLog streams the serial console to build/<test>.live.log while the
// rig runs, when GOZEN_LIVE_LOG is set (for watching a long run).
func liveLog(t *testing.T) io.Writer {
	if os.Getenv("GOZEN_LIVE_LOG") == "" {
		return nil
	}
	name := filepath.Join("..", "build", strings.ReplaceAll(t.Name(), "/", "_")+".live.log")
	f, err := os.Create(name)
	if err != nil {
		return nil
	}
	t.Cleanup(func() { f.Close() })
	return f
}

// pickSessions keeps the sessions named in GOZEN_VCHAN_SESSIONS (ports,
// comma-separated; default all), for rerunning a few while debugging.
func pickSessions(all []vsess) []vsess {
	sel := os.Getenv("GOZEN_VCHAN_SESSIONS")
	if sel == "" {
		return all
	}
	var out []vsess
	for _, s := range all {
		for _, p := range strings.Split(sel, ",") {
			if p == s.port {
				out = append(out, s)
			}
		}
	}
	return out
}
