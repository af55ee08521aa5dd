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
// already has changes nothing, and EndImport leaves an ended job alone.

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
	db, err := m.store.DB(ctx, j.Tenant, j.Index)
	if errors.Is(err, metadb.ErrNotFound) || (err == nil && (db.Job != j.ID || db.State != metadb.DBActive)) {
		m.failJob(ctx, f, j.ID, "the db was dropped or taken by another job before the import began")
		_, _ = m.store.UpdateJob(ctx, f, j.ID, func(cur *metadb.Job) error {
			delete(cur.Data, metadb.ImportPassword)
			return nil
		})
		return "", nil
	}
	if err != nil {
		return "", err
	}
	if _, err := m.store.SetReadOnly(ctx, f, m.sender(), j.Tenant, j.Index, metadb.ReadOnlyImporting); err != nil {
		return "", fmt.Errorf("set read-only: %w", err)
	}
	v, err := m.store.Version(ctx)
	if err != nil {
		return "", err
	}
	if err := m.waitAcks(ctx, v); err != nil {
		return "", err
	}
	return metadb.StepSync, nil
}

// importRelease clears the db's read-only state (published to proxies) and
// ends the job: done after a cut-over, failed after a cancellation.
func (m *Master) importRelease(ctx context.Context, f *metadb.Fence, j *metadb.Job) (metadb.Step, error) {
	if _, err := m.store.SetReadOnly(ctx, f, m.sender(), j.Tenant, j.Index, ""); err != nil && !errors.Is(err, metadb.ErrNotFound) {
		return "", fmt.Errorf("clear read-only: %w", err)
	}
	why := ""
	if j.Data[metadb.ImportCancelAt] != "" {
		why = importCancelled
	}
	if _, err := m.store.EndImport(ctx, f, j.ID, why); err != nil {
		return "", err
	}
	return "", nil
}
