package keeper

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/granary-db/granary/metadb"
)

// jobStep performs one keeper-owned step of a job on a pair this keeper
// watches. It must be idempotent: a keeper that takes over the pair after
// a crash repeats the step it finds recorded. It returns the job's next
// step, which the dispatcher records; errWaitStep means "not yet, call me
// again".
type jobStep func(ctx context.Context, j *metadb.Job) (next metadb.Step, err error)

// errWaitStep asks the dispatcher to call the step again soon without
// counting a failure.
var errWaitStep = errors.New("step not ready")

// jobSteps is the keeper's side of the job protocol (metadb/jobspec.go): a
// handler for every step the keeper owns, by job kind. Every other step
// belongs to the master.
func (k *Keeper) jobSteps() map[metadb.JobKind]map[metadb.Step]jobStep {
	return map[metadb.JobKind]map[metadb.Step]jobStep{
		metadb.JobResize: {
			metadb.StepCopy:    k.resizeCopy,
			metadb.StepCatchup: k.resizeCatchup,
		},
		metadb.JobReplace: {
			metadb.StepAttach: k.attachStep,
		},
		metadb.JobImport: {
			metadb.StepSync:    k.importSync,
			metadb.StepCutover: k.importCutover,
		},
		metadb.JobRestore: {
			metadb.StepCheck: k.restoreCheck,
			metadb.StepLoad:  k.restoreLoad,
		},
		metadb.JobExport: {
			metadb.StepDump: k.exportDump,
		},
	}
}

// jobPair names the pair whose keeper runs a job's keeper steps: the pair
// the job was recorded for (for a resize, the source pair).
func jobPair(j *metadb.Job) string { return j.Pair }

// jobsLoop looks for active jobs whose current step belongs to the keeper
// and whose pair this keeper watches, and runs each in its own goroutine,
// one at a time per job.
func (k *Keeper) jobsLoop(ctx context.Context) error {
	t := time.NewTicker(k.cfg.JobPoll)
	defer t.Stop()
	var mu sync.Mutex
	running := map[string]bool{}
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		if k.leased() {
			jobs, err := k.store.ActiveJobs(ctx)
			if err != nil && ctx.Err() == nil {
				k.log.Warn().Err(err).Msg("list jobs failed")
			}
			mine := k.myPairs()
			for _, j := range jobs {
				h := k.steps[j.Kind][j.Step]
				if _, ok := mine[jobPair(j)]; !ok || h == nil {
					continue
				}
				mu.Lock()
				busy := running[j.ID]
				running[j.ID] = true
				mu.Unlock()
				if busy {
					continue
				}
				wg.Add(1)
				go func(j *metadb.Job) {
					defer wg.Done()
					k.runStep(ctx, j, h)
					mu.Lock()
					delete(running, j.ID)
					mu.Unlock()
				}(j)
			}
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// runStep runs one step and records its outcome on the job: the next step,
// or the error and attempt count. A step that waits is simply left for the
// next poll.
func (k *Keeper) runStep(ctx context.Context, j *metadb.Job, h jobStep) {
	next, err := h(ctx, j)
	if errors.Is(err, errWaitStep) || errors.Is(err, errJobEnded) || ctx.Err() != nil {
		return
	}
	_, uerr := k.store.UpdateJob(ctx, nil, j.ID, func(cur *metadb.Job) error {
		if cur.Step != j.Step || cur.State != metadb.JobRunning {
			return nil // someone moved it meanwhile
		}
		if err != nil {
			cur.Attempts++
			cur.Error = err.Error()
			return nil
		}
		cur.Advance(j.Step, next, k.sender(), time.Now())
		return nil
	})
	if err != nil {
		k.metrics.stepFailures.WithLabelValues(string(j.Kind), string(j.Step)).Inc()
		k.log.Warn().Err(err).Str("job", j.ID).Str("step", string(j.Step)).Msg("job step failed, will retry")
	}
	if uerr != nil && ctx.Err() == nil {
		k.log.Warn().Err(uerr).Str("job", j.ID).Msg("record job step failed")
	}
}
