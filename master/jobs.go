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

// stepFunc performs one step of a job. It must be idempotent, because a new
// leader repeats the step it finds recorded when the old leader died between
// doing it and recording it. It returns the job's next step (metadb.StepDone
// to end the job), or "" when it ended or moved the job itself.
type stepFunc func(ctx context.Context, f *metadb.Fence, j *metadb.Job) (next metadb.Step, err error)

// jobSteps is the master's side of the job protocol (metadb/jobspec.go):
// for each kind, a handler for every step the master owns. A keeper's step
// has no handler (the master polls the job while the keeper performs it and
// records the next step itself; if that keeper dies, the master assigns the
// pair to another keeper, which resumes the step), except resize's catchup:
// the master waits on it actively, keeping the hold fresh, because the db's
// writes are held meanwhile.
func (m *Master) jobSteps() map[metadb.JobKind]map[metadb.Step]stepFunc {
	return map[metadb.JobKind]map[metadb.Step]stepFunc{
		metadb.JobCreate: {
			metadb.StepFlush: m.createFlush,
			metadb.StepRoute: m.createRoute,
		},
		metadb.JobDrop: {
			metadb.StepUnroute:  m.dropUnroute,
			metadb.StepWaitAcks: m.dropWaitAcks,
			metadb.StepFlush:    m.dropFlush,
			metadb.StepFree:     m.dropFree,
		},
		metadb.JobResize: {
			metadb.StepReserve:  m.resizeReserve,
			metadb.StepHold:     m.resizeHold,
			metadb.StepCatchup:  m.resizeWaitCatchup,
			metadb.StepSwitch:   m.resizeSwitch,
			metadb.StepFlushOld: m.resizeFlushOld,
			metadb.StepFreeOld:  m.resizeFreeOld,
		},
		metadb.JobReplace: {
			metadb.StepTakeSpare: m.replaceTakeSpare,
			metadb.StepRecord:    m.replaceRecord,
		},
		metadb.JobDrain: {
			metadb.StepPlan:      m.drainPlan,
			metadb.StepMove:      m.drainMove,
			metadb.StepMarkDrain: m.drainMark,
		},
		metadb.JobRebalance: {
			metadb.StepPlan: m.rebalancePlan,
			metadb.StepMove: m.rebalanceMove,
		},
		metadb.JobImport: {
			metadb.StepReadOnly: m.importReadOnly,
			metadb.StepRelease:  m.release,
		},
		metadb.JobRestore: {
			metadb.StepReadOnly: m.restoreReadOnly,
			metadb.StepRelease:  m.release,
		},
		// An export's one step, dump, is the keeper's: the master only
		// watches it (and gives the pair to another keeper if need be).
		metadb.JobExport: {},
	}
}

// action is what the runner does with a job it has just loaded.
type action int

const (
	actStop action = iota // the job has ended
	actRun                // run the master's handler for its step
	actPoll               // a keeper performs the step: look again after JobPoll
	actFail               // the step is not one of its kind's: fail the job
)

// nextAction decides what to do with job j given the master's handlers for
// its kind.
func nextAction(j *metadb.Job, handlers map[metadb.Step]stepFunc) action {
	if j.State != metadb.JobRunning {
		return actStop
	}
	spec, _, ok := metadb.StepOf(j.Kind, j.Step)
	switch {
	case !ok:
		return actFail
	case handlers[j.Step] != nil:
		return actRun
	case spec.Owner == metadb.ByKeeper:
		return actPoll
	}
	return actFail // a master step without a handler; TestJobSteps forbids it
}

// outcome is what a handler's result asks of the runner.
type outcome int

const (
	outRecord  outcome = iota // record the next step
	outEnded                  // the handler ended or moved the job itself
	outWait                   // not yet: run it again after JobPoll
	outRetry                  // it failed: count an attempt, back off, retry
	outDeposed                // this master no longer leads: stop
)

// outcomeOf classifies a handler's result.
func outcomeOf(next metadb.Step, err error) outcome {
	switch {
	case errors.Is(err, metadb.ErrNotLeader):
		return outDeposed
	case errors.Is(err, errWait):
		return outWait
	case err != nil:
		return outRetry
	case next == "":
		return outEnded
	}
	return outRecord
}

const firstBackoff = 50 * time.Millisecond

// runJob drives one job from its recorded step to the end. It returns when
// the job is done or failed, when ctx ends, or when the fence is refused.
func (m *Master) runJob(ctx context.Context, f *metadb.Fence, id string) {
	log := m.log.With().Str("job", id).Logger()
	backoff := firstBackoff
	seen := -1 // log entries observed for metrics; -1 before the first load
	for ctx.Err() == nil {
		j, err := m.store.Job(ctx, id)
		if err != nil {
			log.Warn().Err(err).Msg("load job failed")
			if !sleep(ctx, backoff) {
				return
			}
			continue
		}
		first := seen < 0
		seen = m.metrics.jobSeen(j, seen)
		handlers := m.steps[j.Kind]
		switch nextAction(j, handlers) {
		case actStop:
			if !first { // it ended while this runner drove it
				m.metrics.jobsFinished.WithLabelValues(string(j.Kind), j.State).Inc()
			}
			return
		case actFail:
			m.failJob(ctx, f, id, fmt.Sprintf("unknown step %q of %s job", j.Step, j.Kind))
			m.metrics.jobsFinished.WithLabelValues(string(j.Kind), metadb.JobFailed).Inc()
			return
		case actPoll:
			if !sleep(ctx, m.cfg.JobPoll) {
				return
			}
			continue
		}
		next, err := handlers[j.Step](ctx, f, j)
		switch outcomeOf(next, err) {
		case outDeposed:
			return
		case outWait:
			if !sleep(ctx, m.cfg.JobPoll) {
				return
			}
			continue
		case outRetry:
			if ctx.Err() != nil {
				return
			}
			log.Warn().Err(err).Str("step", string(j.Step)).Msg("job step failed, will retry")
			m.metrics.stepRetries.WithLabelValues(string(j.Kind), string(j.Step)).Inc()
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
		case outEnded:
			backoff = firstBackoff
			continue
		}
		backoff = firstBackoff
		_, err = m.store.UpdateJob(ctx, f, id, func(cur *metadb.Job) error {
			cur.Advance(j.Step, next, f.ID, time.Now())
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
