package keeper

import (
	"context"
	"errors"
	"strconv"
	"testing"
	"time"

	"github.com/granary-db/granary/internal/redistest"
	"github.com/redis/go-redis/v9"
)

// TestImportSession copies a live source into a target with the import
// session: a full pass, then changes (writes, expiries, deletes) applied
// from the keyspace events after a barrier, the copy verified with TTLs
// kept as absolute times; a burst of more changed keys than the dirty set
// holds breaks the session, for a new full pass.
func TestImportSession(t *testing.T) {
	ctx := t.Context()
	srcSrv := redistest.Start(t, "notify-keyspace-events", "KEA")
	dstSrv := redistest.Start(t)
	src, dst := srcSrv.ClientDB(t, 3), dstSrv.ClientDB(t, 1)
	for i := range 2000 {
		k := "k" + strconv.Itoa(i)
		switch i % 3 {
		case 0:
			src.Set(ctx, k, i, 0)
		case 1:
			src.HSet(ctx, k, "a", i, "b", "some longer value that keeps the hash out of a listpack: "+k+"............")
		case 2:
			src.Set(ctx, k, i, time.Hour)
		}
	}
	dst.Set(ctx, "stale", "from before the import", 0)
	s, err := openImport(ctx, src, dst, 3)
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	s.owner = func() error { return nil }
	if err := s.fullPass(ctx, func(int64) error { return nil }); err != nil {
		t.Fatal(err)
	}
	src.Set(ctx, "new", "1", 0)
	src.Del(ctx, "k0")
	src.Expire(ctx, "k3", 30*time.Minute)
	src.Set(ctx, "short", "x", 50*time.Millisecond)
	redistest.WaitFor(t, 5*time.Second, "the short key to expire", func() bool { return src.Exists(ctx, "short").Val() == 0 })
	if err := s.barrier(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := s.drain(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.verify(ctx, 5000); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"stale", "k0", "short"} {
		if dst.Exists(ctx, k).Val() != 0 {
			t.Errorf("key %s on the target, want gone", k)
		}
	}
	for _, k := range []string{"k2", "k3"} {
		a, b := src.PExpireTime(ctx, k).Val(), dst.PExpireTime(ctx, k).Val()
		if a != b || a <= 0 {
			t.Errorf("%s expires at %v on the source, %v on the target", k, a, b)
		}
	}

	// A burst past the dirty set's bound breaks the session.
	_, err = src.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i := range importMaxDirty + 10 {
			p.Set(ctx, "burst"+strconv.Itoa(i), 1, 0)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	bctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	_ = s.barrier(bctx)
	if err := s.err(); !errors.Is(err, errDirtyOverflow) {
		t.Fatalf("after the burst: %v, want errDirtyOverflow", err)
	}
	if n := s.pending(); n > importMaxDirty {
		t.Fatalf("%d dirty keys held, more than %d", n, importMaxDirty)
	}
}
