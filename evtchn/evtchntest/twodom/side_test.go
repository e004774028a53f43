package twodom

import (
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gozen-dev/gozen/domid"
)

// pipe is a LinkCloser over an in-process chanLink, with a Close that can
// be made to fail.
type pipe struct {
	*chanLink
	closeErr error
}

func (p *pipe) Close() error {
	p.close()
	return p.closeErr
}

func TestRunHalf(t *testing.T) {
	tests := []struct {
		name   string
		half   func(t T, s *Side[int])
		limit  time.Duration
		errors []string // substrings, one per expected error, in order
		logs   []string
	}{
		{"passes", func(t T, s *Side[int]) { t.Logf("svc %d", s.Svc) }, 0, nil, []string{"svc 7"}},
		{"errors go on", func(t T, s *Side[int]) {
			t.Errorf("first %d", 1)
			t.Error("second")
			if !t.Failed() {
				t.Error("Failed() is false after Errorf")
			}
			t.Log("still running")
		}, 0, []string{"first 1", "second"}, []string{"still running"}},
		{"fatal stops the half", func(t T, s *Side[int]) {
			t.Fatalf("stop %s", "here")
			t.Error("ran past Fatal")
		}, 0, []string{"stop here"}, nil},
		{"fatal without format", func(t T, s *Side[int]) {
			t.Fatal("stop")
			t.Error("ran past Fatal")
		}, 0, []string{"stop"}, nil},
		{"panic is recorded", func(t T, s *Side[int]) { panic("boom") }, 0, []string{"panic: boom"}, nil},
		{"time limit", func(t T, s *Side[int]) { time.Sleep(5 * time.Second) }, 50 * time.Millisecond,
			[]string{"half A of c still running after 50ms"}, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := RunHalf(Case[int]{Name: "c", A: tt.half}, HalfA, &Side[int]{Svc: 7}, tt.limit)
			if r.Failed() != (len(tt.errors) > 0) || len(r.Errors) != len(tt.errors) {
				t.Fatalf("errors %q, want %d matching %q", r.Errors, len(tt.errors), tt.errors)
			}
			for i, e := range tt.errors {
				if !strings.Contains(r.Errors[i], e) {
					t.Errorf("error %d = %q, want it to contain %q", i, r.Errors[i], e)
				}
			}
			if strings.Join(r.Logs, "|") != strings.Join(tt.logs, "|") {
				t.Errorf("logs %q, want %q", r.Logs, tt.logs)
			}
		})
	}
}

func TestHalves(t *testing.T) {
	var ran Half
	c := Case[int]{A: func(T, *Side[int]) { ran = HalfA }, B: func(T, *Side[int]) { ran = HalfB }}
	for _, s := range []string{"a", "A", "b", "B"} {
		h, err := ParseHalf(s)
		if err != nil {
			t.Fatalf("ParseHalf(%q): %v", s, err)
		}
		c.Func(h)(nil, nil)
		if ran != h || string(h) != strings.ToUpper(s) || h.Other() == h {
			t.Errorf("half %q: ran %q, other %q", h, ran, h.Other())
		}
	}
	if _, err := ParseHalf("C"); err == nil {
		t.Errorf("ParseHalf(C) succeeded")
	}
}

