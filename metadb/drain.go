package metadb

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/granary-db/granary/pools"
	"github.com/redis/go-redis/v9"
)

// StartDrain marks an active pair as draining and records its drain job
// (step StepPlan), in one transaction: from then on no new db is placed on
// the pair, and the master moves its dbs off one resize at a time. A pair
// already draining returns its job (existing is true). It returns
// ErrNotFound for an unknown pair, ErrBadState for a pair that is not
// active or the last active pair of its pool, and an error wrapping
// pools.ErrNoCapacity when the pool's other active pairs have fewer free
// slots than the pair has dbs: nothing changes then.
func (s *Store) StartDrain(ctx context.Context, pairID, jobID string) (job *Job, existing bool, err error) {
	err = s.txn(ctx, nil, func(tx *redis.Tx) error {
		p, err := getJSON[Pair](ctx, tx, keyPair(pairID))
		if err != nil {
			return err
		}
		if p.State == PairDraining && p.Job != "" {
			job, err = getJSON[Job](ctx, tx, keyJob(p.Job))
			existing = err == nil
			return err
		}
		if p.State != PairActive {
			return fmt.Errorf("pair %s is %s, only an active pair can be drained: %w", p.ID, p.State, ErrBadState)
		}
		ids, err := tx.SMembers(ctx, keyPool(p.Size)).Result()
		if err != nil {
			return err
		}
		others, free := 0, int64(0)
		for _, id := range ids {
			if id == p.ID {
				continue
			}
			o, err := getJSON[Pair](ctx, tx, keyPair(id))
			if errors.Is(err, ErrNotFound) {
				continue
			}
			if err != nil {
				return err
			}
			if o.State != PairActive {
				continue
			}
			n, err := tx.SCard(ctx, keyPairFree(id)).Result()
			if err != nil {
				return err
			}
			others, free = others+1, free+n
		}
		if others == 0 {
			return fmt.Errorf("pair %s is the last active pair of pool %s: add a pair first: %w", p.ID, p.Size, ErrBadState)
		}
		used, err := tx.HLen(ctx, keyPairOwners(p.ID)).Result()
		if err != nil {
			return err
		}
		if used > free {
			return fmt.Errorf("pair %s holds %d dbs but the other active pairs of pool %s have %d free: %w",
				p.ID, used, p.Size, free, pools.ErrNoCapacity)
		}
		ts := now()
		job = &Job{ID: jobID, Kind: JobDrain, State: JobRunning, Step: StepPlan, Pair: p.ID, Created: ts, Updated: ts,
			Log: []JobStep{{Step: StepRequested, At: ts}}, Data: map[string]string{}}
		p.State, p.Job = PairDraining, jobID
		pairJSON, _ := json.Marshal(p)
		_, err = tx.TxPipelined(ctx, func(pl redis.Pipeliner) error {
			pl.Set(ctx, keyPair(p.ID), pairJSON, 0)
			return queueNewJob(ctx, pl, job)
		})
		return err
	}, keyPair(pairID), keyPairOwners(pairID))
	return job, existing, err
}

// FinishDrain ends a drain job whose pair has no db left: the pair becomes
// drained and the job done, in one transaction. It returns ErrBadState
// while the pair still owns a slot.
func (s *Store) FinishDrain(ctx context.Context, f *Fence, jobID string) error {
	return s.endDrain(ctx, f, jobID, func(tx *redis.Tx, job *Job, p *Pair) error {
		owners, err := tx.HLen(ctx, keyPairOwners(job.Pair)).Result()
		if err != nil {
			return err
		}
		if owners > 0 {
			return fmt.Errorf("pair %s still owns %d slots: %w", p.ID, owners, ErrBadState)
		}
		job.finish(StepMarkDrain, f.holder(), now())
		if p.Job == jobID {
			p.State = PairDrained
		}
		return nil
	})
}

// AbortDrain fails a drain job and puts its pair back to active (dbs
// already moved stay where they went), in one transaction.
func (s *Store) AbortDrain(ctx context.Context, f *Fence, jobID, why string) error {
	return s.endDrain(ctx, f, jobID, func(_ *redis.Tx, job *Job, p *Pair) error {
		job.State, job.Error, job.Updated = JobFailed, why, now()
		if p.Job == jobID {
			// A degraded pair (a failover came during the drain) stays
			// degraded; its replica's attach makes it active.
			if p.State == PairDraining {
				p.State = PairActive
			}
			p.Job = ""
		}
		return nil
	})
}

// endDrain ends a running drain job as end says, in one transaction with
// its pair: end changes the job (to done or failed) and the pair, and may
// refuse; both are then stored and the job leaves the active set. A job
// that already ended is left alone. The pair's slot owners are watched, so
// an end that read them cannot race a claim.
func (s *Store) endDrain(ctx context.Context, f *Fence, jobID string, end func(tx *redis.Tx, job *Job, p *Pair) error) error {
	j0, err := s.Job(ctx, jobID)
	if err != nil {
		return err
	}
	return s.txn(ctx, f, func(tx *redis.Tx) error {
		job, err := getJSON[Job](ctx, tx, keyJob(jobID))
		if err != nil || job.State != JobRunning {
			return err
		}
		p, err := getJSON[Pair](ctx, tx, keyPair(job.Pair))
		if err != nil {
			return err
		}
		if err := end(tx, job, p); err != nil {
			return err
		}
		jobJSON, _ := json.Marshal(job)
		pairJSON, _ := json.Marshal(p)
		_, err = tx.TxPipelined(ctx, func(pl redis.Pipeliner) error {
			pl.Set(ctx, keyPair(p.ID), pairJSON, 0)
			pl.Set(ctx, keyJob(jobID), jobJSON, 0)
			pl.SRem(ctx, keyJobsActive, jobID)
			return nil
		})
		return err
	}, keyJob(jobID), keyPair(j0.Pair), keyPairOwners(j0.Pair))
}

// DrainProgress reads a drain job's counts.
func DrainProgress(j *Job) (moved, total int) {
	moved, _ = strconv.Atoi(j.Data[DrainMoved])
	total, _ = strconv.Atoi(j.Data[DrainTotal])
	return moved, total
}
