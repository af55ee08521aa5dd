package metadb

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/granary-db/granary/pools"
	"github.com/granary-db/granary/proto/buspb"
	"github.com/redis/go-redis/v9"
)

// ErrNoFit: a shrink whose measured data does not fit the smaller size.
var ErrNoFit = errors.New("the db's data does not fit the target size")

// ResizeTarget is the reserved target of a resize job; ok is false before
// the reserve step.
func ResizeTarget(j *Job) (pair string, slot int, ok bool) {
	pair = j.Data[ResizeToPair]
	s, err := strconv.Atoi(j.Data[ResizeToSlot])
	return pair, s, pair != "" && err == nil
}

// StartResize marks an active db as resizing to size (quota bytes) and
// records its resize job (step StepReserve), in one transaction. Resizing a
// db that is already resizing returns its job. It returns ErrBadState
// unless the db is active, while it is exported, or when it already has
// that size, and ErrNoFit when its last measured use exceeds the target
// quota: nothing moves then.
func (s *Store) StartResize(ctx context.Context, tenant string, index int, size string, quota int64, jobID string) (*Job, error) {
	return s.startResize(ctx, tenant, index, size, quota, jobID, "", false)
}

// StartMove is StartResize to the size the db already has: the resize
// machinery moves it to a slot of another pair (the reserve step never
// picks the source pair), of toPair when it is not "". A drain and a
// rebalance move their dbs with it.
func (s *Store) StartMove(ctx context.Context, tenant string, index int, size string, quota int64, jobID, toPair string) (*Job, error) {
	return s.startResize(ctx, tenant, index, size, quota, jobID, toPair, true)
}

func (s *Store) startResize(ctx context.Context, tenant string, index int, size string, quota int64, jobID, toPair string, move bool) (*Job, error) {
	var job *Job
	err := s.txn(ctx, nil, func(tx *redis.Tx) error {
		db, err := getDB(ctx, tx, tenant, index)
		if err != nil {
			return err
		}
		if db.State == DBResizing {
			if job, err = getJSON[Job](ctx, tx, keyJob(db.Job)); err != nil {
				return err
			}
			if job.Data[ResizeToSize] != size {
				return fmt.Errorf("db %d is already being resized to %s: %w", index, job.Data[ResizeToSize], ErrBadState)
			}
			return nil
		}
		if db.State != DBActive {
			return fmt.Errorf("db %d is %s: %w", index, db.State, ErrBadState)
		}
		if db.ReadOnly != "" { // an import or a restore is filling it
			return fmt.Errorf("db %d is read-only while %s: %w", index, db.ReadOnly, ErrBadState)
		}
		if err := slotInUse(ctx, tx, db); err != nil {
			return err
		}
		if db.Size == size && !move {
			return fmt.Errorf("db %d is already %s: %w", index, size, ErrBadState)
		}
		if db.UsedBytes > quota && !move { // a move keeps the size: even an over-quota db moves
			return fmt.Errorf("db %d holds %d bytes, more than the %d of %s: %w", index, db.UsedBytes, quota, size, ErrNoFit)
		}
		ts := now()
		job = &Job{ID: jobID, Kind: JobResize, State: JobRunning, Step: StepReserve, Tenant: tenant, Index: index,
			Pair: db.Pair, SlotDB: db.SlotDB, Created: ts, Updated: ts, Log: []JobStep{{Step: StepRequested, At: ts}},
			Data: map[string]string{ResizeToSize: size, ResizeToQuota: strconv.FormatInt(quota, 10)}}
		if toPair != "" {
			job.Data[ResizeWantPair] = toPair
		}
		db.State, db.Job = DBResizing, jobID
		dbJSON, _ := json.Marshal(db)
		_, err = tx.TxPipelined(ctx, func(pl redis.Pipeliner) error {
			pl.HSet(ctx, keyTenantDBs(tenant), field(index), dbJSON)
			return queueNewJob(ctx, pl, job)
		})
		return err
	}, keyTenantDBs(tenant))
	return job, err
}

// ReserveResizeSlot takes a free slot of pair for the resize job and
// records it in the job, atomically: the slot's owner becomes the db, so
// no create can take it. A job that already has its target keeps it. It
// returns an error wrapping pools.ErrNoCapacity when the pair has no free
// slot or is no longer active (the caller re-picks a pair) and ErrNotLeader for a deposed master.
func (s *Store) ReserveResizeSlot(ctx context.Context, f *Fence, jobID string, pair *Pair) (*Job, error) {
	var out *Job
	err := s.txn(ctx, f, func(tx *redis.Tx) error {
		job, err := getJSON[Job](ctx, tx, keyJob(jobID))
		if err != nil {
			return err
		}
		if _, _, ok := ResizeTarget(job); ok || job.State != JobRunning {
			out = job
			return nil
		}
		if job.Data == nil {
			job.Data = map[string]string{}
		}
		// The pair as it is now, not as it was picked: a drain that began
		// since the pick must not get a new db on its pair.
		p, err := getJSON[Pair](ctx, tx, keyPair(pair.ID))
		if errors.Is(err, ErrNotFound) || (err == nil && p.State != PairActive) {
			return fmt.Errorf("pair %s takes no new db: %w", pair.ID, pools.ErrNoCapacity)
		}
		if err != nil {
			return err
		}
		slot, err := tx.SRandMember(ctx, keyPairFree(pair.ID)).Result()
		if errors.Is(err, redis.Nil) {
			return fmt.Errorf("pair %s: %w", pair.ID, pools.ErrNoCapacity)
		}
		if err != nil {
			return err
		}
		job.Data[ResizeToPair], job.Data[ResizeToSlot] = pair.ID, slot
		job.Updated = now()
		b, _ := json.Marshal(job)
		_, err = tx.TxPipelined(ctx, func(pl redis.Pipeliner) error {
			pl.SRem(ctx, keyPairFree(pair.ID), slot)
			pl.HSet(ctx, keyPairOwners(pair.ID), slot, job.Tenant+"/"+strconv.Itoa(job.Index))
			pl.Set(ctx, keyJob(jobID), b, 0)
			return nil
		})
		out = job
		return err
	}, keyJob(jobID), keyPair(pair.ID), keyPairFree(pair.ID), keyPairOwners(pair.ID))
	return out, err
}

