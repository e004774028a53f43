package evunix

import (
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"
	"testing"
)

func TestPeerGone(t *testing.T) {
	tests := []struct {
		name string
		err  error
		want bool
	}{
		{"socket removed", &net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.ENOENT)}, true},
		{"refused", fmt.Errorf("connect to domain 2: %w", &net.OpError{Op: "dial", Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}), true},
		{"broken pipe", fmt.Errorf("send to domain 2: %w", syscall.EPIPE), true},
		{"reset", syscall.ECONNRESET, true},
		{"timeout", os.ErrDeadlineExceeded, false},
		{"other", errors.New("evunix: something else"), false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := peerGone(tc.err); got != tc.want {
				t.Fatalf("peerGone(%v) = %v, want %v", tc.err, got, tc.want)
			}
		})
	}
}
