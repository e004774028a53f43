//go:build tamago

// Command resume is the tier-B guest test of the platform's ordered
// suspend and resume (package platform), run in a domU without a real
// save: it calls Platform.Suspend and Platform.Resume itself around live
// state (a xenstore watch, an event-channel pair, a grant) and checks that
// all of it works afterwards. One line per case, then the tally:
//
//	RESUME PASS name detail
//	RESUME FAIL name: reason
//	RESUME DONE pass=N fail=M
//
// Cases: cancelled (Resume(true): nothing is re-initialised), same-domain
// (Resume(false) as Xen reports it to a PVH guest after a checkpoint: the
// platform finds its timer VIRQ still bound, takes the xenstore and
// console rings up again, re-registers the shared info page and vCPU time
// area, re-adds the grant frames and keeps every binding), refused (a
// device that cannot quiesce: everything already suspended goes on) and
// leftovers.
package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/gozen-dev/gozen/boot"
	"github.com/gozen-dev/gozen/domid"
	"github.com/gozen-dev/gozen/evtchn"
	"github.com/gozen-dev/gozen/hypercall"
	"github.com/gozen-dev/gozen/platform"
	"github.com/gozen-dev/gozen/qemu/guests/internal/report"
	"github.com/gozen-dev/gozen/xenbus"
)

var rep = report.New("RESUME")

func main() {
	p := platform.Domain()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	xs, err := p.Store()
	if err != nil {
		rep.Check("setup", err, "")
		done()
		return
	}
	if _, err := p.Grants(); err != nil {
		rep.Check("setup", err, "")
		done()
		return
	}
	basePorts := p.Events().Stats().Ports
	for _, c := range []struct {
		name      string
		cancelled bool
		want      platform.Kind
	}{
		{"cancelled", true, platform.Cancelled},
		{"same-domain", false, platform.SameDomain},
	} {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		rep.Check(c.name, cycle(ctx, p, xs, c.cancelled, c.want), "xenstore call made while suspended completed after; watch, event pair, grant, clock and console all work")
		cancel()
	}
	ctx, cancel = context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rep.Check("refused", refused(ctx, p, xs), "a device refusing left everything running")
	g, _ := p.Grants()
	if st := g.Stats(); st.Grants != 0 || st.Shares != 0 || st.Mappings != 0 {
		rep.Check("leftovers", fmt.Errorf("grants left: %+v", st), "")
	} else if n := p.Events().Stats().Ports; n != basePorts {
		rep.Check("leftovers", fmt.Errorf("%d ports bound, %d at start", n, basePorts), "")
	} else {
		rep.Check("leftovers", nil, "no grants, ports back to the start")
	}
	done()
}

func done() { rep.Done() }

