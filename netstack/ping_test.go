package netstack_test

import (
	"context"
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/gozen-dev/gozen/netstack"
	"golang.org/x/net/nettest"
	"gvisor.dev/gvisor/pkg/tcpip"
	"gvisor.dev/gvisor/pkg/tcpip/checksum"
	"gvisor.dev/gvisor/pkg/tcpip/header"
)

// frame builds an Ethernet+IPv4+UDP frame from src to dst with payload,
// with a correct checksum, or a pseudo-header-only one when blank.
func udpFrame(srcMAC, dstMAC net.HardwareAddr, src, dst netip.Addr, sport, dport uint16, payload []byte, blank bool) []byte {
	b := make([]byte, header.EthernetMinimumSize+header.IPv4MinimumSize+header.UDPMinimumSize+len(payload))
	header.Ethernet(b).Encode(&header.EthernetFields{SrcAddr: tcpip.LinkAddress(srcMAC), DstAddr: tcpip.LinkAddress(dstMAC), Type: header.IPv4ProtocolNumber})
	ip := header.IPv4(b[header.EthernetMinimumSize:])
	ip.Encode(&header.IPv4Fields{
		TotalLength: uint16(len(ip)), TTL: 64, Protocol: uint8(header.UDPProtocolNumber),
		SrcAddr: tcpip.AddrFrom4(src.As4()), DstAddr: tcpip.AddrFrom4(dst.As4()),
	})
	ip.SetChecksum(^ip.CalculateChecksum())
	u := header.UDP(ip[header.IPv4MinimumSize:])
	u.Encode(&header.UDPFields{SrcPort: sport, DstPort: dport, Length: uint16(len(u))})
	copy(u[header.UDPMinimumSize:], payload)
	xsum := header.PseudoHeaderChecksum(header.UDPProtocolNumber, ip.SourceAddress(), ip.DestinationAddress(), uint16(len(u)))
	if blank {
		u.SetChecksum(xsum)
	} else {
		u.SetChecksum(^checksum.Checksum(u, xsum))
	}
	return b
}

// TestRXChecksumFlags injects UDP frames into b's NIC: a good one, a
// checksum-blank one flagged as such (netback's dom0-local frames), the
// same unflagged (dropped: its checksum is only the pseudo-header sum), a
// corrupted one (dropped) and a corrupted one flagged data_validated
// (accepted: the flag says it was checked).
func TestRXChecksumFlags(t *testing.T) {
	r := newRig(t, offNone)
	ctx := context.Background()
	pc, err := r.b.Socket(ctx, "udp", syscall.AF_INET, syscall.SOCK_DGRAM, &net.UDPAddr{Port: 9000}, nil)
	if err != nil {
		t.Fatal(err)
	}
	conn := pc.(net.PacketConn)
	defer conn.Close()
	send := func(data []byte, flags netstack.Flags) {
		if err := r.nicB.Inject(ctx, netstack.Frame{Data: [][]byte{data[:20], data[20:]}, Flags: flags}); err != nil {
			t.Fatal(err)
		}
	}
	mk := func(s string, blank bool) []byte {
		return udpFrame(r.nicA.MAC(), r.nicB.MAC(), ipA, ipB, 1234, 9000, []byte(s), blank)
	}
	corrupt := func(b []byte) []byte { b[len(b)-1] ^= 0xff; return b }
	send(mk("good", false), 0)
	send(mk("blank", true), netstack.ChecksumBlank|netstack.DataValidated)
	send(mk("blank-unflagged", true), 0)
	send(corrupt(mk("corrupt", false)), 0)
	send(corrupt(mk("validated", false)), netstack.DataValidated)
	send(mk("end", false), 0)
	var got []string
	buf := make([]byte, 100)
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	for len(got) == 0 || got[len(got)-1] != "end" {
		n, _, err := conn.ReadFrom(buf)
		if err != nil {
			t.Fatalf("after %q: %v", got, err)
		}
		got = append(got, string(buf[:n]))
	}
	want := []string{"good", "blank", string(corrupt([]byte("validated"))), "end"}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] || got[2] != want[2] || got[3] != want[3] {
		t.Errorf("received %q, want %q", got, want)
	}
	if s := r.b.Stats().Link; s.RXBadChecksum != 2 || s.RXTrusted != 2 {
		t.Errorf("link stats %+v, want 2 bad checksums and 2 trusted frames", s)
	}
}

func TestRXMalformedFrames(t *testing.T) {
	r := newRig(t, offNone)
	ctx := context.Background()
	good := udpFrame(r.nicA.MAC(), r.nicB.MAC(), ipA, ipB, 1, 2, []byte("x"), false)
	other := udpFrame(r.nicA.MAC(), net.HardwareAddr{2, 0, 0, 0, 0, 9}, ipA, ipB, 1, 2, []byte("x"), false)
	short := append([]byte(nil), good[:30]...)
	badLen := append([]byte(nil), good...)
	badLen[header.EthernetMinimumSize+2] = 0xff // IPv4 total length beyond the frame
	for _, f := range [][]byte{nil, good[:5], short, badLen, other, make([]byte, 70000)} {
		r.nicB.Inject(ctx, netstack.Frame{Data: [][]byte{f}})
	}
	// A ping after the garbage still works, so reception went on.
	ping(t, r.a, ipB)
	s := r.b.Stats().Link
	if s.RXMalformed < 4 || s.RXOtherHost != 1 {
		t.Errorf("link stats %+v, want >= 4 malformed and 1 other-host frames", s)
	}
}

// ping sends ICMP echo requests from st to dst through a gVisor ping
// endpoint until one is answered.
func ping(t *testing.T, st *netstack.Stack, dst netip.Addr) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := st.Ping(ctx, dst); err != nil {
		t.Fatal(err)
	}
}

func TestPing(t *testing.T) {
	r := newRig(t, offCsum)
	ping(t, r.b, ipA)
	ping(t, r.a, ipB)
	if s := r.a.Stats(); s.ICMPEchoRepliesSent == 0 {
		t.Errorf("a sent no echo replies: %+v", s)
	}
}

func TestNettestConn(t *testing.T) {
	for _, tc := range offloadCases {
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, tc.off)
			l := listen(t, r.a, 0)
			port := l.Addr().(*net.TCPAddr).Port
			nettest.TestConn(t, func() (c1, c2 net.Conn, stop func(), err error) {
				done := make(chan net.Conn, 1)
				go func() {
					c, err := l.Accept()
					if err != nil {
						done <- nil
						return
					}
					done <- c
				}()
				c1 = dial(t, r.b, tcpAddr(ipA, port))
				c2 = <-done
				return c1, c2, func() { c1.Close(); c2.Close() }, nil
			})
		})
	}
}
