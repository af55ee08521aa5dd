package master

import (
	"strings"
	"testing"
	"time"

	"github.com/granary-db/granary/internal/redistest"
	"github.com/granary-db/granary/metadb"
)

// TestReplaceJob: a failover recorded with an empty spare pool waits at
// take_spare; a spare added later is taken; once the keeper's attach step
// is recorded the master makes the spare the pair's replica. A demoted
// master that answers again, fenced by the keeper, is unfenced, emptied and
// put back in the spare pool.
func TestReplaceJob(t *testing.T) {
	c := newCluster(t)
	ctx := t.Context()
	if _, err := c.store.UpdatePair(ctx, nil, c.pair.ID, func(p *metadb.Pair) error { p.Keeper = "k1"; return nil }); err != nil {
		t.Fatal(err)
	}
	if err := c.store.Heartbeat(ctx, metadb.KindKeeper, metadb.Member{ID: "k1"}, time.Minute); err != nil {
		t.Fatal(err)
	}
	// The old master keeps data it must not bring into the spare pool.
	if err := c.master.Client(t).Set(ctx, "stale", "1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.replica.Client(t).Do(ctx, "REPLICAOF", "NO", "ONE").Err(); err != nil {
		t.Fatal(err)
	}
	_, job, err := c.store.Promote(ctx, metadb.Promotion{Keeper: "k1", Pair: c.pair.ID, OldMaster: c.master.Addr, NewMaster: c.replica.Addr})
	if err != nil {
		t.Fatal(err)
	}
	// Fenced as the keeper fences a demoted master (keeper/failover.go):
	// it refuses writes, FLUSHALL among them, until it is reclaimed.
	if err := c.master.Client(t).ConfigSet(ctx, "min-replicas-to-write", "1").Err(); err != nil {
		t.Fatal(err)
	}
	if err := c.master.Client(t).Set(ctx, "late", "1", 0).Err(); err == nil || !strings.HasPrefix(err.Error(), "NOREPLICAS") {
		t.Fatalf("write to the fenced old master: %v, want NOREPLICAS", err)
	}
	startMaster(t, c.store, "m1")
	// The demoted master answers: it is emptied and becomes a spare, and
	// the waiting job takes it.
	redistest.WaitFor(t, 10*time.Second, "the job to take the reclaimed master as its spare", func() bool {
		j := jobState(t, c.store, job.ID)
		return j.Step == metadb.StepAttach && j.Data[metadb.ReplaceSpare] == c.master.Addr
	})
	if n := c.master.Client(t).DBSize(ctx).Val(); n != 0 {
		t.Fatalf("reclaimed master holds %d keys, want it emptied", n)
	}
	if v := c.master.Client(t).ConfigGet(ctx, "min-replicas-to-write").Val()["min-replicas-to-write"]; v != "0" {
		t.Fatalf("reclaimed master has min-replicas-to-write %s, want the fence lifted (0)", v)
	}
	// Stand in for the keeper's attach step.
	if err := c.master.Client(t).Do(ctx, "REPLICAOF", "127.0.0.1", c.replica.Port).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.store.UpdateJob(ctx, nil, job.ID, func(j *metadb.Job) error { j.Step = metadb.StepRecord; return nil }); err != nil {
		t.Fatal(err)
	}
	redistest.WaitFor(t, 10*time.Second, "the job done", func() bool { return jobState(t, c.store, job.ID).State == metadb.JobDone })
	p, _ := c.store.Pair(ctx, c.pair.ID)
	if p.Master != c.replica.Addr || p.Replica != c.master.Addr || p.State != metadb.PairActive {
		t.Fatalf("pair after replacement: %+v", p)
	}
	if d, _ := c.store.Demoted(ctx); len(d) != 0 {
		t.Fatalf("still demoted: %v", d)
	}
}
