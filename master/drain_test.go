package master

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/granary-db/granary/internal/redistest"
	"github.com/granary-db/granary/metadb"
	"github.com/granary-db/granary/pools"
	"github.com/granary-db/granary/proto/buspb"
)

// playKeeper advances every resize job at a keeper's step (copy → hold,
// catchup → switch) until the test ends, as TestResizeJobSteps does by hand.
func playKeeper(t *testing.T, s *metadb.Store) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			jobs, _ := s.ActiveJobs(ctx)
			for _, j := range jobs {
				next := map[metadb.Step]metadb.Step{metadb.StepCopy: metadb.StepHold, metadb.StepCatchup: metadb.StepSwitch}[j.Step]
				if j.Kind != metadb.JobResize || next == "" {
					continue
				}
				_, _ = s.UpdateJob(ctx, nil, j.ID, func(cur *metadb.Job) error {
					cur.Advance(j.Step, next, "test-keeper", time.Now())
					return nil
				})
			}
			sleep(ctx, 5*time.Millisecond)
		}
	}()
	t.Cleanup(func() { cancel(); wg.Wait() })
}

// TestDrainJobSteps drains a pair holding two dbs onto the other pair of
// its pool: plan lists both, move moves them one resize at a time to the
// same size, mark_drained leaves the pair drained and empty. The refusals
// (unknown pair, the last active pair, not enough room) change nothing.
func TestDrainJobSteps(t *testing.T) {
	c := newCluster(t)
	ctx := t.Context()

	if _, _, err := c.store.StartDrain(ctx, "p404", "drain-x"); !errors.Is(err, metadb.ErrNotFound) {
		t.Fatalf("drain of an unknown pair: %v, want ErrNotFound", err)
	}
	if _, _, err := c.store.StartDrain(ctx, c.pair.ID, "drain-x"); !errors.Is(err, metadb.ErrBadState) {
		t.Fatalf("drain of the last pair: %v, want ErrBadState", err)
	}
	startMaster(t, c.store, "m1")
	dbs := createDBs(t, c, 3)
	m2, r2 := redistest.StartPair(t, "maxmemory", "1gb", "databases", "2")
	other, err := c.store.AddPair(ctx, "64M", m2.Addr, r2.Addr, []int{0, 1})
	if err != nil {
		t.Fatal(err)
	}
	_, _, err = c.store.StartDrain(ctx, c.pair.ID, "drain-x")
	if !errors.Is(err, pools.ErrNoCapacity) {
		t.Fatalf("drain of 3 dbs into 2 free slots: %v, want no capacity", err)
	}
	if _, err := c.store.Job(ctx, "drain-x"); !errors.Is(err, metadb.ErrNotFound) {
		t.Fatalf("a refused drain recorded a job: %v", err)
	}
	if p, _ := c.store.Pair(ctx, c.pair.ID); p.State != metadb.PairActive {
		t.Fatalf("a refused drain left the pair %s", p.State)
	}
	// A third pair gives room.
	m3, r3 := redistest.StartPair(t, "maxmemory", "1gb", "databases", "2")
	third, err := c.store.AddPair(ctx, "64M", m3.Addr, r3.Addr, []int{0, 1})
	if err != nil {
		t.Fatal(err)
	}

	playKeeper(t, c.store)
	job, existing, err := c.store.StartDrain(ctx, c.pair.ID, "drain-1")
	if err != nil || existing || job.Step != metadb.StepPlan {
		t.Fatalf("start drain: %+v %v %v", job, existing, err)
	}
	again, existing, err := c.store.StartDrain(ctx, c.pair.ID, "drain-2")
	if err != nil || !existing || again.ID != "drain-1" {
		t.Fatalf("second drain: %+v %v %v, want drain-1 back", again, existing, err)
	}
	redistest.WaitFor(t, 20*time.Second, "drain done", func() bool { return jobState(t, c.store, "drain-1").State != metadb.JobRunning })
	j := jobState(t, c.store, "drain-1")
	if moved, total := metadb.DrainProgress(j); j.State != metadb.JobDone || moved != 3 || total != 3 {
		t.Fatalf("drain job: %s (%s), %d/%d moved", j.State, j.Error, moved, total)
	}
	p, _ := c.store.Pair(ctx, c.pair.ID)
	if p.State != metadb.PairDrained || p.Job != "drain-1" {
		t.Fatalf("pair after drain: %+v", p)
	}
	if owners, _ := c.store.SlotOwners(ctx, c.pair.ID); len(owners) != 0 {
		t.Fatalf("drained pair still owns %v", owners)
	}
	if free, _ := c.store.FreeSlots(ctx, c.pair.ID); len(free) != 4 {
		t.Fatalf("drained pair free slots %v, want all 4", free)
	}
	for _, d := range dbs {
		got, _ := c.store.DB(ctx, "acme", d.Index)
		if got.State != metadb.DBActive || (got.Pair != other.ID && got.Pair != third.ID) || got.Size != "64M" || got.Job != "" {
			t.Fatalf("db %d after drain: %+v", d.Index, got)
		}
	}
	if _, _, err := c.store.StartDrain(ctx, c.pair.ID, "drain-3"); !errors.Is(err, metadb.ErrBadState) {
		t.Fatalf("drain of a drained pair: %v, want ErrBadState", err)
	}
}

