package rig

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestFaultWatch(t *testing.T) {
	tests := []struct {
		name  string
		lines []string
		want  string // "" for no fault
	}{
		{"quiet", []string{"GZ|a| hello", "GOZEN-GUEST-END a reason=0 at 1"}, ""},
		{"expected crash", []string{"GZ|x| gozen: FAULT #PF", "GOZEN-GUEST-END x reason=3 at 1"}, ""},
		{"triple fault", []string{"(XEN) d2v0 Triple fault - invoking HVM shutdown action 1"}, "triple fault"},
		{"unexpected crash", []string{"GOZEN-GUEST-END a reason=3 at 2"}, "guest a crashed"},
		{"unexpected fault", []string{"GZ|a| gozen: FAULT #GP general protection (vector 13)"}, "guest a reported a CPU fault"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			w := &faultWatch{expectCrash: map[string]bool{"x": true}, cancel: cancel}
			var lines []Line
			for _, l := range tt.lines {
				w.see(l)
				lines = append(lines, Line{Text: l})
			}
			err := w.err(lines)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("err = %v, want none", err)
				}
				return
			}
			if !errors.Is(err, ErrGuestFault) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("err = %v, want ErrGuestFault naming %q", err, tt.want)
			}
			select {
			case <-ctx.Done():
			case <-time.After(faultGrace + 2*time.Second):
				t.Fatal("the run was not stopped after the grace period")
			}
		})
	}
}
