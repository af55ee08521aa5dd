package metadb

import (
	"errors"
	"fmt"
	"testing"
	"time"
)

// TestExportLifecycle: an export starts only on an active db without a
// running job and within the tenant's cap; while it runs, a second export,
// an import, a resize, a move and a drop of the db are refused; done, it
// frees the db for them, stays listed after the db is dropped, and only
// its tenant sees and deletes it.
func TestExportLifecycle(t *testing.T) {
	s, _ := newStore(t)
	ctx := testCtx(t)
	mustTenant(t, s, "acme")
	mustTenant(t, s, "other")
	pair := addPair(t, s, "64M", 4)
	db := mustActiveDB(t, s, "acme", pair, "create-1")
	if _, err := s.StartExport(ctx, "acme", 9, "exp-0", 16); !errors.Is(err, ErrNotFound) {
		t.Fatalf("export of no db: %v, want ErrNotFound", err)
	}
	j, err := s.StartExport(ctx, "acme", db.Index, "exp-1", 16)
	if err != nil || j.Kind != JobExport || j.Step != StepDump || j.Pair != pair.ID || j.SlotDB != db.SlotDB ||
		j.Data[ExportObject] != "exports/acme/exp-1.rdb" {
		t.Fatalf("start: %+v, %v", j, err)
	}
	for name, call := range map[string]func() error{
		"export": func() error { _, err := s.StartExport(ctx, "acme", db.Index, "exp-2", 16); return err },
		"import": func() error {
			_, err := s.StartImport(ctx, "acme", db.Index, "imp-1", map[string]string{ImportSource: "redis://h:1"})
			return err
		},
		"resize": func() error { _, err := s.StartResize(ctx, "acme", db.Index, "256M", 256<<20, "resize-1"); return err },
		"move":   func() error { _, err := s.StartMove(ctx, "acme", db.Index, "64M", 64<<20, "move-1", ""); return err },
		"drop":   func() error { _, err := s.StartDrop(ctx, "acme", db.Index, "drop-1"); return err },
	} {
		if err := call(); !errors.Is(err, ErrBadState) {
			t.Errorf("%s during an export: %v, want ErrBadState", name, err)
		}
	}
	if _, err := s.Export(ctx, "other", "exp-1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("another tenant's export: %v, want ErrNotFound", err)
	}
	if _, err := s.DeleteExport(ctx, "other", "exp-1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("another tenant's delete: %v, want ErrNotFound", err)
	}
	if _, err := s.UpdateJob(ctx, nil, "exp-1", func(j *Job) error {
		j.Advance(StepDump, StepDone, "keeper/k1", time.Now())
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.StartDrop(ctx, "acme", db.Index, "drop-1"); err != nil {
		t.Fatalf("drop after the export: %v", err)
	}
	if err := s.ReleaseSlot(ctx, nil, "drop-1"); err != nil {
		t.Fatal(err)
	}
	list, err := s.Exports(ctx, "acme")
	if err != nil || len(list) != 1 || list[0].ID != "exp-1" || list[0].State != JobDone {
		t.Fatalf("exports after the drop: %v, %v", list, err)
	}
	if l, _ := s.Exports(ctx, "other"); len(l) != 0 {
		t.Fatalf("other's exports: %v", l)
	}
	d, err := s.DeleteExport(ctx, "acme", "exp-1")
	if err != nil || d.Data[ExportObject] != "exports/acme/exp-1.rdb" || d.State != JobDone {
		t.Fatalf("delete: %+v, %v", d, err)
	}
	if _, err := s.Export(ctx, "acme", "exp-1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("deleted export: %v, want ErrNotFound", err)
	}
	if _, err := s.DeleteExport(ctx, "acme", "exp-1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second delete: %v, want ErrNotFound", err)
	}
}

// TestExportCapAndDeleteRunning: the tenant keeps at most limit exports
// (running ones count); deleting a running export fails its job, frees the
// db and makes room.
func TestExportCapAndDeleteRunning(t *testing.T) {
	s, _ := newStore(t)
	ctx := testCtx(t)
	mustTenant(t, s, "acme")
	pair := addPair(t, s, "64M", 4)
	db := mustActiveDB(t, s, "acme", pair, "create-1")
	for i := range 2 {
		id := fmt.Sprintf("exp-%d", i)
		if _, err := s.StartExport(ctx, "acme", db.Index, id, 2); err != nil {
			t.Fatal(err)
		}
		if i == 0 {
			if _, err := s.UpdateJob(ctx, nil, id, func(j *Job) error {
				j.Advance(StepDump, StepDone, "keeper/k1", time.Now())
				return nil
			}); err != nil {
				t.Fatal(err)
			}
		}
	}
	if _, err := s.StartExport(ctx, "acme", db.Index, "exp-9", 2); !errors.Is(err, ErrTenantLimit) && !errors.Is(err, ErrBadState) {
		t.Fatalf("third export: %v, want a refusal", err)
	}
	d, err := s.DeleteExport(ctx, "acme", "exp-1")
	if err != nil || d.State != JobFailed || d.Data[ExportDeletedAt] == "" {
		t.Fatalf("delete a running export: %+v, %v", d, err)
	}
	if a, _ := s.ActiveJobs(ctx); len(a) != 0 {
		t.Fatalf("active jobs after the delete: %v", a)
	}
	if _, err := s.StartExport(ctx, "acme", db.Index, "exp-2", 2); err != nil {
		t.Fatalf("export after the delete: %v", err)
	}
	if _, err := s.StartExport(ctx, "acme", db.Index, "exp-3", 2); !errors.Is(err, ErrTenantLimit) && !errors.Is(err, ErrBadState) {
		t.Fatalf("export over the cap: %v", err)
	}
	// Over the cap on a db with no running job: the cap is the reason.
	if _, err := s.UpdateJob(ctx, nil, "exp-2", func(j *Job) error {
		j.Advance(StepDump, StepDone, "keeper/k1", time.Now())
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.StartExport(ctx, "acme", db.Index, "exp-4", 2); !errors.Is(err, ErrTenantLimit) {
		t.Fatalf("export over the cap: %v, want ErrTenantLimit", err)
	}
}
