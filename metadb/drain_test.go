package metadb

import (
	"errors"
	"testing"
	"time"

	"github.com/granary-db/granary/pools"
)

// TestStartDrain: the refusals (unknown pair, the last active pair, too
// little room elsewhere) record nothing; a drain marks the pair draining
// with its job, a second request gets that job back, and a failover's
// replica replacement on the pair leaves it draining, not active.
func TestStartDrain(t *testing.T) {
	s, _ := newStore(t)
	ctx := testCtx(t)
	p, _ := failoverFixture(t, s)
	if _, _, err := s.StartDrain(ctx, "p404", "d0"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown pair: %v", err)
	}
	if _, _, err := s.StartDrain(ctx, p.ID, "d0"); !errors.Is(err, ErrBadState) {
		t.Fatalf("last pair: %v", err)
	}
	full := addPair(t, s, "64M", 1)
	mustActiveDB(t, s, "acme", full, "c2")
	if _, _, err := s.StartDrain(ctx, p.ID, "d0"); !errors.Is(err, pools.ErrNoCapacity) {
		t.Fatalf("no room: %v", err)
	}
	if _, err := s.Job(ctx, "d0"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a refused drain recorded a job: %v", err)
	}
	addPair(t, s, "64M", 2)
	job, existing, err := s.StartDrain(ctx, p.ID, "d1")
	if err != nil || existing || job.Kind != JobDrain || job.Step != StepPlan || job.Pair != p.ID {
		t.Fatalf("drain: %+v %v %v", job, existing, err)
	}
	if again, existing, err := s.StartDrain(ctx, p.ID, "d2"); err != nil || !existing || again.ID != "d1" {
		t.Fatalf("second drain: %+v %v %v", again, existing, err)
	}

	if err := s.Heartbeat(ctx, KindKeeper, Member{ID: "k1"}, time.Minute); err != nil {
		t.Fatal(err)
	}
	_, rj, err := s.Promote(ctx, Promotion{Keeper: "k1", Pair: p.ID, OldMaster: p.Master, NewMaster: p.Replica, Reason: "test"})
	if err != nil || rj == nil {
		t.Fatalf("promote: %v %v", rj, err)
	}
	if _, err := s.TakeSpare(ctx, nil, rj.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.FinishReplace(ctx, nil, rj.ID); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Pair(ctx, p.ID); got.State != PairDraining || got.Job != "d1" {
		t.Fatalf("pair after a replica replacement mid-drain: %+v", got)
	}
}

// TestDrainAbortedDuringFailover: a failover comes during a drain (the pair
// is degraded), its move fails and the drain is aborted; once the spare is
// attached the pair is active again and free of the failed drain, so it
// can be drained anew, instead of staying draining with nothing to drain.
func TestDrainAbortedDuringFailover(t *testing.T) {
	s, _ := newStore(t)
	ctx := testCtx(t)
	p, _ := failoverFixture(t, s)
	addPair(t, s, "64M", 2)
	if _, _, err := s.StartDrain(ctx, p.ID, "d1"); err != nil {
		t.Fatal(err)
	}
	if err := s.Heartbeat(ctx, KindKeeper, Member{ID: "k1"}, time.Minute); err != nil {
		t.Fatal(err)
	}
	_, rj, err := s.Promote(ctx, Promotion{Keeper: "k1", Pair: p.ID, OldMaster: p.Master, NewMaster: p.Replica, Reason: "test"})
	if err != nil || rj == nil {
		t.Fatalf("promote: %v %v", rj, err)
	}
	if err := s.AbortDrain(ctx, nil, "d1", "the move failed"); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Pair(ctx, p.ID); got.State != PairDegraded || got.Job != "" {
		t.Fatalf("pair after the drain aborted during the failover: state %q job %q, want degraded and no job", got.State, got.Job)
	}
	if _, err := s.TakeSpare(ctx, nil, rj.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.FinishReplace(ctx, nil, rj.ID); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.Pair(ctx, p.ID); got.State != PairActive || got.Job != "" {
		t.Fatalf("pair after its replica was attached: state %q job %q, want active and no job", got.State, got.Job)
	}
	if job, existing, err := s.StartDrain(ctx, p.ID, "d2"); err != nil || existing || job.ID != "d2" {
		t.Fatalf("a new drain: %+v %v %v", job, existing, err)
	}
}

// TestNoNewDBOnDrainingPair: a create or a resize that picked a pair just
// before its drain began cannot claim a slot on it: the claim sees the
// pair's state as it is when it claims and refuses with ErrNoCapacity (the
// caller re-picks), so a drain never misses a db placed behind its back.
func TestNoNewDBOnDrainingPair(t *testing.T) {
	s, _ := newStore(t)
	ctx := testCtx(t)
	_, db := failoverFixture(t, s)
	other := addPair(t, s, "64M", 2)
	if _, _, err := s.StartDrain(ctx, other.ID, "d1"); err != nil {
		t.Fatal(err)
	}
	before, err := s.FreeSlots(ctx, other.ID)
	if err != nil {
		t.Fatal(err)
	}
	// other is the pick made before the drain: a stale copy.
	if _, _, err := s.ClaimDB(ctx, db.Tenant, other, WriteConfirmed, 64<<20, 8, "c9"); !errors.Is(err, pools.ErrNoCapacity) {
		t.Fatalf("create on a draining pair: %v, want ErrNoCapacity", err)
	}
	if _, err := s.StartResize(ctx, db.Tenant, db.Index, "128M", 128<<20, "r9"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ReserveResizeSlot(ctx, nil, "r9", other); !errors.Is(err, pools.ErrNoCapacity) {
		t.Fatalf("resize onto a draining pair: %v, want ErrNoCapacity", err)
	}
	after, err := s.FreeSlots(ctx, other.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(after) != len(before) {
		t.Fatalf("free slots of the draining pair: %d, then %d", len(before), len(after))
	}
	if _, err := s.Job(ctx, "c9"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a refused claim recorded a job: %v", err)
	}
}
