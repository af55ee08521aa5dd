package metadb

import (
	"context"
	"encoding/json"
	"sort"
	"time"

	"github.com/redis/go-redis/v9"
)

// Job loads one job; ErrNotFound if there is none.
func (s *Store) Job(ctx context.Context, id string) (*Job, error) {
	return getJSON[Job](ctx, s.rdb, keyJob(id))
}

// ActiveJobs loads the jobs that are neither done nor failed, oldest first.
func (s *Store) ActiveJobs(ctx context.Context) ([]*Job, error) {
	ids, err := s.rdb.SMembers(ctx, keyJobsActive).Result()
	if err != nil {
		return nil, err
	}
	return s.jobs(ctx, ids)
}

// Jobs loads the newest limit jobs, newest first.
func (s *Store) Jobs(ctx context.Context, limit int) ([]*Job, error) {
	ids, err := s.rdb.ZRevRange(ctx, keyJobs, 0, int64(limit-1)).Result()
	if err != nil {
		return nil, err
	}
	jobs, err := s.jobs(ctx, ids)
	if err != nil {
		return nil, err
	}
	sort.SliceStable(jobs, func(i, j int) bool { return jobs[i].Created > jobs[j].Created })
	return jobs, nil
}

func (s *Store) jobs(ctx context.Context, ids []string) ([]*Job, error) {
	keys := make([]string, len(ids))
	for i, id := range ids {
		keys[i] = keyJob(id)
	}
	jobs, err := mgetJSON[Job](ctx, s.rdb, keys)
	if err != nil {
		return nil, err
	}
	sort.SliceStable(jobs, func(i, j int) bool { return jobs[i].Created < jobs[j].Created })
	return jobs, nil
}

// UpdateJob changes one job through fn under an optimistic transaction,
// retried on conflict. With a fence, only the leading master may change it.
// A job that fn moves to done or failed leaves the active set.
func (s *Store) UpdateJob(ctx context.Context, f *Fence, id string, fn func(*Job) error) (*Job, error) {
	var out *Job
	err := s.txn(ctx, f, func(tx *redis.Tx) error {
		j, err := getJSON[Job](ctx, tx, keyJob(id))
		if err != nil {
			return err
		}
		if err := fn(j); err != nil {
			return err
		}
		j.Updated = now()
		b, err := json.Marshal(j)
		if err != nil {
			return err
		}
		_, err = tx.TxPipelined(ctx, func(pl redis.Pipeliner) error {
			pl.Set(ctx, keyJob(id), b, 0)
			if j.State != JobRunning {
				pl.SRem(ctx, keyJobsActive, id)
			}
			return nil
		})
		out = j
		return err
	}, keyJob(id))
	return out, err
}

// queueNewJob queues, inside a transaction, the writes that record a new
// job: the record, its place in the job list and in the active set.
func queueNewJob(ctx context.Context, pl redis.Pipeliner, job *Job) error {
	b, err := json.Marshal(job)
	if err != nil {
		return err
	}
	pl.Set(ctx, keyJob(job.ID), b, 0)
	pl.ZAdd(ctx, keyJobs, redis.Z{Score: float64(time.Now().UnixMilli()), Member: job.ID})
	pl.SAdd(ctx, keyJobsActive, job.ID)
	return nil
}