// cycle suspends and resumes the platform around live state and checks it.
func cycle(ctx context.Context, p *platform.Platform, xs *xenbus.Client, cancelled bool, want platform.Kind) error {
	ev := p.Events()
	g, _ := p.Grants()
	key := "data/resume/" + want.String()
	w, err := xs.Watch(ctx, key)
	if err != nil {
		return fmt.Errorf("watch: %w", err)
	}
	defer w.Unwatch(ctx)
	<-w.Events() // the initial event
	a, err := ev.AllocUnbound(domid.Self)
	if err != nil {
		return err
	}
	defer ev.Close(a)
	b, err := ev.BindInterdomain(domid.Self, a)
	if err != nil {
		return err
	}
	defer ev.Close(b)
	share, err := g.Share(0, 1, false)
	if err != nil {
		return fmt.Errorf("share: %w", err)
	}
	defer func() {
		if share.Buf != nil { // a failure before the check below
			g.Unshare(share)
		}
	}()
	timerBefore := p.TimerEvents()
	before := time.Now()

	if err := p.Suspend(ctx); err != nil {
		return fmt.Errorf("suspend: %w", err)
	}
	// A call made while suspended waits for the resume.
	wrote := make(chan error, 1)
	go func() { wrote <- xs.WriteString(ctx, key, "during") }()
	short, cancelShort := context.WithTimeout(ctx, 200*time.Millisecond)
	_, err = xs.ReadString(short, key)
	cancelShort()
	if !errors.Is(err, context.DeadlineExceeded) {
		p.Resume(true)
		return fmt.Errorf("a xenstore read while suspended returned %v, want it held until resume", err)
	}
	kind, err := p.Resume(cancelled)
	if err != nil {
		return fmt.Errorf("resume: %w", err)
	}
	if kind != want {
		return fmt.Errorf("resume found %s, want %s", kind, want)
	}
	if err := <-wrote; err != nil {
		return fmt.Errorf("write made while suspended: %w", err)
	}
	if v, err := xs.ReadString(ctx, key); err != nil || v != "during" {
		return fmt.Errorf("read after resume = %q, %v", v, err)
	}
	if err := watchFires(w, xs.Home()+"/"+key); err != nil {
		return err
	}
	if err := xs.WriteString(ctx, key, "after"); err != nil {
		return err
	}
	if err := watchFires(w, xs.Home()+"/"+key); err != nil {
		return fmt.Errorf("after resume: %w", err)
	}
	// The event pair still carries notifications both ways.
	for _, d := range [][2]evtchn.Port{{a, b}, {b, a}} {
		seen := generation(ctx, ev, d[1])
		if err := ev.Notify(d[0]); err != nil {
			return fmt.Errorf("notify %d after resume: %w", d[0], err)
		}
		wctx, wcancel := context.WithTimeout(ctx, 5*time.Second)
		_, err := ev.Wait(wctx, d[1], seen)
		wcancel()
		if err != nil {
			return fmt.Errorf("port %d -> %d after resume: %w", d[0], d[1], err)
		}
	}
	// The grant is intact and the table takes new ones.
	if err := g.Unshare(share); err != nil {
		return fmt.Errorf("unshare of a grant made before: %w", err)
	}
	s2, err := g.Share(0, 2, true)
	if err != nil {
		return fmt.Errorf("share after resume: %w", err)
	}
	if err := g.Unshare(s2); err != nil {
		return fmt.Errorf("unshare after resume: %w", err)
	}
	// Time went on, the timer VIRQ still arrives, and the clock
	// reads the registered time area again.
	if time.Since(before) < 0 {
		return fmt.Errorf("the clock went backwards")
	}
	if err := hypercall.SetSingleshotTimer(0, boot.SystemTime()+uint64(10*time.Millisecond), 0); err != nil {
		return fmt.Errorf("arming the one-shot timer: %w", err)
	}
	for i := 0; i < 100 && p.TimerEvents() == timerBefore; i++ {
		time.Sleep(10 * time.Millisecond)
	}
	if p.TimerEvents() == timerBefore {
		return fmt.Errorf("no VIRQ_TIMER event after resume")
	}
	if !boot.TimeAreaRegistered() {
		return fmt.Errorf("the vCPU time area is not registered after resume")
	}
	return nil
}

// generation returns port's generation now, without waiting.
func generation(ctx context.Context, ev evtchn.Events, port evtchn.Port) evtchn.Generation {
	now, cancel := context.WithCancel(ctx)
	cancel()
	g, _ := ev.Wait(now, port, 0) // a generation past 0 comes back at once
	return g
}

func watchFires(w *xenbus.Watch, path string) error {
	deadline := time.After(10 * time.Second)
	for {
		select {
		case ev, ok := <-w.Events():
			if !ok {
				return fmt.Errorf("watch closed")
			}
			if ev.Path == path {
				return nil
			}
		case <-deadline:
			return fmt.Errorf("watch on %s did not fire", path)
		}
	}
}

// stuck is a device that cannot quiesce.
type stuck struct{ resumed int }

func (s *stuck) Name() string                      { return "vstuck/0" }
func (s *stuck) Suspend(ctx context.Context) error { return errors.New("a request cannot be stopped") }
func (s *stuck) Resume(cancelled bool) error       { s.resumed++; return nil }
func (s *stuck) Close() error                      { return nil }

// ok is a device that quiesces; it must be resumed (as cancelled) when a
// later one refuses.
type ok struct{ suspended, resumed int }

func (o *ok) Name() string                      { return "vok/0" }
func (o *ok) Suspend(ctx context.Context) error { o.suspended++; return nil }
func (o *ok) Resume(cancelled bool) error {
	if cancelled {
		o.resumed++
	}
	return nil
}
func (o *ok) Close() error { return nil }

func refused(ctx context.Context, p *platform.Platform, xs *xenbus.Client) error {
	good, bad := &ok{}, &stuck{}
	p.AddDevice(good)
	p.AddDevice(bad)
	defer p.RemoveDevice(good)
	defer p.RemoveDevice(bad)
	err := p.Suspend(ctx)
	if !errors.Is(err, platform.ErrRefused) {
		return fmt.Errorf("suspend with a stuck device: %v, want ErrRefused", err)
	}
	fmt.Printf("RESUME refused as expected: %v\n", err)
	if good.suspended != 1 || good.resumed != 1 || bad.resumed != 0 {
		return fmt.Errorf("devices: good suspended %d resumed %d, stuck resumed %d; want 1, 1, 0", good.suspended, good.resumed, bad.resumed)
	}
	if _, err := p.Resume(true); !errors.Is(err, platform.ErrState) {
		return fmt.Errorf("resume after a refused suspend: %v, want ErrState", err)
	}
	if err := xs.WriteString(ctx, "data/resume/refused", "1"); err != nil {
		return fmt.Errorf("xenstore after a refused suspend: %w", err)
	}
	return nil
}
