package metadb

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// An export is a job of kind JobExport whose one step, dump, the keeper of
// the db's pair performs: it writes the db's keys, read from the pair's
// replica, as an RDB file in the object store (see keeper/export.go). The
// tenant's exports are listed in their own set, apart from the dbs, so an
// export outlives the db it was taken of: it is a backup. The db cannot be
// resized, moved or dropped while its export runs (the slot being read
// must stay the db's), and an export does not start while another job runs
// on the db.

// ExportObjectName is the object an export's file is stored under.
// Tenant names and job ids are valid object name segments.
func ExportObjectName(tenant, jobID string) string {
	return "exports/" + tenant + "/" + jobID + ".rdb"
}

// StartExport records the export job jobID of tenant's db index (step
// StepDump), lists it among the tenant's exports and names it in the db,
// in one transaction. It returns ErrNotFound for no such db, ErrBadState
// when the db is not active, is read-only or has a running job of any
// kind, and ErrTenantLimit when the tenant keeps limit exports already:
// nothing is recorded then.
func (s *Store) StartExport(ctx context.Context, tenant string, index int, jobID string, limit int) (*Job, error) {
	var job *Job
	err := s.txn(ctx, nil, func(tx *redis.Tx) error {
		db, err := getDB(ctx, tx, tenant, index)
		if err != nil {
			return err
		}
		if err := importable(ctx, tx, db); err != nil {
			return err
		}
		n, err := tx.ZCard(ctx, keyTenantExports(tenant)).Result()
		if err != nil {
			return err
		}
		if n >= int64(limit) {
			return fmt.Errorf("tenant %s keeps %d exports: %w", tenant, n, ErrTenantLimit)
		}
		ts := now()
		job = &Job{ID: jobID, Kind: JobExport, State: JobRunning, Step: StepDump, Tenant: tenant, Index: index,
			Pair: db.Pair, SlotDB: db.SlotDB, Created: ts, Updated: ts, Log: []JobStep{{Step: StepRequested, At: ts}},
			Data: map[string]string{ExportObject: ExportObjectName(tenant, jobID)}}
		db.Job = jobID
		dbJSON, _ := json.Marshal(db)
		_, err = tx.TxPipelined(ctx, func(pl redis.Pipeliner) error {
			pl.HSet(ctx, keyTenantDBs(tenant), field(index), dbJSON)
			pl.ZAdd(ctx, keyTenantExports(tenant), redis.Z{Score: float64(time.Now().UnixMilli()), Member: jobID})
			return queueNewJob(ctx, pl, job)
		})
		return err
	}, keyTenantDBs(tenant), keyTenantExports(tenant))
	return job, err
}

// Exports lists tenant's kept exports, oldest first.
func (s *Store) Exports(ctx context.Context, tenant string) ([]*Job, error) {
	ids, err := s.rdb.ZRange(ctx, keyTenantExports(tenant), 0, -1).Result()
	if err != nil {
		return nil, err
	}
	return s.jobs(ctx, ids)
}

// Export loads tenant's export id; ErrNotFound when tenant keeps no such
// export (another tenant's is not found alike).
func (s *Store) Export(ctx context.Context, tenant, id string) (*Job, error) {
	err := s.rdb.ZScore(ctx, keyTenantExports(tenant), id).Err()
	if errors.Is(err, redis.Nil) {
		return nil, fmt.Errorf("export %s: %w", id, ErrNotFound)
	}
	if err != nil {
		return nil, err
	}
	j, err := s.Job(ctx, id)
	if errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("export %s: %w", id, ErrNotFound)
	}
	return j, err
}

// DeleteExport removes tenant's export id from its list and returns its
// job, whose ExportObject the caller then deletes from the store. A
// running export ends failed in the same transaction: the keeper's dump
// stops, and a file it stores after that is deleted by the keeper. It
// returns ErrNotFound when tenant keeps no such export.
func (s *Store) DeleteExport(ctx context.Context, tenant, id string) (*Job, error) {
	var out *Job
	err := s.txn(ctx, nil, func(tx *redis.Tx) error {
		err := tx.ZScore(ctx, keyTenantExports(tenant), id).Err()
		if errors.Is(err, redis.Nil) {
			return fmt.Errorf("export %s: %w", id, ErrNotFound)
		}
		if err != nil {
			return err
		}
		j, err := getJSON[Job](ctx, tx, keyJob(id))
		if err != nil && !errors.Is(err, ErrNotFound) {
			return err
		}
		var b []byte
		if j != nil {
			ts := now()
			if j.Data == nil {
				j.Data = map[string]string{}
			}
			j.Data[ExportDeletedAt] = ts
			if j.State == JobRunning {
				j.State, j.Error, j.Updated = JobFailed, "the export was deleted before it finished", ts
			}
			if b, err = json.Marshal(j); err != nil {
				return err
			}
		}
		_, err = tx.TxPipelined(ctx, func(pl redis.Pipeliner) error {
			pl.ZRem(ctx, keyTenantExports(tenant), id)
			if b != nil {
				pl.Set(ctx, keyJob(id), b, 0)
				pl.SRem(ctx, keyJobsActive, id)
			}
			return nil
		})
		out = j
		return err
	}, keyTenantExports(tenant), keyJob(id))
	if err == nil && out == nil {
		out = &Job{ID: id, Kind: JobExport, Tenant: tenant, Data: map[string]string{ExportObject: ExportObjectName(tenant, id)}}
	}
	return out, err
}
