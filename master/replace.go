package master

import (
	"context"
	"errors"

	"github.com/granary-db/granary/metadb"
)

// replaceSteps lists the steps of a job that attaches a spare as the new
// replica of a pair after a failover. The keeper that promoted the replica
// records the job (metadb.Store.Promote), usually with a spare already
// taken, at step attach:
//
//	take_spare  master: take a spare from the pool (waits while it is empty)
//	attach      keeper: REPLICAOF the new master, wait until in sync
//	record      master: the pair's replica is the spare, version bump and a
//	            NewReplica message; the job ends
func (m *Master) replaceSteps() []step {
	return []step{
		{"take_spare", m.replaceTakeSpare},
		{"attach", nil},
		{"record", m.replaceRecord},
	}
}

func (m *Master) replaceTakeSpare(ctx context.Context, f *metadb.Fence, j *metadb.Job) (string, error) {
	if _, err := m.store.TakeSpare(ctx, f, j.ID); err != nil {
		if errors.Is(err, metadb.ErrNoSpare) {
			return "", errWait
		}
		return "", err
	}
	return "attach", nil
}

// replaceRecord ends the job in one transaction. A job whose pair moved on
// (another failover) is failed there and its spare returned to the pool.
func (m *Master) replaceRecord(ctx context.Context, f *metadb.Fence, j *metadb.Job) (string, error) {
	err := m.store.FinishReplace(ctx, f, j.ID)
	if errors.Is(err, metadb.ErrBadState) {
		m.log.Warn().Err(err).Str("job", j.ID).Msg("replica replacement abandoned")
		return "", nil
	}
	return "", err
}
