package metadb

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/granary-db/granary/proto/buspb"
)

// failoverFixture is a 64M pair of 2 dbs watched by keeper k1, tenant acme
// with an active db on it, and one spare, spare:1.
func failoverFixture(t *testing.T, s *Store) (*Pair, *DB) {
	t.Helper()
	ctx := testCtx(t)
	p := addPair(t, s, "64M", 2)
	mustTenant(t, s, "acme")
	db := mustActiveDB(t, s, "acme", p, "c1")
	if err := s.AddSpare(ctx, "spare:1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.UpdatePair(ctx, nil, p.ID, func(p *Pair) error { p.Keeper = "k1"; return nil }); err != nil {
		t.Fatal(err)
	}
	return p, db
}

// TestPromoteAndReplace walks a failover through the store: only the
// pair's live keeper promotes, once; the promotion moves the routes (version
// bump), takes a spare for the replace job and demotes the old master; the
// replacement records the new replica; a reclaimed master becomes a spare.
func TestPromoteAndReplace(t *testing.T) {
	s, _ := newStore(t)
	ctx := testCtx(t)
	p, db := failoverFixture(t, s)
	pr := Promotion{Keeper: "k2", Pair: p.ID, OldMaster: p.Master, NewMaster: p.Replica, Reason: "master down"}
	if _, _, err := s.Promote(ctx, pr); !errors.Is(err, ErrBadState) {
		t.Fatalf("promote by a keeper not assigned: %v, want ErrBadState", err)
	}
	pr.Keeper = "k1"
	if _, _, err := s.Promote(ctx, pr); !errors.Is(err, ErrBadState) {
		t.Fatalf("promote by a keeper without a lease: %v, want ErrBadState", err)
	}
	if err := s.Heartbeat(ctx, KindKeeper, Member{ID: "k1"}, time.Minute); err != nil {
		t.Fatal(err)
	}
	v0, _ := s.Version(ctx)
	got, job, err := s.Promote(ctx, pr)
	if err != nil {
		t.Fatal(err)
	}
	if got.Master != p.Replica || got.Replica != "" || got.State != PairDegraded {
		t.Fatalf("pair after promote: %+v", got)
	}
	if job == nil || job.Kind != JobReplace || job.Step != StepAttach || job.Data[ReplaceSpare] != "spare:1" {
		t.Fatalf("replace job: %+v", job)
	}
	if v, _ := s.Version(ctx); v != v0+1 {
		t.Fatalf("version %d after promote, want %d", v, v0+1)
	}
	_, routes, _ := s.Routes(ctx)
	if len(routes) != 1 || routes[0].Master != p.Replica || routes[0].Replica != "" || int(routes[0].Index) != db.Index {
		t.Fatalf("routes after promote: %v", routes)
	}
	if sp, _ := s.Spares(ctx); len(sp) != 0 {
		t.Fatalf("spares after promote: %v", sp)
	}
	if d, _ := s.Demoted(ctx); len(d) != 1 || d[0] != p.Master {
		t.Fatalf("demoted: %v", d)
	}
	// A second promotion of the same failover is a no-op.
	if _, again, err := s.Promote(ctx, pr); err != nil || again != nil {
		t.Fatalf("promote again: job %v, %v", again, err)
	}
	// TakeSpare keeps the spare already taken.
	if sp, err := s.TakeSpare(ctx, nil, job.ID); err != nil || sp != "spare:1" {
		t.Fatalf("take spare: %q, %v", sp, err)
	}
	if err := s.FinishReplace(ctx, nil, job.ID); err != nil {
		t.Fatal(err)
	}
	got, _ = s.Pair(ctx, p.ID)
	if got.Replica != "spare:1" || got.State != PairActive {
		t.Fatalf("pair after replace: %+v", got)
	}
	if j, _ := s.Job(ctx, job.ID); j.State != JobDone {
		t.Fatalf("job after replace: %+v", j)
	}
	if reg, _ := s.AddrRegistration(ctx, "spare:1"); reg != "pair "+p.ID+" replica" {
		t.Fatalf("spare registered as %q", reg)
	}
	_, routes, _ = s.Routes(ctx)
	if routes[0].Replica != "spare:1" {
		t.Fatalf("route after replace: %v", routes[0])
	}
	if err := s.ReclaimDemoted(ctx, nil, p.Master); err != nil {
		t.Fatal(err)
	}
	if sp, _ := s.Spares(ctx); len(sp) != 1 || sp[0] != p.Master {
		t.Fatalf("spares after reclaim: %v", sp)
	}
	if err := s.ReclaimDemoted(ctx, nil, p.Master); !errors.Is(err, ErrNotFound) {
		t.Fatalf("reclaim twice: %v", err)
	}
}

