package keeper

import (
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/granary-db/granary/internal/redistest"
)

// TestCopySessionKeepsUpWithWrites copies a db while a writer sets,
// overwrites and deletes keys in it: after the writer stops, a barrier and
// a last drain make the target equal to the source (verify passes on every
// key), the target's replica has it all, and the notification setting is
// restored when the session closes.
func TestCopySessionKeepsUpWithWrites(t *testing.T) {
	ctx := t.Context()
	sm, _ := redistest.StartPair(t, "databases", "4")
	dm, _ := redistest.StartPair(t, "databases", "4")
	src := sm.ClientDB(t, 1)
	for i := 0; i < 5000; i += 500 {
		p := src.Pipeline()
		for j := i; j < i+500; j++ {
			p.Set(ctx, "k"+strconv.Itoa(j), j, 0)
		}
		if _, err := p.Exec(ctx); err != nil {
			t.Fatal(err)
		}
	}
	dm.ClientDB(t, 2).Set(ctx, "stale", "from an earlier attempt", 0)

	s, err := openCopy(ctx, sm.Addr, 1, dm.Addr, 2, true)
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var written atomic.Int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		for n := 0; ; n++ {
			written.Store(int64(n))
			select {
			case <-stop:
				return
			default:
			}
			k := "k" + strconv.Itoa(n%6000)
			if n%7 == 0 {
				src.Del(ctx, k)
			} else {
				src.Set(ctx, k, "v"+strconv.Itoa(n), 0)
			}
		}
	}()
	if err := s.fullCopy(ctx, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := s.drain(ctx); err != nil {
		t.Fatal(err)
	}
	// Writes go on after the copy: a few hundred more before they stop.
	sofar := written.Load()
	redistest.WaitFor(t, 10*time.Second, "writes after the copy", func() bool { return written.Load() >= sofar+300 })
	close(stop)
	wg.Wait()
	if err := s.barrier(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := s.drain(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.verify(ctx, 10000); err != nil {
		t.Fatalf("verify every key: %v", err)
	}
	if err := s.waitReplica(ctx, 5*time.Second); err != nil {
		t.Fatal(err)
	}
	s.close()
	if v := src.ConfigGet(ctx, "notify-keyspace-events").Val()["notify-keyspace-events"]; v != "" {
		t.Fatalf("notify-keyspace-events after the session: %q, want it restored to empty", v)
	}
}
