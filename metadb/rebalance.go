package metadb

import (
	"context"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// StartRebalance records the rebalance job of the pool of size (step
// StepPlan), in one transaction: the master plans the moves
// (pools.PlanRebalance) and makes them one resize at a time. A pool whose
// rebalance is still running returns that job (existing is true). It
// returns ErrBadState when the pool has fewer than two active pairs:
// nothing changes then.
func (s *Store) StartRebalance(ctx context.Context, size, jobID string) (job *Job, existing bool, err error) {
	err = s.txn(ctx, nil, func(tx *redis.Tx) error {
		last, err := tx.Get(ctx, keyPoolRebalance(size)).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return err
		}
		if last != "" {
			j, err := getJSON[Job](ctx, tx, keyJob(last))
			if err != nil && !errors.Is(err, ErrNotFound) {
				return err
			}
			if j != nil && j.State == JobRunning {
				job, existing = j, true
				return nil
			}
		}
		ids, err := tx.SMembers(ctx, keyPool(size)).Result()
		if err != nil {
			return err
		}
		active := 0
		for _, id := range ids {
			p, err := getJSON[Pair](ctx, tx, keyPair(id))
			if err != nil && !errors.Is(err, ErrNotFound) {
				return err
			}
			if p != nil && p.State == PairActive {
				active++
			}
		}
		if active < 2 {
			return fmt.Errorf("pool %s has %d active pairs, a rebalance needs 2 or more: %w", size, active, ErrBadState)
		}
		ts := now()
		job = &Job{ID: jobID, Kind: JobRebalance, State: JobRunning, Step: StepPlan, Created: ts, Updated: ts,
			Log: []JobStep{{Step: StepRequested, At: ts}}, Data: map[string]string{RebalanceSize: size}}
		_, err = tx.TxPipelined(ctx, func(pl redis.Pipeliner) error {
			pl.Set(ctx, keyPoolRebalance(size), jobID, 0)
			return queueNewJob(ctx, pl, job)
		})
		return err
	}, keyPoolRebalance(size), keyPool(size))
	return job, existing, err
}
