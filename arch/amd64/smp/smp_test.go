package smp

import (
	"encoding/binary"
	"math"
	"testing"
	"time"
)

func TestContextEncode(t *testing.T) {
	c := Context{RSP: 0x1000, RDI: 0x2000, RIP: 0x110000, RFLAGS: 2, CR0: 0x80000033, CR3: 0x1000, CR4: 0x620, EFER: 0x500}
	b := make([]byte, ContextSize)
	for i := range b {
		b[i] = 0xff
	}
	c.Encode(b)
	le := binary.LittleEndian
	tests := []struct {
		name string
		off  int
		want uint64
	}{
		{"mode", 0, modeLong}, // the 32-bit mode word and the padding
		{"rsp", 8 + 4*8, 0x1000},
		{"rdi", 8 + 7*8, 0x2000},
		{"rip", 8 + 8*8, 0x110000},
		{"rflags", 8 + 9*8, 2},
		{"cr0", 8 + 10*8, 0x80000033},
		{"cr3", 8 + 11*8, 0x1000},
		{"cr4", 8 + 12*8, 0x620},
		{"efer", 8 + 13*8, 0x500},
		{"tail", 8 + 14*8, 0},
	}
	for _, tc := range tests {
		if got := le.Uint64(b[tc.off:]); got != tc.want {
			t.Errorf("%s at %d = %#x, want %#x", tc.name, tc.off, got, tc.want)
		}
	}
	if ContextSize != 128 {
		t.Errorf("ContextSize = %d, want 128 (sizeof struct vcpu_hvm_context)", ContextSize)
	}
}

func TestCount(t *testing.T) {
	tests := []struct {
		name     string
		vcpus    int
		max      int
		failAt   uint32 // an id answering another error, 0: none
		wantN    int
		wantMore bool
	}{
		{"one", 1, MaxCPUs, 0, 1, false},
		{"two", 2, MaxCPUs, 0, 2, false},
		{"four", 4, MaxCPUs, 0, 4, false},
		{"exactly max", 32, 32, 0, 32, false},
		{"beyond max", 40, 32, 0, 32, true},
		{"more than shared info holds", 34, MaxCPUs, 0, 34, false},
		{"beyond MaxCPUs", MaxCPUs + 8, MaxCPUs, 0, MaxCPUs, true},
		{"error ends the count", 8, MaxCPUs, 3, 3, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			isUp := func(id uint32) int64 {
				if tc.failAt != 0 && id == tc.failAt {
					return -22
				}
				if int(id) < tc.vcpus {
					return 0
				}
				return ENOENT
			}
			n, more := Count(isUp, tc.max)
			if n != tc.wantN || more != tc.wantMore {
				t.Errorf("Count = %d, %v; want %d, %v", n, more, tc.wantN, tc.wantMore)
			}
		})
	}
}

func TestPolicy(t *testing.T) {
	ms := int64(time.Millisecond)
	t.Run("sleep bounded", func(t *testing.T) {
		var p Policy
		d := p.Decide(10*ms, 0, false)
		if d.State != Sleeping || d.Until != 10*ms+int64(SleepMax) || !d.Bounded {
			t.Errorf("got %+v", d)
		}
		d = p.Decide(10*ms, math.MaxInt64, false)
		if d.Until != 10*ms+int64(SleepMax) || !d.Bounded {
			t.Errorf("MaxInt64 timer: got %+v", d)
		}
	})
	t.Run("sleep until timer", func(t *testing.T) {
		var p Policy
		d := p.Decide(10*ms, 12*ms, false)
		if d.State != Sleeping || d.Until != 12*ms || d.Bounded {
			t.Errorf("got %+v", d)
		}
	})
	t.Run("naps grow and reset", func(t *testing.T) {
		p := Policy{LastExit: 10 * ms}
		now := 10 * ms
		var naps []time.Duration
		for i := 0; i < 8; i++ {
			d := p.Decide(now, 0, true)
			if d.State != Napping || !d.Bounded {
				t.Fatalf("nap %d: %+v", i, d)
			}
			naps = append(naps, time.Duration(d.Until-now))
			now = d.Until
			p.LastExit = now
		}
		want := []time.Duration{NapMin, 2 * NapMin, 4 * NapMin, 8 * NapMin, 16 * NapMin, 32 * NapMin, NapMax, NapMax}
		for i := range want {
			if naps[i] != want[i] {
				t.Errorf("naps = %v, want %v", naps, want)
				break
			}
		}
		// a vCPU that ran something between idles naps short again
		d := p.Decide(now+int64(BusyGap)+1, 0, true)
		if time.Duration(d.Until-(now+int64(BusyGap)+1)) != NapMin {
			t.Errorf("after running: %+v", d)
		}
	})
	t.Run("nap shorter than timer", func(t *testing.T) {
		var p Policy
		d := p.Decide(0, int64(NapMin)/2, true)
		if d.Until != int64(NapMin)/2 || d.Bounded {
			t.Errorf("got %+v", d)
		}
	})
}

func TestWakeWatcher(t *testing.T) {
	tests := []struct {
		name        string
		d           Decision
		early, naps bool
		want        bool
	}{
		{"nap never", Decision{State: Napping}, true, false, false},
		{"sleep to its bound", Decision{State: Sleeping, Bounded: true}, false, false, false},
		{"sleep cut by an interrupt", Decision{State: Sleeping, Bounded: true}, true, false, true},
		{"sleep to the runtime timer", Decision{State: Sleeping}, false, false, true},
		{"a peer naps already", Decision{State: Sleeping}, true, true, false},
	}
	for _, tc := range tests {
		if got := WakeWatcher(tc.d, tc.early, tc.naps); got != tc.want {
			t.Errorf("%s: WakeWatcher = %v, want %v", tc.name, got, tc.want)
		}
	}
}