// TestRebalanceJobSteps: a pool of two pairs, one holding 20, 10 and 10 MB
// and one empty, is evened by moving the 20 MB db (one move) to the empty
// pair; a pool of one active pair is refused and records nothing.
func TestRebalanceJobSteps(t *testing.T) {
	c := newCluster(t)
	ctx := t.Context()
	if _, _, err := c.store.StartRebalance(ctx, "64M", "rebalance-x"); !errors.Is(err, metadb.ErrBadState) {
		t.Fatalf("rebalance of a one-pair pool: %v, want ErrBadState", err)
	}
	if _, err := c.store.Job(ctx, "rebalance-x"); !errors.Is(err, metadb.ErrNotFound) {
		t.Fatalf("a refused rebalance recorded a job: %v", err)
	}
	startMaster(t, c.store, "m1")
	var dbs []*metadb.DB
	for i, used := range []int64{10 << 20, 20 << 20, 10 << 20} {
		db, created, err := c.store.ClaimDB(ctx, "acme", c.pair, metadb.WriteConfirmed, 64<<20, 8, "create-"+string(rune('a'+i)))
		if err != nil {
			t.Fatal(err)
		}
		redistest.WaitFor(t, 5*time.Second, "create done", func() bool { return jobState(t, c.store, created.ID).State == metadb.JobDone })
		if _, err := c.store.UpdateDB(ctx, nil, "test", "acme", db.Index, func(d *metadb.DB) ([]*buspb.Envelope, error) {
			d.UsedBytes = used
			return nil, nil
		}); err != nil {
			t.Fatal(err)
		}
		dbs = append(dbs, db)
	}
	m2, r2 := redistest.StartPair(t, "maxmemory", "1gb", "databases", "4")
	other, err := c.store.AddPair(ctx, "64M", m2.Addr, r2.Addr, []int{0, 1, 2, 3})
	if err != nil {
		t.Fatal(err)
	}
	playKeeper(t, c.store)
	if _, existing, err := c.store.StartRebalance(ctx, "64M", "rebalance-1"); err != nil || existing {
		t.Fatal(existing, err)
	}
	redistest.WaitFor(t, 20*time.Second, "rebalance done", func() bool { return jobState(t, c.store, "rebalance-1").State != metadb.JobRunning })
	j := jobState(t, c.store, "rebalance-1")
	if moved, total := metadb.DrainProgress(j); j.State != metadb.JobDone || moved != 1 || total != 1 {
		t.Fatalf("rebalance job: %s (%s), %d/%d moves, plan %q", j.State, j.Error, moved, total, j.Data[metadb.DrainPlan])
	}
	for i, d := range dbs {
		got, _ := c.store.DB(ctx, "acme", d.Index)
		want := c.pair.ID
		if i == 1 {
			want = other.ID
		}
		if got.Pair != want || got.State != metadb.DBActive || (i == 1 && got.Job != "") {
			t.Fatalf("db %d (%d MB) after the rebalance: on %s, want %s: %+v", d.Index, got.UsedBytes>>20, got.Pair, want, got)
		}
	}
	if again, existing, err := c.store.StartRebalance(ctx, "64M", "rebalance-2"); err != nil || existing || again.ID != "rebalance-2" {
		t.Fatalf("a rebalance after the last ended: %+v %v %v", again, existing, err)
	}
}

