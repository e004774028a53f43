package platform

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/gozen-dev/gozen/xenbus/device"
)

// fake is a part or device that logs its steps and fails where told.
type fake struct {
	name                 string
	log                  *[]string
	failSuspend, failRes bool
}

var errFake = errors.New("fake failure")

func (f *fake) Name() string { return f.name }

func (f *fake) Suspend(ctx context.Context) error {
	*f.log = append(*f.log, "suspend "+f.name)
	if f.failSuspend {
		return errFake
	}
	return nil
}

func (f *fake) Resume(k Kind) error {
	*f.log = append(*f.log, fmt.Sprintf("resume %s %s", f.name, k))
	if f.failRes {
		return errFake
	}
	return nil
}

// fakeDevice adapts fake to Device.
type fakeDevice struct{ fake }

func (d *fakeDevice) Resume(cancelled bool) error {
	*d.log = append(*d.log, fmt.Sprintf("resume %s cancelled=%v", d.name, cancelled))
	if d.failRes {
		return errFake
	}
	return nil
}

func (d *fakeDevice) Close() error { return nil }

func TestLifecycleOrder(t *testing.T) {
	tests := []struct {
		name        string
		kind        Kind
		failSuspend string // part or device that refuses
		failResume  string
		wantLog     []string
		wantSusErr  bool
		wantResErr  bool
	}{
		{
			name: "new domain",
			kind: NewDomain,
			wantLog: []string{
				"suspend vif/0", "suspend vbd/0",
				"suspend xenstore", "suspend grants", "suspend time", "suspend console", "suspend events",
				"resume events new-domain", "resume console new-domain", "resume time new-domain", "resume grants new-domain", "resume xenstore new-domain",
				"resume vif/0 cancelled=false", "resume vbd/0 cancelled=false",
			},
		},
		{
			name: "same domain: devices are told cancelled",
			kind: SameDomain,
			wantLog: []string{
				"suspend vif/0", "suspend vbd/0",
				"suspend xenstore", "suspend grants", "suspend time", "suspend console", "suspend events",
				"resume events same-domain", "resume console same-domain", "resume time same-domain", "resume grants same-domain", "resume xenstore same-domain",
				"resume vif/0 cancelled=true", "resume vbd/0 cancelled=true",
			},
		},
		{
			name:        "a part refuses: the others are resumed as cancelled",
			failSuspend: "time",
			wantSusErr:  true,
			wantLog: []string{
				"suspend vif/0", "suspend vbd/0",
				"suspend xenstore", "suspend grants", "suspend time",
				"resume grants cancelled", "resume xenstore cancelled",
				"resume vbd/0 cancelled=true", "resume vif/0 cancelled=true",
			},
		},
		{
			name:        "a device refuses",
			failSuspend: "vbd/0",
			wantSusErr:  true,
			wantLog:     []string{"suspend vif/0", "suspend vbd/0", "resume vif/0 cancelled=true"},
		},
		{
			name:       "a failing resume step does not stop the others",
			kind:       Cancelled,
			failResume: "console",
			wantResErr: true,
			wantLog: []string{
				"suspend vif/0", "suspend vbd/0",
				"suspend xenstore", "suspend grants", "suspend time", "suspend console", "suspend events",
				"resume events cancelled", "resume console cancelled", "resume time cancelled", "resume grants cancelled", "resume xenstore cancelled",
				"resume vif/0 cancelled=true", "resume vbd/0 cancelled=true",
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var log []string
			var parts []Part
			for _, n := range []string{"xenstore", "grants", "time", "console", "events"} {
				parts = append(parts, &fake{name: n, log: &log, failSuspend: n == tc.failSuspend, failRes: n == tc.failResume})
			}
			l := NewLifecycle(parts...)
			for _, n := range []string{"vif/0", "vbd/0"} {
				l.AddDevice(&fakeDevice{fake{name: n, log: &log, failSuspend: n == tc.failSuspend, failRes: n == tc.failResume}})
			}
			err := l.Suspend(context.Background())
			if tc.wantSusErr {
				if !errors.Is(err, ErrRefused) || !errors.Is(err, errFake) || !strings.Contains(err.Error(), tc.failSuspend) {
					t.Fatalf("suspend: %v, want ErrRefused naming %s", err, tc.failSuspend)
				}
				if l.Suspended() {
					t.Fatal("suspended after a refusal")
				}
				if err := l.Resume(Cancelled); !errors.Is(err, ErrState) {
					t.Fatalf("resume after a refused suspend: %v, want ErrState", err)
				}
			} else {
				if err != nil {
					t.Fatalf("suspend: %v", err)
				}
				if err := l.Suspend(context.Background()); !errors.Is(err, ErrState) {
					t.Fatalf("second suspend: %v, want ErrState", err)
				}
				err = l.Resume(tc.kind)
				if tc.wantResErr != (err != nil) || err != nil && !strings.Contains(err.Error(), tc.failResume) {
					t.Fatalf("resume: %v (want an error naming %q: %v)", err, tc.failResume, tc.wantResErr)
				}
			}
			if !reflect.DeepEqual(log, tc.wantLog) {
				t.Fatalf("steps:\n  %s\nwant:\n  %s", strings.Join(log, "\n  "), strings.Join(tc.wantLog, "\n  "))
			}
		})
	}
}

