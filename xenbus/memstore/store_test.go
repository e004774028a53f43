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
	if _, err := c.Read(ctx, "/local/domain/0/nothing"); !errors.Is(err, wire.ErrNotExist) {
		t.Fatalf("got %v", err)
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