// createDBs creates n dbs of tenant acme on the cluster's pair through a
// running master and waits until each create job is done.
func createDBs(t *testing.T, c *cluster, n int) []*metadb.DB {
	t.Helper()
	var dbs []*metadb.DB
	for i := range n {
		db, created, err := c.store.ClaimDB(t.Context(), "acme", c.pair, metadb.WriteConfirmed, 64<<20, 8, "create-"+string(rune('a'+i)))
		if err != nil {
			t.Fatal(err)
		}
		redistest.WaitFor(t, 5*time.Second, "create done", func() bool { return jobState(t, c.store, created.ID).State == metadb.JobDone })
		dbs = append(dbs, db)
	}
	return dbs
}

// TestDrainResumedByAnotherMaster: the leading master stops in the middle
// of a drain (one db moved); the next leader resumes the recorded job and
// finishes it: every db moved exactly once (one resize job each, the
// drain's), the pair drained.
func TestDrainResumedByAnotherMaster(t *testing.T) {
	c := newCluster(t)
	ctx := t.Context()
	stop1 := startMaster(t, c.store, "m1")
	dbs := createDBs(t, c, 3)
	m2, r2 := redistest.StartPair(t, "maxmemory", "1gb", "databases", "4")
	if _, err := c.store.AddPair(ctx, "64M", m2.Addr, r2.Addr, []int{0, 1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	playKeeper(t, c.store)
	if _, _, err := c.store.StartDrain(ctx, c.pair.ID, "drain-1"); err != nil {
		t.Fatal(err)
	}
	redistest.WaitFor(t, 20*time.Second, "one db moved", func() bool {
		moved, _ := metadb.DrainProgress(jobState(t, c.store, "drain-1"))
		return moved >= 1
	})
	stop1()
	if j := jobState(t, c.store, "drain-1"); j.State != metadb.JobRunning {
		t.Fatalf("the drain ended before the first master stopped: %+v", j)
	}
	startMaster(t, c.store, "m2")
	redistest.WaitFor(t, 20*time.Second, "drain done", func() bool { return jobState(t, c.store, "drain-1").State != metadb.JobRunning })
	j := jobState(t, c.store, "drain-1")
	if moved, total := metadb.DrainProgress(j); j.State != metadb.JobDone || moved != 3 || total != 3 {
		t.Fatalf("drain job: %s (%s), %d/%d moved", j.State, j.Error, moved, total)
	}
	if p, _ := c.store.Pair(ctx, c.pair.ID); p.State != metadb.PairDrained {
		t.Fatalf("pair after the drain: %+v", p)
	}
	jobs, err := c.store.Jobs(ctx, 100)
	if err != nil {
		t.Fatal(err)
	}
	resizes := map[int]int{}
	for _, jb := range jobs {
		if jb.Kind == metadb.JobResize {
			resizes[jb.Index]++
			if jb.State != metadb.JobDone {
				t.Errorf("move %s: %s (%s)", jb.ID, jb.State, jb.Error)
			}
		}
	}
	for _, d := range dbs {
		if resizes[d.Index] != 1 {
			t.Errorf("db %d moved by %d resize jobs, want 1", d.Index, resizes[d.Index])
		}
	}
}
