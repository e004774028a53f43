//go:build linux

package main

import (
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/gozen-dev/gozen/drivers/blkback"
)

func TestParseVBD(t *testing.T) {
	dp := blkback.DefaultPollMax
	for _, tc := range []struct {
		args string
		want vbdConfig // compared when err is ""
		err  string
	}{
		{"-domid 3 -file a.img", vbdConfig{Dom: 3, File: "a.img", ID: 51712, Vdev: "xvda", Indirect: 32, RingOrder: 2, Discard: true, Poll: dp, BackendClass: "vbd"}, ""},
		{"-domid 3 -file a.img -vdev xvdc -ro -persistent -indirect 0 -ring-order 4", vbdConfig{Dom: 3, File: "a.img", ID: 51744, Vdev: "xvdc", ReadOnly: true, Persistent: true, RingOrder: 4, Poll: dp, BackendClass: "vbd"}, ""},
		{"-domid 3 -file a.img -id 51728 -discard=false", vbdConfig{Dom: 3, File: "a.img", ID: 51728, Vdev: "xvdb", Indirect: 32, RingOrder: 2, Poll: dp, BackendClass: "vbd"}, ""},
		{"-domid 3 -file a.img -id 51728 -vdev xvdb -backend-class gozen-vbd", vbdConfig{Dom: 3, File: "a.img", ID: 51728, Vdev: "xvdb", Indirect: 32, RingOrder: 2, Discard: true, Poll: dp, BackendClass: "gozen-vbd"}, ""},
		{"-domid 3 -file a.img -id 768", vbdConfig{Dom: 3, File: "a.img", ID: 768, Vdev: "", Indirect: 32, RingOrder: 2, Discard: true, Poll: dp, BackendClass: "vbd"}, ""},
		{"-domid 3 -file a.img -queues 4", vbdConfig{Dom: 3, File: "a.img", ID: 51712, Vdev: "xvda", Indirect: 32, RingOrder: 2, Discard: true, Queues: 4, Poll: dp, BackendClass: "vbd"}, ""},
		{"-domid 3 -file a.img -poll 5ms", vbdConfig{Dom: 3, File: "a.img", ID: 51712, Vdev: "xvda", Indirect: 32, RingOrder: 2, Discard: true, Poll: 5 * time.Millisecond, BackendClass: "vbd"}, ""},
		{"-domid 3 -file a.img -poll 0", vbdConfig{Dom: 3, File: "a.img", ID: 51712, Vdev: "xvda", Indirect: 32, RingOrder: 2, Discard: true, BackendClass: "vbd"}, ""},
		{"-domid 3 -file a.img -poll -1ms", vbdConfig{}, "-poll -1ms"},
		{"-domid 3 -file a.img -poll 2s", vbdConfig{}, "-poll 2s"},
		{"-domid 3 -file a.img -poll 5", vbdConfig{}, "invalid value"},
		{"-file a.img", vbdConfig{}, "-domid is required"},
		{"-domid 0 -file a.img", vbdConfig{}, "not a guest domain"},
		{"-domid 32752 -file a.img", vbdConfig{}, "not a guest domain"},
		{"-domid 3", vbdConfig{}, "-file is required"},
		{"-domid 3 -file a.img -id 51712 -vdev xvdb", vbdConfig{}, "is not -vdev"},
		{"-domid 3 -file a.img -vdev sda", vbdConfig{}, "not an xvd name"},
		{"-domid 3 -file a.img -id 0", vbdConfig{}, "out of range"},
		{"-domid 3 -file a.img -indirect 9999", vbdConfig{}, "-indirect 9999"},
		{"-domid 3 -file a.img -ring-order 5", vbdConfig{}, "-ring-order 5"},
		{"-domid 3 -file a.img -queues 65", vbdConfig{}, "-queues 65"},
		{"-domid 3 -file a.img -queues -1", vbdConfig{}, "-queues -1"},
		{"-domid 3 -file a.img -backend-class a/b", vbdConfig{}, "not a path element"},
		{"-domid 3 -file a.img extra", vbdConfig{}, "unexpected arguments"},
		{"-domid x -file a.img", vbdConfig{}, "invalid value"},
	} {
		got, err := parseVBD(strings.Fields(tc.args), io.Discard)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) || !errors.Is(err, errUsage) {
				t.Errorf("%q: %v, want a usage error with %q", tc.args, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%q: %+v, %v\nwant %+v", tc.args, got, err, tc.want)
		}
	}
}

// TestPollMax: -poll 0 turns blkback's polling off (a negative PollMax;
// zero would be blkback's default).
func TestPollMax(t *testing.T) {
	for _, tc := range []struct{ flag, want time.Duration }{
		{0, -1},
		{time.Millisecond, time.Millisecond},
		{blkback.DefaultPollMax, blkback.DefaultPollMax},
	} {
		if got := pollMax(tc.flag); got != tc.want {
			t.Errorf("pollMax(%v) = %v, want %v", tc.flag, got, tc.want)
		}
	}
}

