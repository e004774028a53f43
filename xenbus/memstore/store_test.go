package memstore_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/gozen-dev/gozen/xenbus/memstore"
	"github.com/gozen-dev/gozen/xenbus/wire"
)

func TestSmoke(t *testing.T) {
	s := memstore.New()
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := s.Connect(3)
	if err != nil {
		t.Fatal(err)
	}
	if err := c.WriteString(ctx, "data/x", "hello"); err != nil {
		t.Fatal(err)
	}
	v, err := s.Read("/local/domain/3/data/x")
	if err != nil || v != "hello" {
		t.Fatalf("got %q %v", v, err)
	}
	if _, err := c.Read(ctx, "/local/domain/0/nothing"); !errors.Is(err, wire.ErrAccess) {
		t.Fatalf("missing node under dom0's private home: got %v, want EACCES", err)
	}
	if _, err := c.Read(ctx, "data/nothing"); !errors.Is(err, wire.ErrNotExist) {
		t.Fatalf("missing node in our own data: got %v, want ENOENT", err)
	}
}

// TestMissingNodeErrors: a read of a missing node fails as in xenstored,
// with ENOENT when the reader may read the nearest existing ancestor and
// EACCES otherwise, however deep the missing part goes.
func TestMissingNodeErrors(t *testing.T) {
	s := memstore.New()
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := s.Connect(3)
	if err != nil {
		t.Fatal(err)
	}
	s.Connect(4)
	s.Mkdir("/local/domain/4/shared")
	s.SetPerms("/local/domain/4/shared", wire.Perm{Dom: 4, Access: wire.AccessNone}, wire.Perm{Dom: 3, Access: wire.AccessRead})
	tests := []struct {
		path string
		want error
	}{
		{"/local/domain/3/a/b/c", wire.ErrNotExist},
		{"/local/domain/4/shared/x", wire.ErrNotExist},
		{"/local/domain/4/shared/x/y", wire.ErrNotExist},
		{"/local/domain/4/private", wire.ErrAccess},
		{"/local/domain/4/private/x/y", wire.ErrAccess},
		{"/local/domain/9/x", wire.ErrAccess},
		{"/nowhere", wire.ErrAccess},
	}
	for _, tt := range tests {
		if _, err := c.Read(ctx, tt.path); !errors.Is(err, tt.want) {
			t.Errorf("domain 3 reads %s: err = %v, want %v", tt.path, err, tt.want)
		}
		if _, err := c.Directory(ctx, tt.path); !errors.Is(err, tt.want) {
			t.Errorf("domain 3 lists %s: err = %v, want %v", tt.path, err, tt.want)
		}
	}
}

func TestManyRemovalsWithOpenTransaction(t *testing.T) {
	s := memstore.New()
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, _ := s.Connect(3)
	c.WriteString(ctx, "k/x", "1")
	tx, err := c.TransactionStart(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tx.Read(ctx, "k/x"); err != nil {
		t.Fatal(err)
	}
	// Removal of k/x, then many unrelated removals that trigger pruning.
	s.Rm("/local/domain/3/k/x")
	for i := range 1500 {
		p := "/local/domain/3/t" + string(rune('a'+i%26)) + "/" + string(rune('a'+i/26%26))
		s.Write(p, "v")
		s.Rm(p)
	}
	// The transaction read k/x, which was removed after it started.
	if err := tx.End(ctx, true); !errors.Is(err, wire.ErrAgain) {
		t.Fatalf("End: %v", err)
	}
}
