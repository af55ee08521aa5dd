package master

import (
	"context"
	"errors"

	"github.com/granary-db/granary/metadb"
)

// The master's steps of a replace_replica job, which attaches a spare as
// the new replica of a pair after a failover. The keeper that promoted the
// replica records the job (metadb.Store.Promote), usually with a spare
// already taken, at step attach:
//
//	take_spare  master: take a spare from the pool (waits while it is empty)
//	attach      keeper: REPLICAOF the new master, wait until in sync
//	record      master: the pair's replica is the spare, version bump and a
//	            NewReplica message; the job ends

func (m *Master) replaceTakeSpare(ctx context.Context, f *metadb.Fence, j *metadb.Job) (metadb.Step, error) {
	if _, err := m.store.TakeSpare(ctx, f, j.ID); err != nil {
		if errors.Is(err, metadb.ErrNoSpare) {
			return "", errWait
		}
		return "", err
	}
	return metadb.StepAttach, nil
}

// replaceRecord ends the job in one transaction. A job whose pair moved on
// (another failover) is failed there and its spare returned to the pool.
func (m *Master) replaceRecord(ctx context.Context, f *metadb.Fence, j *metadb.Job) (metadb.Step, error) {
	err := m.store.FinishReplace(ctx, f, j.ID)
	if errors.Is(err, metadb.ErrBadState) {
		m.log.Warn().Err(err).Str("job", j.ID).Msg("replica replacement abandoned")
		return "", nil
	}
	return "", err
}
