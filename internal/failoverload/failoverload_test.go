package failoverload_test

import (
	"context"
	"errors"
	"strconv"
	"sync/atomic"
	"testing"
	"time"

	"github.com/granary-db/granary/internal/failoverload"
	"github.com/granary-db/granary/internal/redistest"
)

// TestWritersAndLost: writers against one redis-server lose nothing; a key
// rolled back or deleted counts as lost; Back reports the first write
// acknowledged after a kill mark, not one made during an outage.
func TestWritersAndLost(t *testing.T) {
	srv := redistest.Start(t)
	rc := srv.Client(t)
	var down atomic.Bool
	write := func(ctx context.Context, key, value string) error {
		if down.Load() {
			return errors.New("down")
		}
		return rc.Set(ctx, key, value, 0).Err()
	}
	w := failoverload.Start(t.Context(), 10, write, write)
	if err := w.Flowing(t.Context(), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	down.Store(true)
	killAt := w.MarkKill()
	redistest.WaitFor(t, 5*time.Second, "failed writes", func() bool { return w.Fails() > 0 })
	if !w.Back().IsZero() {
		t.Fatal("Back is set while every write fails")
	}
	down.Store(false)
	redistest.WaitFor(t, 5*time.Second, "writes back", func() bool { return !w.Back().IsZero() })
	if back := w.Back(); !back.After(killAt) {
		t.Fatalf("Back %v, want after the kill mark %v", back, killAt)
	}
	n, acked := w.Halt()
	if n == 0 || len(acked) < 2 || len(acked) > 20 {
		t.Fatalf("halt: %d writes over %d keys, want some over at most 20 (2 clients x 10)", n, len(acked))
	}
	ctx := t.Context()
	if lost, err := failoverload.Lost(ctx, rc, acked); err != nil || lost != 0 {
		t.Fatalf("lost %d, %v; want 0", lost, err)
	}
	var keys []string
	for k := range acked {
		keys = append(keys, k)
	}
	rc.Set(ctx, keys[0], strconv.Itoa(acked[keys[0]]-1), 0)
	rc.Del(ctx, keys[1])
	if lost, err := failoverload.Lost(ctx, rc, acked); err != nil || lost != 2 {
		t.Fatalf("after a rollback and a delete: lost %d, %v; want 2", lost, err)
	}
}
