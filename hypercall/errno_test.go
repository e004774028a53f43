package hypercall

import (
	"errors"
	"testing"
)

func TestCheck(t *testing.T) {
	tests := []struct {
		ret     int64
		wantErr error
		wantMsg string
	}{
		{0, nil, ""},
		{5, nil, ""},
		{-38, ENOSYS, "hypercall argo_op(register_ring): ENOSYS (function not implemented)"},
		{-22, EINVAL, "hypercall argo_op(register_ring): EINVAL (invalid argument)"},
		{-999, Errno(999), "hypercall argo_op(register_ring): errno 999"},
	}
	for _, tt := range tests {
		err := Check("argo_op(register_ring)", tt.ret)
		if tt.wantErr == nil {
			if err != nil {
				t.Errorf("Check(%d) = %v, want nil", tt.ret, err)
			}
			continue
		}
		if !errors.Is(err, tt.wantErr) {
			t.Errorf("Check(%d) = %v, not Is %v", tt.ret, err, tt.wantErr)
		}
		if err.Error() != tt.wantMsg {
			t.Errorf("Check(%d).Error() = %q, want %q", tt.ret, err.Error(), tt.wantMsg)
		}
	}
}

func TestErrnoName(t *testing.T) {
	if got := EAGAIN.Name(); got != "EAGAIN" {
		t.Errorf("EAGAIN.Name() = %q", got)
	}
	if got := Errno(12345).Name(); got != "errno 12345" {
		t.Errorf("unknown Name() = %q", got)
	}
}