func TestLifecycleDevices(t *testing.T) {
	var log []string
	l := NewLifecycle()
	a := &fakeDevice{fake{name: "vif/0", log: &log}}
	b := &fakeDevice{fake{name: "vif/1", log: &log}}
	l.AddDevice(a)
	l.AddDevice(b)
	l.RemoveDevice(a)
	if ds := l.Devices(); len(ds) != 1 || ds[0] != b {
		t.Fatalf("devices after removal: %v", ds)
	}
	if err := l.Suspend(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := l.Resume(NewDomain); err != nil {
		t.Fatal(err)
	}
	want := []string{"suspend vif/1", "resume vif/1 cancelled=false"}
	if !reflect.DeepEqual(log, want) {
		t.Fatalf("steps %v, want %v", log, want)
	}
}

// TestLifecycleSources checks that devices of a source (a bus, whose
// devices come and go) are listed at Suspend, and that Resume takes
// exactly those, even if the source changed meanwhile.
func TestLifecycleSources(t *testing.T) {
	var log []string
	l := NewLifecycle()
	a := &fakeDevice{fake{name: "vif/0", log: &log}}
	b := &fakeDevice{fake{name: "vbd/0", log: &log}}
	listed := []Device{b}
	l.AddDevice(a)
	l.AddSource(func() []Device { return listed })
	if ds := l.Devices(); len(ds) != 2 || ds[0] != a || ds[1] != b {
		t.Fatalf("devices %v", ds)
	}
	if err := l.Suspend(context.Background()); err != nil {
		t.Fatal(err)
	}
	listed = nil // the bus dropped vbd/0 while suspended
	if err := l.Resume(Cancelled); err != nil {
		t.Fatal(err)
	}
	want := []string{"suspend vif/0", "suspend vbd/0", "resume vif/0 cancelled=true", "resume vbd/0 cancelled=true"}
	if !reflect.DeepEqual(log, want) {
		t.Fatalf("steps %v, want %v", log, want)
	}
}

// The device model's devices are the platform's.
var _ Device = (*device.Bound)(nil)

func TestKindString(t *testing.T) {
	for k, want := range map[Kind]string{Cancelled: "cancelled", SameDomain: "same-domain", NewDomain: "new-domain", Kind(9): "Kind(9)"} {
		if got := k.String(); got != want {
			t.Errorf("Kind(%d).String() = %q, want %q", int(k), got, want)
		}
	}
}

// slowDevice takes d to suspend.
type slowDevice struct {
	fakeDevice
	d time.Duration
}

func (s *slowDevice) Suspend(ctx context.Context) error {
	time.Sleep(s.d)
	return s.fakeDevice.Suspend(ctx)
}

// TestLifecycleTimes checks that Times reports each phase of the last
// suspend and resume: a device that takes 20 ms to quiesce shows in
// SuspendDevices, and a new Suspend starts the record afresh.
func TestLifecycleTimes(t *testing.T) {
	var log []string
	l := NewLifecycle(&fake{name: "events", log: &log})
	l.AddDevice(&slowDevice{fakeDevice{fake{name: "vbd/0", log: &log}}, 20 * time.Millisecond})
	if got := l.Times(); got.SuspendDevices != 0 || len(got.Resumes) != 0 {
		t.Fatalf("times before any suspend: %+v", got)
	}
	if err := l.Suspend(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := l.Resume(NewDomain); err != nil {
		t.Fatal(err)
	}
	got := l.Times()
	if got.SuspendDevices < 20*time.Millisecond {
		t.Errorf("SuspendDevices %v, want at least the device's 20 ms", got.SuspendDevices)
	}
	if got.SuspendParts < 0 || got.ResumeParts < 0 || got.ResumeDevices < 0 {
		t.Errorf("negative times: %+v", got)
	}
	if len(got.Resumes) != 1 || got.Resumes[0].Name != "events" || !strings.HasPrefix(got.String(), "events ") {
		t.Errorf("per-part resumes %+v (%q), want one for events", got.Resumes, got.String())
	}
}
