package metadb

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// ReadOnlyImporting is the read-only reason of a db an import fills.
const ReadOnlyImporting = "importing"

// StartImport records the import job of an active tenant db (step
// StepReadOnly) with data (the source, its credentials and db, see the
// Import* fields), in one transaction, and names the job in the db. It
// returns ErrNotFound for no such db and ErrBadState when the db is not
// active, is read-only, or has a running job of any kind: nothing is
// recorded then.
func (s *Store) StartImport(ctx context.Context, tenant string, index int, jobID string, data map[string]string) (*Job, error) {
	return s.startFillJob(ctx, JobImport, StepReadOnly, tenant, index, jobID, data)
}

// startFillJob records a job of kind, at step, that replaces the content
// of an active tenant db (an import, a restore), in one transaction with
// the db naming it; importable says which dbs may take one.
func (s *Store) startFillJob(ctx context.Context, kind JobKind, step Step, tenant string, index int, jobID string, data map[string]string) (*Job, error) {
	var job *Job
	err := s.txn(ctx, nil, func(tx *redis.Tx) error {
		db, err := getDB(ctx, tx, tenant, index)
		if err != nil {
			return err
		}
		if err := importable(ctx, tx, db); err != nil {
			return err
		}
		ts := now()
		job = &Job{ID: jobID, Kind: kind, State: JobRunning, Step: step, Tenant: tenant, Index: index,
			Pair: db.Pair, SlotDB: db.SlotDB, Created: ts, Updated: ts, Log: []JobStep{{Step: StepRequested, At: ts}},
			Data: data}
		db.Job = jobID
		dbJSON, _ := json.Marshal(db)
		_, err = tx.TxPipelined(ctx, func(pl redis.Pipeliner) error {
			pl.HSet(ctx, keyTenantDBs(tenant), field(index), dbJSON)
			return queueNewJob(ctx, pl, job)
		})
		return err
	}, keyTenantDBs(tenant))
	return job, err
}

// importable refuses a db an import may not start on.
func importable(ctx context.Context, tx *redis.Tx, db *DB) error {
	if db.State != DBActive {
		return fmt.Errorf("db %d is %s: %w", db.Index, db.State, ErrBadState)
	}
	if db.ReadOnly != "" {
		return fmt.Errorf("db %d is read-only while %s: %w", db.Index, db.ReadOnly, ErrBadState)
	}
	if db.Job == "" {
		return nil
	}
	j, err := getJSON[Job](ctx, tx, keyJob(db.Job))
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil {
		return err
	}
	if j.State == JobRunning {
		return fmt.Errorf("db %d has a running %s job %s: %w", db.Index, j.Kind, j.ID, ErrBadState)
	}
	return nil
}

// importJob checks that j is tenant's import of db index.
func importJob(j *Job, tenant string, index int) error {
	if j.Kind != JobImport || j.Tenant != tenant || j.Index != index {
		return fmt.Errorf("no import %s of db %d: %w", j.ID, index, ErrNotFound)
	}
	return nil
}

// RequestImportCutover records the tenant's request to cut import jobID of
// db index over: the keeper finishes the copy as soon as it is in step.
// Asking again, or once the cut-over runs or is done, changes nothing and
// returns the job. It returns ErrNotFound when the job is not that db's
// import, and ErrBadState when it failed or was cancelled.
func (s *Store) RequestImportCutover(ctx context.Context, tenant string, index int, jobID string) (*Job, error) {
	return s.UpdateJob(ctx, nil, jobID, func(j *Job) error {
		if err := importJob(j, tenant, index); err != nil {
			return err
		}
		switch {
		case j.State == JobDone:
			return nil
		case j.State != JobRunning:
			return fmt.Errorf("import %s has %s: %w", jobID, j.State, ErrBadState)
		case j.Data[ImportCancelAt] != "":
			return fmt.Errorf("import %s is being cancelled: %w", jobID, ErrBadState)
		}
		if j.Data[ImportCutoverAt] == "" {
			j.Data[ImportCutoverAt] = now()
		}
		return nil
	})
}

// CancelImport records the tenant's cancellation of import jobID of db
// index: the copy stops, the db takes writes again and keeps the keys
// copied so far. A cut-over in flight may still finish first; the job
// ends failed, cancelled, either way. Cancelling again changes nothing. It
// returns ErrNotFound when the job is not that db's import, and
// ErrBadState once it has cut over (release) or ended.
func (s *Store) CancelImport(ctx context.Context, tenant string, index int, jobID string) (*Job, error) {
	return s.UpdateJob(ctx, nil, jobID, func(j *Job) error {
		if err := importJob(j, tenant, index); err != nil {
			return err
		}
		switch {
		case j.State != JobRunning:
			return fmt.Errorf("import %s has already ended (%s): %w", jobID, j.State, ErrBadState)
		case j.Data[ImportCancelAt] != "":
			return nil
		case j.Step == StepRelease:
			return fmt.Errorf("import %s has cut over already: %w", jobID, ErrBadState)
		}
		j.Data[ImportCancelAt] = now()
		return nil
	})
}

// EndRelease ends an import or a restore at its release step, after the
// master cleared the db's read-only state: done, or failed with why (why
// is "" for done), in one transaction. An import's source password is
// deleted with it. An ended job is left as it is.
func (s *Store) EndRelease(ctx context.Context, f *Fence, jobID, why string) (*Job, error) {
	return s.UpdateJob(ctx, f, jobID, func(j *Job) error {
		if j.State != JobRunning || j.Step != StepRelease {
			return nil
		}
		delete(j.Data, ImportPassword)
		ts := now()
		if why == "" {
			j.finish(StepRelease, f.holder(), ts)
			return nil
		}
		j.Log = append(j.Log, JobStep{Step: StepRelease, At: ts, By: f.holder()})
		j.State, j.Error = JobFailed, why
		return nil
	})
}