// TestRunSide runs both sides of a list of cases over in-process links and
// checks every way a case can fail is reported against that case only.
func TestRunSide(t *testing.T) {
	leak := 0
	cases := []Case[int]{
		{Name: "Exchange",
			A: func(t T, s *Side[int]) {
				if err := s.Link.Send(uint64(s.Self)); err != nil {
					t.Fatal(err)
				}
				if v, err := s.Link.Recv(); err != nil || v != uint64(s.Peer) {
					t.Errorf("got %d, %v from the peer", v, err)
				}
			},
			B: func(t T, s *Side[int]) {
				v, err := s.Link.Recv()
				if err != nil || v != uint64(s.Peer) {
					t.Errorf("got %d, %v from the peer", v, err)
				}
				s.Link.Send(uint64(s.Self))
			}},
		{Name: "BFails", A: func(T, *Side[int]) {}, B: func(t T, s *Side[int]) { t.Errorf("no") }},
		{Name: "ALeaks", A: func(T, *Side[int]) { leak = 2 }, B: func(T, *Side[int]) {}},
		{Name: "NoLink", A: func(T, *Side[int]) {}, B: func(T, *Side[int]) {}},
		{Name: "BadClose", A: func(T, *Side[int]) {}, B: func(T, *Side[int]) {}},
	}
	links := map[string][2]*pipe{}
	for _, c := range cases {
		a, b := newChanLink()
		links[c.Name] = [2]*pipe{{chanLink: a}, {chanLink: b}}
	}
	links["BadClose"][1].closeErr = errors.New("store gone")
	var mu sync.Mutex
	reports := map[Half][]string{}
	done := make(chan struct{})
	run := func(h Half, self, peer int, idx int, leftovers func() string) {
		pass, fail := RunSide(cases, SideConfig[int]{
			Half: h, Domain: Domain[int]{Svc: self, ID: domid.ID(self), Leftovers: leftovers},
			Peer: domid.ID(peer), Limit: 10 * time.Second,
			Open: func(name string) (LinkCloser, error) {
				if name == "NoLink" && h == HalfA {
					return nil, errors.New("no store")
				}
				return links[name][idx], nil
			},
			Report: func(name string, r Result) {
				line := "PASS " + name
				if r.Failed() {
					line = "FAIL " + name + ": " + strings.Join(r.Errors, "; ")
				}
				mu.Lock()
				reports[h] = append(reports[h], line)
				mu.Unlock()
			},
		})
		mu.Lock()
		reports[h] = append(reports[h], "counts", string(rune('0'+pass)), string(rune('0'+fail)))
		mu.Unlock()
	}
	go func() {
		defer close(done)
		run(HalfB, 2, 1, 1, nil)
	}()
	run(HalfA, 1, 2, 0, func() string {
		if leak != 0 {
			l := leak
			leak = 0
			return strings.Repeat("x", l)
		}
		return ""
	})
	<-done
	want := map[Half][]string{
		HalfA: {"PASS Exchange", "PASS BFails", "FAIL ALeaks: leftovers of half A (domain 1): xx",
			"FAIL NoLink: opening the link: no store", "PASS BadClose", "counts", "3", "2"},
		HalfB: {"PASS Exchange", "FAIL BFails: no", "PASS ALeaks", "PASS NoLink",
			"FAIL BadClose: closing the link: store gone", "counts", "3", "2"},
	}
	for h, w := range want {
		if strings.Join(reports[h], "\n") != strings.Join(w, "\n") {
			t.Errorf("side %s reported\n%s\nwant\n%s", h, strings.Join(reports[h], "\n"), strings.Join(w, "\n"))
		}
	}
}

// TestSideLink: Side.Send and Side.Recv carry values, and a link failure
// fails and ends the half.
func TestSideLink(t *testing.T) {
	la, lb := newChanLink()
	sa, sb := &Side[int]{Link: la}, &Side[int]{Link: lb}
	c := Case[int]{Name: "c",
		A: func(t T, s *Side[int]) { s.Send(t, 5); s.Send(t, 6) },
		B: func(t T, s *Side[int]) {
			if a, b := s.Recv(t), s.Recv(t); a != 5 || b != 6 {
				t.Errorf("received %d, %d; want 5, 6", a, b)
			}
			s.Recv(t)
			t.Error("ran past a failed Recv")
		}}
	if r := RunHalf(c, HalfA, sa, time.Minute); r.Failed() {
		t.Errorf("half A: %q", r.Errors)
	}
	la.close()
	r := RunHalf(c, HalfB, sb, time.Minute)
	if len(r.Errors) != 1 || !strings.HasPrefix(r.Errors[0], "link: ") {
		t.Errorf("half B: errors %q, want one link error", r.Errors)
	}
	r = RunHalf(Case[int]{Name: "d", A: func(t T, s *Side[int]) { s.Send(t, 1); t.Error("ran past a failed Send") }},
		HalfA, &Side[int]{Link: brokenLink{}}, time.Minute)
	if len(r.Errors) != 1 || !strings.HasPrefix(r.Errors[0], "link: ") {
		t.Errorf("Send to a finished half: errors %q, want one link error", r.Errors)
	}
	if r := RunHalf(Case[int]{Name: "e", A: Idle[int]}, HalfA, sa, time.Minute); r.Failed() {
		t.Errorf("Idle: %q", r.Errors)
	}
}

// brokenLink is a Link whose every call fails.
type brokenLink struct{}

func (brokenLink) Send(uint64) error     { return errors.New("broken") }
func (brokenLink) Recv() (uint64, error) { return 0, errors.New("broken") }