// AbortResize fails a resize job that has not switched yet: the db goes
// back to active on its old slot, its hold is cleared and a reserved target
// slot goes back to its free list, in one transaction.
func (s *Store) AbortResize(ctx context.Context, f *Fence, jobID, why string) error {
	j0, err := s.Job(ctx, jobID)
	if err != nil {
		return err
	}
	keys := []string{keyJob(jobID), keyTenantDBs(j0.Tenant), keyVersion}
	if p, _, ok := ResizeTarget(j0); ok {
		keys = append(keys, keyPairOwners(p))
	}
	return s.txn(ctx, f, func(tx *redis.Tx) error {
		job, err := getJSON[Job](ctx, tx, keyJob(jobID))
		if err != nil || job.State != JobRunning {
			return err
		}
		db, err := getDB(ctx, tx, job.Tenant, job.Index)
		if err != nil && !errors.Is(err, ErrNotFound) {
			return err
		}
		if db != nil && (db.Pair != job.Pair || db.SlotDB != job.SlotDB) {
			return fmt.Errorf("resize %s already switched: %w", jobID, ErrBadState)
		}
		owner := job.Tenant + "/" + strconv.Itoa(job.Index)
		tp, ts, reserved := ResizeTarget(job)
		var cur string
		if reserved {
			if cur, err = tx.HGet(ctx, keyPairOwners(tp), field(ts)).Result(); err != nil && !errors.Is(err, redis.Nil) {
				return err
			}
		}
		job.State, job.Error, job.Updated = JobFailed, why, now()
		jobJSON, _ := json.Marshal(job)
		// A hold the job set is released on the bus too: proxies keep a
		// hold until a WriteHold ends it, and one past its deadline
		// refuses the db's writes.
		var msgs []*buspb.Envelope
		if db != nil && db.Job == jobID && db.HoldJob == jobID {
			msgs = append(msgs, &buspb.Envelope{Payload: &buspb.Envelope_WriteHold{WriteHold: &buspb.WriteHold{
				Tenant: job.Tenant, Index: uint32(job.Index), Hold: false, Job: jobID}}})
		}
		queue, err := announce(ctx, tx, "metadb/abort", msgs)
		if err != nil {
			return err
		}
		_, err = tx.TxPipelined(ctx, func(pl redis.Pipeliner) error {
			queue(pl)
			if db != nil && db.Job == jobID {
				db.State, db.HoldJob, db.HoldUntil = DBActive, "", 0
				b, _ := json.Marshal(db)
				pl.HSet(ctx, keyTenantDBs(job.Tenant), field(job.Index), b)
			}
			if reserved && cur == owner {
				pl.HDel(ctx, keyPairOwners(tp), field(ts))
				pl.SAdd(ctx, keyPairFree(tp), ts)
			}
			pl.Set(ctx, keyJob(jobID), jobJSON, 0)
			pl.SRem(ctx, keyJobsActive, jobID)
			return nil
		})
		return err
	}, keys...)
}

// FinishResize ends a switched resize job: the old slot goes back to its
// pair's free list and the job is done, in one transaction, so the slot is
// freed exactly once even if two masters race (the fence refuses the
// deposed one). The db must already be on its new slot.
func (s *Store) FinishResize(ctx context.Context, f *Fence, jobID string) error {
	j0, err := s.Job(ctx, jobID)
	if err != nil {
		return err
	}
	return s.txn(ctx, f, func(tx *redis.Tx) error {
		job, err := getJSON[Job](ctx, tx, keyJob(jobID))
		if err != nil || job.State != JobRunning {
			return err
		}
		db, err := getDB(ctx, tx, job.Tenant, job.Index)
		if err != nil {
			return err
		}
		if db.Pair == job.Pair && db.SlotDB == job.SlotDB {
			return fmt.Errorf("resize %s has not switched: %w", jobID, ErrBadState)
		}
		owner := job.Tenant + "/" + strconv.Itoa(job.Index)
		cur, err := tx.HGet(ctx, keyPairOwners(job.Pair), field(job.SlotDB)).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return err
		}
		ts := now()
		job.finish(StepFreeOld, f.holder(), ts)
		jobJSON, _ := json.Marshal(job)
		_, err = tx.TxPipelined(ctx, func(pl redis.Pipeliner) error {
			if cur == owner {
				pl.HDel(ctx, keyPairOwners(job.Pair), field(job.SlotDB))
				pl.SAdd(ctx, keyPairFree(job.Pair), job.SlotDB)
			}
			if db.Job == jobID {
				db.Job = ""
				b, _ := json.Marshal(db)
				pl.HSet(ctx, keyTenantDBs(job.Tenant), field(job.Index), b)
			}
			pl.Set(ctx, keyJob(jobID), jobJSON, 0)
			pl.SRem(ctx, keyJobsActive, jobID)
			return nil
		})
		return err
	}, keyJob(jobID), keyPairOwners(j0.Pair), keyTenantDBs(j0.Tenant))
}
