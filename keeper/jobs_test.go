package keeper

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/granary-db/granary/metadb"
)

// TestJobsLoopRunsKeeperSteps registers a keeper-owned step for a test job
// kind and checks that the keeper watching the job's pair runs it, retries
// it after a failure and records the next step.
func TestJobsLoopRunsKeeperSteps(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	var calls atomic.Int32
	jobSteps["test"] = map[string]jobStep{
		"work": func(k *Keeper, ctx context.Context, j *metadb.Job) (string, error) {
			if calls.Add(1) == 1 {
				return "", errors.New("first attempt fails")
			}
			return "after", nil
		},
	}
	t.Cleanup(func() { delete(jobSteps, "test") })

	// A job on the env's pair, at a keeper-owned step; recorded through a
	// claim, then turned into a test job.
	_, job, err := e.store.ClaimDB(ctx, "acme", e.pair, metadb.WriteConfirmed, 64<<20, 10, "job-test")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.store.UpdateJob(ctx, nil, job.ID, func(j *metadb.Job) error {
		j.Kind, j.Step = "test", "work"
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	cfg := Config{ID: "k1", LeaseTTL: 600 * time.Millisecond, PairsPoll: 20 * time.Millisecond,
		JobPoll: 10 * time.Millisecond, SizingSweep: time.Hour}
	startKeeper(t, e.store, cfg)

	if _, err := e.store.UpdatePair(ctx, nil, e.pair.ID, func(p *metadb.Pair) error { p.Keeper = "k1"; return nil }); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "step recorded", func() bool {
		j, err := e.store.Job(ctx, job.ID)
		return err == nil && j.Step == "after"
	})
	j, _ := e.store.Job(ctx, job.ID)
	if j.Attempts != 1 || j.Error != "" || len(j.Log) == 0 || j.Log[len(j.Log)-1].Step != "work" {
		t.Fatalf("job after step: attempts %d error %q log %+v; want 1 failed attempt then a recorded step", j.Attempts, j.Error, j.Log)
	}
}
