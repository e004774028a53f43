package deadline

import (
	"context"
	"net"
	"os"
	"testing"
	"time"
)

func TestDeadline(t *testing.T) {
	d := New()
	if d.Expired() != nil || d.Context().Err() != nil {
		t.Fatal("a new deadline has expired")
	}
	// replacing the deadline cancels the old context with ErrChanged
	old := d.Context()
	d.Set(time.Now().Add(20 * time.Millisecond))
	if context.Cause(old) != ErrChanged {
		t.Fatalf("old context cause = %v", context.Cause(old))
	}
	ctx := d.Context()
	<-ctx.Done()
	if context.Cause(ctx) != os.ErrDeadlineExceeded || d.Expired() != os.ErrDeadlineExceeded {
		t.Fatalf("cause %v, Expired %v", context.Cause(ctx), d.Expired())
	}
	// a past deadline expires at once; a zero one clears it
	d.Set(time.Now().Add(-time.Second))
	if d.Expired() != os.ErrDeadlineExceeded {
		t.Fatal("past deadline not expired")
	}
	d.Set(time.Time{})
	if d.Expired() != nil {
		t.Fatal("zero deadline still expired")
	}
	d.Close()
	if context.Cause(d.Context()) != net.ErrClosed {
		t.Fatalf("after Close: %v", context.Cause(d.Context()))
	}
	d.Set(time.Now().Add(time.Hour)) // ignored after Close
	if context.Cause(d.Context()) != net.ErrClosed {
		t.Fatal("Set after Close revived the deadline")
	}
}

func TestWake(t *testing.T) {
	d := New()
	at := time.Now().Add(time.Hour)
	d.Set(at)
	old := d.Context()
	d.Wake()
	if context.Cause(old) != ErrChanged {
		t.Fatalf("woken context cause = %v, want ErrChanged", context.Cause(old))
	}
	if d.Context().Err() != nil || d.Expired() != nil {
		t.Fatal("Wake ended the deadline")
	}
	if dl, ok := d.Context().Deadline(); ok {
		t.Fatalf("the new context has a deadline %v; the timer keeps it", dl)
	}
	// the deadline kept: a past one stays expired after Wake
	d.Set(time.Now().Add(-time.Second))
	d.Wake()
	if d.Expired() != os.ErrDeadlineExceeded {
		t.Fatal("Wake cleared an expired deadline")
	}
	d = New()
	d.Close()
	d.Wake() // no effect after Close
	if context.Cause(d.Context()) != net.ErrClosed {
		t.Fatalf("after Close and Wake: %v", context.Cause(d.Context()))
	}
}
