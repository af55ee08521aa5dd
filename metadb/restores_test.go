package metadb

import (
	"errors"
	"testing"
)

// TestRestoreLifecycle: a restore starts only on an active db without a
// running job; from its start (before the db is read-only) a second
// restore, an import, a resize, a drop and an export are refused; a refusal at check
// ends it failed once, with the refusal recorded and the db untouched; a
// restore that reached release ends done once, and the db may then be
// resized again. A running import, or a read-only db, refuses a restore.
func TestRestoreLifecycle(t *testing.T) {
	s, _ := newStore(t)
	ctx := testCtx(t)
	mustTenant(t, s, "acme")
	pair := addPair(t, s, "64M", 4)
	db := mustActiveDB(t, s, "acme", pair, "create-1")
	data := func() map[string]string {
		return map[string]string{RestoreObject: "uploads/acme/r.rdb", RestoreFrom: RestoreFromUpload}
	}
	if _, err := s.StartRestore(ctx, "acme", 9, "rst-0", data()); !errors.Is(err, ErrNotFound) {
		t.Fatalf("restore into no db: %v, want ErrNotFound", err)
	}
	j, err := s.StartRestore(ctx, "acme", db.Index, "rst-1", data())
	if err != nil || j.Kind != JobRestore || j.Step != StepCheck || j.Pair != pair.ID || j.SlotDB != db.SlotDB {
		t.Fatalf("start: %+v, %v", j, err)
	}
	refused := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, ErrBadState) {
			t.Fatalf("%s during a restore: %v, want ErrBadState", what, err)
		}
	}
	_, err = s.StartRestore(ctx, "acme", db.Index, "rst-2", data())
	refused("a second restore", err)
	_, err = s.StartImport(ctx, "acme", db.Index, "imp-1", map[string]string{ImportSource: "redis://h:1"})
	refused("an import", err)
	_, err = s.StartResize(ctx, "acme", db.Index, "256M", 256<<20, "resize-1")
	refused("a resize", err)
	_, err = s.StartDrop(ctx, "acme", db.Index, "drop-1")
	refused("a drop", err)
	_, err = s.StartExport(ctx, "acme", db.Index, "exp-1", 10)
	refused("an export", err)

	for range 2 {
		if _, err := s.RefuseRestore(ctx, "rst-1", RestoreTooBig, "too big"); err != nil {
			t.Fatal(err)
		}
	}
	end, _ := s.Job(ctx, "rst-1")
	if end.State != JobFailed || end.Data[RestoreRefusal] != RestoreTooBig || end.Error != "too big" || len(end.Log) != 2 {
		t.Fatalf("refused job: %+v", end)
	}
	after, _ := s.DB(ctx, "acme", db.Index)
	if after.ReadOnly != "" || after.State != DBActive {
		t.Fatalf("db after a refused restore: %+v", after)
	}

	// A restore that reached release ends done once.
	if _, err := s.StartRestore(ctx, "acme", db.Index, "rst-3", data()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UpdateJob(ctx, nil, "rst-3", func(j *Job) error { j.Step = StepRelease; return nil }); err != nil {
		t.Fatal(err)
	}
	if j, _ := s.RefuseRestore(ctx, "rst-3", RestoreCorrupt, "late"); j.State != JobRunning {
		t.Fatalf("a refusal past check ended the job: %+v", j)
	}
	for range 2 {
		if _, err := s.EndRelease(ctx, nil, "rst-3", ""); err != nil {
			t.Fatal(err)
		}
	}
	end, _ = s.Job(ctx, "rst-3")
	if end.State != JobDone || end.Step != StepDone || len(end.Log) != 2 {
		t.Fatalf("ended job: %+v", end)
	}
	if active, _ := s.ActiveJobs(ctx); len(active) != 0 {
		t.Fatalf("active jobs after the end: %d", len(active))
	}
	// An import, running or making the db read-only, refuses a restore.
	if _, err := s.StartImport(ctx, "acme", db.Index, "imp-2", map[string]string{ImportSource: "redis://h:1"}); err != nil {
		t.Fatal(err)
	}
	_, err = s.StartRestore(ctx, "acme", db.Index, "rst-4", data())
	if !errors.Is(err, ErrBadState) {
		t.Fatalf("a restore during an import: %v, want ErrBadState", err)
	}
	if _, err := s.UpdateJob(ctx, nil, "imp-2", func(j *Job) error { j.State = JobFailed; return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := s.SetReadOnly(ctx, nil, "test", "acme", db.Index, ReadOnlyImporting); err != nil {
		t.Fatal(err)
	}
	_, err = s.StartRestore(ctx, "acme", db.Index, "rst-5", data())
	if !errors.Is(err, ErrBadState) {
		t.Fatalf("a restore of a read-only db: %v, want ErrBadState", err)
	}
	if _, err := s.SetReadOnly(ctx, nil, "test", "acme", db.Index, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := s.StartResize(ctx, "acme", db.Index, "256M", 256<<20, "resize-2"); err != nil {
		t.Fatalf("resize after the restore: %v", err)
	}
}
