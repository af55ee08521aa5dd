package metadb

import (
	"errors"
	"testing"

	"github.com/granary-db/granary/proto/buspb"
)

// TestResizeRecords walks a resize's records: start (refusals first),
// reserve (idempotent), an abort that gives the target back, then a full
// run whose old slot is freed exactly once.
func TestResizeRecords(t *testing.T) {
	s, _ := newStore(t)
	ctx := testCtx(t)
	small := addPair(t, s, "64M", 2)
	big := addPair(t, s, "256M", 2)
	mustTenant(t, s, "acme")
	db := mustActiveDB(t, s, "acme", small, "create-1")

	for _, tc := range []struct {
		name  string
		size  string
		quota int64
		used  int64
		want  error
	}{
		{"same size", "64M", 64 << 20, 0, ErrBadState},
		{"shrink that does not fit", "32M", 32 << 20, 40 << 20, ErrNoFit},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := s.UpdateDB(ctx, nil, "test", "acme", db.Index, func(d *DB) ([]*buspb.Envelope, error) {
				d.UsedBytes = tc.used
				return nil, nil
			}); err != nil {
				t.Fatal(err)
			}
			if _, err := s.StartResize(ctx, "acme", db.Index, tc.size, tc.quota, "r-"+tc.size); !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
		})
	}
	if _, err := s.UpdateDB(ctx, nil, "test", "acme", db.Index, func(d *DB) ([]*buspb.Envelope, error) { d.UsedBytes = 0; return nil, nil }); err != nil {
		t.Fatal(err)
	}

	free := func(p *Pair) int {
		f, err := s.FreeSlots(ctx, p.ID)
		if err != nil {
			t.Fatal(err)
		}
		return len(f)
	}
	// Start, reserve twice (one slot taken), abort: all back.
	if _, err := s.StartResize(ctx, "acme", db.Index, "256M", 256<<20, "r1"); err != nil {
		t.Fatal(err)
	}
	j1, err := s.ReserveResizeSlot(ctx, nil, "r1", big)
	if err != nil {
		t.Fatal(err)
	}
	j2, err := s.ReserveResizeSlot(ctx, nil, "r1", big)
	if err != nil || j2.Data[ResizeToSlot] != j1.Data[ResizeToSlot] || free(big) != 1 {
		t.Fatalf("second reserve: %v slot %s vs %s, %d free; want the same slot, 1 free", err, j2.Data[ResizeToSlot], j1.Data[ResizeToSlot], free(big))
	}
	if err := s.AbortResize(ctx, nil, "r1", "test"); err != nil {
		t.Fatal(err)
	}
	d, _ := s.DB(ctx, "acme", db.Index)
	if j, _ := s.Job(ctx, "r1"); j.State != JobFailed || d.State != DBActive || free(big) != 2 {
		t.Fatalf("after abort: job %s, db %s, %d free; want failed, active, 2 free", j.State, d.State, free(big))
	}

	// A full run: switch by hand, then finish twice.
	if _, err := s.StartResize(ctx, "acme", db.Index, "256M", 256<<20, "r2"); err != nil {
		t.Fatal(err)
	}
	j, err := s.ReserveResizeSlot(ctx, nil, "r2", big)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.FinishResize(ctx, nil, "r2"); !errors.Is(err, ErrBadState) {
		t.Fatalf("finish before the switch: %v, want ErrBadState", err)
	}
	tp, ts, _ := ResizeTarget(j)
	if _, err := s.UpdateDB(ctx, nil, "test", "acme", db.Index, func(d *DB) ([]*buspb.Envelope, error) {
		d.Pair, d.SlotDB, d.Size, d.State = tp, ts, "256M", DBActive
		return nil, nil
	}); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 2; i++ {
		if err := s.FinishResize(ctx, nil, "r2"); err != nil {
			t.Fatal(err)
		}
	}
	owners, _ := s.SlotOwners(ctx, small.ID)
	if free(small) != 2 || len(owners) != 0 || free(big) != 1 {
		t.Fatalf("after finish: small %d free %v owners, big %d free; want 2, none, 1", free(small), owners, free(big))
	}
	if j, _ := s.Job(ctx, "r2"); j.State != JobDone {
		t.Fatalf("job %s, want done", j.State)
	}
}
