package metadb

import (
	"context"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"
)

// ReadOnlyRestoring is the read-only reason of a db a restore fills.
const ReadOnlyRestoring = "restoring"

// StartRestore records the restore job of an active tenant db (step
// StepCheck) with data (the file, see the Restore* fields), in one
// transaction, and names the job in the db. The db keeps taking writes
// until the check passed and the master made it read-only. It returns
// ErrNotFound for no such db and ErrBadState when the db is not active, is
// read-only, or has a running job of any kind: nothing is recorded then.
func (s *Store) StartRestore(ctx context.Context, tenant string, index int, jobID string, data map[string]string) (*Job, error) {
	return s.startFillJob(ctx, JobRestore, StepCheck, tenant, index, jobID, data)
}

// RefuseRestore ends restore jobID, still at check, as failed because its
// file was refused: refusal is RestoreTooBig or RestoreCorrupt, why the
// tenant's explanation. Nothing was written to the db. A job that moved on
// or ended is left as it is; the job as recorded is returned.
func (s *Store) RefuseRestore(ctx context.Context, jobID, refusal, why string) (*Job, error) {
	return s.UpdateJob(ctx, nil, jobID, func(j *Job) error {
		if j.State != JobRunning || j.Step != StepCheck {
			return nil
		}
		if j.Data == nil {
			j.Data = map[string]string{}
		}
		j.Data[RestoreRefusal] = refusal
		j.Log = append(j.Log, JobStep{Step: StepCheck, At: now(), Note: refusal})
		j.State, j.Error = JobFailed, why
		return nil
	})
}

// slotInUse refuses, with ErrBadState, a change of a db's slot (a resize,
// a move, a drop) while a job of the db reads it (an export) or fills it
// (an import or a restore, from its start, before the db is read-only, to
// its end).
func slotInUse(ctx context.Context, tx *redis.Tx, db *DB) error {
	if db.Job == "" {
		return nil
	}
	j, err := getJSON[Job](ctx, tx, keyJob(db.Job))
	if errors.Is(err, ErrNotFound) {
		return nil
	}
	if err != nil || j.State != JobRunning {
		return err
	}
	switch j.Kind {
	case JobExport:
		return fmt.Errorf("db %d is being exported (job %s): wait for the export to finish, or delete it: %w", db.Index, j.ID, ErrBadState)
	case JobImport, JobRestore:
		return fmt.Errorf("db %d has a running %s job %s: %w", db.Index, j.Kind, j.ID, ErrBadState)
	}
	return nil
}