func TestParseVIF(t *testing.T) {
	for _, tc := range []struct {
		args                    string
		mac, tap, bridge, class string
		id                      uint32
		queues                  int
		err                     string
	}{
		{args: "-domid 4 -mac 00:16:3e:00:00:04", mac: "00:16:3e:00:00:04", tap: "gzvif4.0", class: "vif"},
		{args: "-domid 4 -mac 00:16:3e:00:00:04 -queues 4", mac: "00:16:3e:00:00:04", tap: "gzvif4.0", class: "vif", queues: 4},
		{args: "-domid 4 -mac 00:16:3E:00:00:04 -id 2 -tap t0 -bridge xenbr0", mac: "00:16:3e:00:00:04", tap: "t0", bridge: "xenbr0", id: 2, class: "vif"},
		{args: "-domid 4 -mac 00:16:3e:00:00:04 -backend-class gozen-vif", mac: "00:16:3e:00:00:04", tap: "gzvif4.0", class: "gozen-vif"},
		{args: "-mac 00:16:3e:00:00:04", err: "-domid is required"},
		{args: "-domid 4 -mac 00:16:3e:00:00:04 -queues 65", err: "-queues 65"},
		{args: "-domid 4", err: "-mac is required"},
		{args: "-domid 4 -mac nonsense", err: "not an Ethernet address"},
		{args: "-domid 4 -mac 00:16:3e:00:00:00:00:04", err: "not an Ethernet address"},
		{args: "-domid 4 -mac 01:00:5e:00:00:01", err: "multicast"},
		{args: "-domid 4 -mac 00:16:3e:00:00:04 -id -1", err: "out of range"},
		{args: "-domid 4 -mac 00:16:3e:00:00:04 -tap a-very-long-tap-name", err: "not an interface name"},
		{args: "-domid 4 -mac 00:16:3e:00:00:04 -bridge a/b", err: "not an interface name"},
	} {
		got, err := parseVIF(strings.Fields(tc.args), io.Discard)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) || !errors.Is(err, errUsage) {
				t.Errorf("%q: %v, want a usage error with %q", tc.args, err, tc.err)
			}
			continue
		}
		if err != nil || got.MAC.String() != tc.mac || got.Tap != tc.tap || got.Bridge != tc.bridge || got.ID != tc.id || got.BackendClass != tc.class || got.Dom != 4 || got.Queues != tc.queues {
			t.Errorf("%q: %+v, %v", tc.args, got, err)
		}
	}
}

func TestVdev(t *testing.T) {
	for _, tc := range []struct {
		name string
		id   uint32
	}{
		{"xvda", 51712}, {"xvdb", 51728}, {"xvdc", 51744}, {"xvda1", 51713}, {"xvdp", 51952}, {"xvdp15", 51967},
		{"xvdq", 1<<28 | 16<<8}, {"xvdz", 1<<28 | 25<<8}, {"xvdaa", 1<<28 | 26<<8}, {"xvda16", 1<<28 | 16},
		{"xvdzz", 1<<28 | 701<<8}, {"xvdaaa", 1<<28 | 702<<8},
	} {
		got, err := parseVdev(tc.name)
		if err != nil || got != tc.id {
			t.Errorf("parseVdev(%q) = %d, %v; want %d", tc.name, got, err, tc.id)
		}
		if back := vdevName(tc.id); back != tc.name {
			t.Errorf("vdevName(%d) = %q, want %q", tc.id, back, tc.name)
		}
	}
	for _, bad := range []string{"", "xvd", "sda", "xvdA", "xvda0", "xvda01", "xvda256", "xvdaaaa", "xvda1x"} {
		if _, err := parseVdev(bad); !errors.Is(err, errUsage) {
			t.Errorf("parseVdev(%q): %v, want a usage error", bad, err)
		}
	}
	for _, id := range []uint32{768, 1 << 29} {
		if n := vdevName(id); n != "" {
			t.Errorf("vdevName(%d) = %q, want none", id, n)
		}
	}
}

func TestRunUsage(t *testing.T) {
	for _, args := range [][]string{nil, {"disk"}, {"vbd"}, {"vif", "-domid", "3"}} {
		if err := run(args, io.Discard, io.Discard); !errors.Is(err, errUsage) {
			t.Errorf("run(%q): %v, want a usage error", args, err)
		}
	}
	var out strings.Builder
	if err := run([]string{"help"}, &out, io.Discard); err != nil || !strings.Contains(out.String(), "gozen-backend vbd -domid D") {
		t.Errorf("help: %v, %q", err, out.String())
	}
}
