package master

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/granary-db/granary/metadb"
)

// errWait means a step's condition does not hold yet (e.g. proxies have not
// acknowledged); the runner tries again soon without counting a failure.
var errWait = errors.New("waiting")

// step is one step of a job kind. run performs the step's effect; it must
// be idempotent, because a new leader repeats the step it finds recorded
// when the old leader died between doing it and recording it. run returns
// the job's next step, or "" when run itself finished the job.
//
// A step with a nil run belongs to the keeper watching the job's pair: the
// master waits while the keeper performs it and records the next step
// itself (metadb.Store.UpdateJob); if that keeper dies, the master assigns
// the pair to another keeper, which resumes the step.
type step struct {
	name string
	run  func(ctx context.Context, f *metadb.Fence, j *metadb.Job) (next string, err error)
}

func (m *Master) steps(kind string) []step {
	switch kind {
	case metadb.JobCreate:
		return []step{
			{"flush", m.createFlush},
			{"route", m.createRoute},
		}
	case metadb.JobResize:
		return m.resizeSteps()
	case metadb.JobReplace:
		return m.replaceSteps()
	case metadb.JobDrop:
		return []step{
			{"unroute", m.dropUnroute},
			{"wait_acks", m.dropWaitAcks},
			{"flush", m.dropFlush},
			{"free", m.dropFree},
		}
	}
	return nil
}

// progress is the share of steps done when the job is at step name.
func progress(steps []step, name string) float64 {
	for i, s := range steps {
		if s.name == name {
			return float64(i) / float64(len(steps))
		}
	}
	return 0
}

// runJob drives one job from its recorded step to the end. It returns when
// the job is done or failed, when ctx ends, or when the fence is refused.
func (m *Master) runJob(ctx context.Context, f *metadb.Fence, id string) {
	log := m.log.With().Str("job", id).Logger()
	backoff := 50 * time.Millisecond
	for ctx.Err() == nil {
		j, err := m.store.Job(ctx, id)
		if err != nil {
			log.Warn().Err(err).Msg("load job failed")
			if !sleep(ctx, backoff) {
				return
			}
			continue
		}
		if j.State != metadb.JobRunning {
			return
		}
		steps := m.steps(j.Kind)
		var cur *step
		for i := range steps {
			if steps[i].name == j.Step {
				cur = &steps[i]
			}
		}
		if cur == nil {
			m.failJob(ctx, f, id, fmt.Sprintf("unknown step %q of %s job", j.Step, j.Kind))
			return
		}
		if cur.run == nil {
			if !sleep(ctx, m.cfg.JobPoll) {
				return
			}
			continue
		}
		next, err := cur.run(ctx, f, j)
		switch {
		case errors.Is(err, metadb.ErrNotLeader):
			return
		case errors.Is(err, errWait):
			if !sleep(ctx, m.cfg.JobPoll) {
				return
			}
			continue
		case err != nil:
			if ctx.Err() != nil {
				return
			}
			log.Warn().Err(err).Str("step", j.Step).Msg("job step failed, will retry")
			_, _ = m.store.UpdateJob(ctx, f, id, func(j *metadb.Job) error {
				j.Attempts++
				j.Error = err.Error()
				return nil
			})
			if !sleep(ctx, backoff) {
				return
			}
			backoff = min(backoff*2, m.cfg.StepRetryMax)
			continue
		}
		backoff = 50 * time.Millisecond
		if next == "" {
			continue // the step finished the job itself
		}
		_, err = m.store.UpdateJob(ctx, f, id, func(j *metadb.Job) error {
			if j.Step != cur.name {
				return nil // someone recorded it already
			}
			j.Log = append(j.Log, metadb.JobStep{Step: cur.name, At: metadb.Timestamp(time.Now()), By: f.ID})
			j.Error = ""
			if next == "done" {
				j.State, j.Step, j.Progress = metadb.JobDone, "done", 1
				return nil
			}
			j.Step, j.Progress = next, progress(steps, next)
			return nil
		})
		if errors.Is(err, metadb.ErrNotLeader) {
			return
		}
		if err != nil {
			log.Warn().Err(err).Msg("record job step failed")
		}
	}
}

func (m *Master) failJob(ctx context.Context, f *metadb.Fence, id, why string) {
	m.log.Error().Str("job", id).Str("reason", why).Msg("job failed")
	_, _ = m.store.UpdateJob(ctx, f, id, func(j *metadb.Job) error {
		j.State, j.Error = metadb.JobFailed, why
		return nil
	})
}

// sleep waits d or until ctx ends; it reports whether ctx is still alive.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
