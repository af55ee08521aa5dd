package metadb

import (
	"errors"
	"testing"
)

// TestImportLifecycle: an import starts only on an active db without a
// running job; while the db is read-only, a second import, a resize and a
// drop are refused; a cut-over request and a cancellation are recorded
// once and refuse each other's late arrival; EndRelease ends the job once
// and deletes the password.
func TestImportLifecycle(t *testing.T) {
	s, _ := newStore(t)
	ctx := testCtx(t)
	mustTenant(t, s, "acme")
	pair := addPair(t, s, "64M", 4)
	db := mustActiveDB(t, s, "acme", pair, "create-1")
	data := func() map[string]string {
		return map[string]string{ImportSource: "redis://h:1", ImportSourceDB: "0", ImportPassword: "pw"}
	}
	if _, err := s.StartImport(ctx, "acme", 9, "imp-0", data()); !errors.Is(err, ErrNotFound) {
		t.Fatalf("import into no db: %v, want ErrNotFound", err)
	}
	j, err := s.StartImport(ctx, "acme", db.Index, "imp-1", data())
	if err != nil || j.Step != StepReadOnly || j.Pair != pair.ID || j.SlotDB != db.SlotDB {
		t.Fatalf("start: %+v, %v", j, err)
	}
	if _, err := s.StartImport(ctx, "acme", db.Index, "imp-2", data()); !errors.Is(err, ErrBadState) {
		t.Fatalf("second import: %v, want ErrBadState", err)
	}
	if _, err := s.SetReadOnly(ctx, nil, "test", "acme", db.Index, ReadOnlyImporting); err != nil {
		t.Fatal(err)
	}
	if _, err := s.StartResize(ctx, "acme", db.Index, "256M", 256<<20, "resize-1"); !errors.Is(err, ErrBadState) {
		t.Fatalf("resize of a read-only db: %v, want ErrBadState", err)
	}
	if _, err := s.StartDrop(ctx, "acme", db.Index, "drop-1"); !errors.Is(err, ErrBadState) {
		t.Fatalf("drop of a read-only db: %v, want ErrBadState", err)
	}
	if _, err := s.RequestImportCutover(ctx, "other", db.Index, "imp-1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("another tenant's cut-over: %v, want ErrNotFound", err)
	}
	j1, err := s.RequestImportCutover(ctx, "acme", db.Index, "imp-1")
	if err != nil || j1.Data[ImportCutoverAt] == "" {
		t.Fatalf("cut-over: %+v, %v", j1, err)
	}
	j2, _ := s.RequestImportCutover(ctx, "acme", db.Index, "imp-1")
	if j2.Data[ImportCutoverAt] != j1.Data[ImportCutoverAt] {
		t.Fatal("a second cut-over request changed the first's time")
	}
	// Cancelling is possible until the cut-over is done (release), not after.
	if _, err := s.UpdateJob(ctx, nil, "imp-1", func(j *Job) error { j.Step = StepRelease; return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CancelImport(ctx, "acme", db.Index, "imp-1"); !errors.Is(err, ErrBadState) {
		t.Fatalf("cancel at release: %v, want ErrBadState", err)
	}
	for range 2 {
		if _, err := s.EndRelease(ctx, nil, "imp-1", ""); err != nil {
			t.Fatal(err)
		}
	}
	end, _ := s.Job(ctx, "imp-1")
	if end.State != JobDone || end.Data[ImportPassword] != "" || len(end.Log) != 2 {
		t.Fatalf("ended job: %+v", end)
	}
	active, _ := s.ActiveJobs(ctx)
	if len(active) != 0 {
		t.Fatalf("active jobs after the end: %d", len(active))
	}
	if _, err := s.SetReadOnly(ctx, nil, "test", "acme", db.Index, ""); err != nil {
		t.Fatal(err)
	}
	// A new import may start; cancelled, a cut-over is refused.
	if _, err := s.StartImport(ctx, "acme", db.Index, "imp-3", data()); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CancelImport(ctx, "acme", db.Index, "imp-3"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.RequestImportCutover(ctx, "acme", db.Index, "imp-3"); !errors.Is(err, ErrBadState) {
		t.Fatalf("cut-over after cancel: %v, want ErrBadState", err)
	}
}
