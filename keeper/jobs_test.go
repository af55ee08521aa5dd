package keeper

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/granary-db/granary/internal/redistest"
	"github.com/granary-db/granary/metadb"
	"github.com/rs/zerolog"
)

// TestJobsLoopRunsKeeperSteps registers a keeper-owned step for a test job
// kind and checks that the keeper watching the job's pair runs it, retries
// it after a failure and records the next step.
func TestJobsLoopRunsKeeperSteps(t *testing.T) {
	e := newEnv(t)
	ctx := t.Context()

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
	k, err := New(cfg, e.store, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	var calls atomic.Int32
	k.steps["test"] = map[metadb.Step]jobStep{
		"work": func(ctx context.Context, j *metadb.Job) (metadb.Step, error) {
			if calls.Add(1) == 1 {
				return "", errors.New("first attempt fails")
			}
			return "after", nil
		},
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { _ = k.Run(runCtx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })

	if _, err := e.store.UpdatePair(ctx, nil, e.pair.ID, func(p *metadb.Pair) error { p.Keeper = "k1"; return nil }); err != nil {
		t.Fatal(err)
	}
	redistest.WaitFor(t, 5*time.Second, "step recorded", func() bool {
		j, err := e.store.Job(ctx, job.ID)
		return err == nil && j.Step == "after"
	})
	j, _ := e.store.Job(ctx, job.ID)
	if j.Attempts != 1 || j.Error != "" || len(j.Log) == 0 || j.Log[len(j.Log)-1].Step != "work" {
		t.Fatalf("job after step: attempts %d error %q log %+v; want 1 failed attempt then a recorded step", j.Attempts, j.Error, j.Log)
	}
}

// TestJobSteps checks the keeper's step table against the job protocol: it
// handles exactly the steps the protocol gives the keeper. master's
// TestJobSteps checks the master's side.
func TestJobSteps(t *testing.T) {
	k, err := New(Config{ID: "k1"}, nil, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	for _, kind := range metadb.JobKinds() {
		for _, s := range metadb.Steps(kind) {
			if h := k.steps[kind][s.Name]; (h != nil) != (s.Owner == metadb.ByKeeper) {
				t.Errorf("%s: step %s is the %s's, and the keeper has a handler: %v", kind, s.Name, s.Owner, h != nil)
			}
		}
	}
	for kind, handlers := range k.steps {
		for name := range handlers {
			if _, _, ok := metadb.StepOf(kind, name); !ok {
				t.Errorf("%s: the keeper handles step %s, which the protocol does not have", kind, name)
			}
		}
	}
}