// TestPromoteWithoutSpare: with an empty pool the job waits at take_spare;
// a replacement whose pair failed over again is abandoned and its spare
// returned.
func TestPromoteWithoutSpare(t *testing.T) {
	s, _ := newStore(t)
	ctx := testCtx(t)
	p := addPair(t, s, "64M", 2)
	if _, err := s.UpdatePair(ctx, nil, p.ID, func(p *Pair) error { p.Keeper = "k1"; return nil }); err != nil {
		t.Fatal(err)
	}
	if err := s.Heartbeat(ctx, KindKeeper, Member{ID: "k1"}, time.Minute); err != nil {
		t.Fatal(err)
	}
	msgs := make(chan *buspb.Envelope, 8)
	subCtx, cancel := context.WithCancel(ctx)
	ready, subDone := make(chan struct{}, 1), make(chan struct{})
	go func() {
		defer close(subDone)
		_ = s.Subscribe(subCtx, Subscriber{Handle: func(ctx context.Context, e *buspb.Envelope) {
			select {
			case msgs <- e:
			case <-ctx.Done():
			}
		},
			Resync: func(ctx context.Context) (uint64, error) { ready <- struct{}{}; return s.Version(ctx) }})
	}()
	defer func() { cancel(); <-subDone }()
	<-ready
	_, job, err := s.Promote(ctx, Promotion{Keeper: "k1", Pair: p.ID, OldMaster: p.Master, NewMaster: p.Replica})
	if err != nil {
		t.Fatal(err)
	}
	if job.Step != StepTakeSpare {
		t.Fatalf("job step %q, want take_spare", job.Step)
	}
	select {
	case e := <-msgs:
		if f := e.GetFailover(); f == nil || f.NewMaster != p.Replica {
			t.Fatalf("bus message %v, want a Failover", e)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("no Failover message")
	}
	if _, err := s.TakeSpare(ctx, nil, job.ID); !errors.Is(err, ErrNoSpare) {
		t.Fatalf("take spare from an empty pool: %v", err)
	}
	if err := s.AddSpare(ctx, "spare:2"); err != nil {
		t.Fatal(err)
	}
	if sp, err := s.TakeSpare(ctx, nil, job.ID); err != nil || sp != "spare:2" {
		t.Fatalf("take spare: %q, %v", sp, err)
	}
	// The pair moves on before the spare is recorded.
	if _, err := s.UpdatePair(ctx, nil, p.ID, func(p *Pair) error { p.Master = "other:1"; return nil }); err != nil {
		t.Fatal(err)
	}
	if err := s.FinishReplace(ctx, nil, job.ID); !errors.Is(err, ErrBadState) {
		t.Fatalf("finish a stale replacement: %v", err)
	}
	if j, _ := s.Job(ctx, job.ID); j.State != JobFailed {
		t.Fatalf("stale job: %+v", j)
	}
	if sp, _ := s.Spares(ctx); len(sp) != 1 || sp[0] != "spare:2" {
		t.Fatalf("spare not returned: %v", sp)
	}
}
