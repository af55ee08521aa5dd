package metadb

import (
	"errors"
	"testing"
)

// TestReplAuth: a credential is recorded only for the pair's current
// master, and read back whole.
func TestReplAuth(t *testing.T) {
	s, _ := newStore(t)
	ctx := t.Context()
	p, err := s.AddPair(ctx, "64M", "m1:6379", "r1:6379", []int{0, 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.ReplAuth(ctx, p.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("ReplAuth before any: %v, want ErrNotFound", err)
	}
	ra := &ReplAuth{Master: "m1:6379", RunID: "run1", User: "granary-repl", Password: "secret"}
	if err := s.SetReplAuth(ctx, p.ID, ra); err != nil {
		t.Fatal(err)
	}
	got, err := s.ReplAuth(ctx, p.ID)
	if err != nil || *got != *ra {
		t.Fatalf("ReplAuth = %+v, %v; want %+v", got, err, ra)
	}
	stale := &ReplAuth{Master: "r1:6379", RunID: "run2", User: "granary-repl", Password: "other"}
	if err := s.SetReplAuth(ctx, p.ID, stale); !errors.Is(err, ErrBadState) {
		t.Fatalf("SetReplAuth for a server that is not the master: %v, want ErrBadState", err)
	}
	if got, _ := s.ReplAuth(ctx, p.ID); got.Password != "secret" {
		t.Fatal("a refused credential replaced the recorded one")
	}
	if err := s.SetReplAuth(ctx, "no-such-pair", ra); !errors.Is(err, ErrNotFound) {
		t.Fatalf("SetReplAuth of an unknown pair: %v, want ErrNotFound", err)
	}
}
