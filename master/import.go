package master

import (
	"context"
	"errors"
	"fmt"

	"github.com/granary-db/granary/metadb"
)

// The master's steps of an import job (see metadb/jobspec.go and
// keeper/import.go): before the keeper fills the db, every proxy must
// refuse its writes (readonly); after the cut-over, or a cancellation, the
// db takes writes again and the job ends, forgetting the source's
// password (release). Both are idempotent: SetReadOnly to the state the db
// already has changes nothing, and EndRelease leaves an ended job alone.

// importCancelled is the error of a cancelled import; the keys copied so
// far stay in the db.
const importCancelled = "cancelled by the tenant: the keys copied so far are left in the db"

// importReadOnly makes the db read-only and waits for every live proxy to
// apply it. A cancellation that came first skips to release; a db taken
// by another job meanwhile fails the import.
func (m *Master) importReadOnly(ctx context.Context, f *metadb.Fence, j *metadb.Job) (metadb.Step, error) {
	if j.Data[metadb.ImportCancelAt] != "" {
		return metadb.StepRelease, nil
	}
	return m.readOnlyFor(ctx, f, j, metadb.ReadOnlyImporting, metadb.StepSync)
}

// readOnlyFor is the readonly step of a job that replaces a db's content
// (import, restore): the db refuses writes (reason), every live proxy
// applied it, then the job goes on at next. A db dropped or taken by
// another job before that fails the job, and nothing was written.
func (m *Master) readOnlyFor(ctx context.Context, f *metadb.Fence, j *metadb.Job, reason string, next metadb.Step) (metadb.Step, error) {
	db, err := m.store.DB(ctx, j.Tenant, j.Index)
	if errors.Is(err, metadb.ErrNotFound) || (err == nil && (db.Job != j.ID || db.State != metadb.DBActive)) {
		m.failJob(ctx, f, j.ID, fmt.Sprintf("the db was dropped or taken by another job before the %s began", j.Kind))
		_, _ = m.store.UpdateJob(ctx, f, j.ID, func(cur *metadb.Job) error {
			delete(cur.Data, metadb.ImportPassword)
			return nil
		})
		return "", nil
	}
	if err != nil {
		return "", err
	}
	if _, err := m.store.SetReadOnly(ctx, f, m.sender(), j.Tenant, j.Index, reason); err != nil {
		return "", fmt.Errorf("set read-only: %w", err)
	}
	v, err := m.store.Version(ctx)
	if err != nil {
		return "", err
	}
	if err := m.waitAcks(ctx, v); err != nil {
		return "", err
	}
	return next, nil
}

// release is the last step of an import and of a restore: it clears the
// db's read-only state (published to proxies) and ends the job: done, or
// failed after an import's cancellation or a restore whose load gave up. EndRelease forgets an import's
// source password.
func (m *Master) release(ctx context.Context, f *metadb.Fence, j *metadb.Job) (metadb.Step, error) {
	if _, err := m.store.SetReadOnly(ctx, f, m.sender(), j.Tenant, j.Index, ""); err != nil && !errors.Is(err, metadb.ErrNotFound) {
		return "", fmt.Errorf("clear read-only: %w", err)
	}
	why := ""
	switch {
	case j.Kind == metadb.JobImport && j.Data[metadb.ImportCancelAt] != "":
		why = importCancelled
	case j.Kind == metadb.JobRestore:
		why = j.Data[metadb.RestoreFailure]
	}
	if _, err := m.store.EndRelease(ctx, f, j.ID, why); err != nil {
		return "", err
	}
	return "", nil
}

// restoreReadOnly is a restore's readonly step: its file passed the check,
// and the db now refuses writes before the keeper flushes and fills it.
func (m *Master) restoreReadOnly(ctx context.Context, f *metadb.Fence, j *metadb.Job) (metadb.Step, error) {
	return m.readOnlyFor(ctx, f, j, metadb.ReadOnlyRestoring, metadb.StepLoad)
}
