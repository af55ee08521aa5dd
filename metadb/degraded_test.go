package metadb

import (
	"errors"
	"testing"
	"time"
)

// TestSetWritesDegraded: a pair without a replica has its confirmed dbs'
// routes degraded, once, with an audit entry per db for its tenant and a
// version bump; a pair with a replica is never degraded; confirming again
// clears the routes.
func TestSetWritesDegraded(t *testing.T) {
	s, _ := newStore(t)
	ctx := t.Context()
	pair, err := s.AddPair(ctx, "64M", "m1:6379", "r1:6379", []int{0, 1, 2})
	if err != nil {
		t.Fatal(err)
	}
	for _, tenant := range []string{"acme", "bravo"} {
		if _, err := s.CreateTenant(ctx, "test", tenant, "tok-"+tenant, "pw"); err != nil {
			t.Fatal(err)
		}
		if _, _, err := s.ClaimDB(ctx, tenant, pair, WriteConfirmed, 64<<20, 8, "c-"+tenant); err != nil {
			t.Fatal(err)
		}
	}
	if changed, err := s.SetWritesDegraded(ctx, nil, pair.ID, true); err != nil || changed {
		t.Fatalf("degrading a pair with a replica: changed %v, %v; want no change", changed, err)
	}
	if _, err := s.UpdatePair(ctx, nil, pair.ID, func(p *Pair) error {
		p.Replica, p.State, p.ReplicaLostAt = "", PairDegraded, time.Now()
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	v0, _ := s.Version(ctx)
	if changed, err := s.SetWritesDegraded(ctx, nil, pair.ID, true); err != nil || !changed {
		t.Fatalf("degrade: changed %v, %v", changed, err)
	}
	if changed, err := s.SetWritesDegraded(ctx, nil, pair.ID, true); err != nil || changed {
		t.Fatalf("degrade again: changed %v, %v; want no change", changed, err)
	}
	if v1, _ := s.Version(ctx); v1 != v0+1 {
		t.Fatalf("version %d after one degrade from %d", v1, v0)
	}
	// Claimed dbs are not serving yet: Routes lists active ones only, so
	// look at the records through RouteOf.
	p, _ := s.Pair(ctx, pair.ID)
	for _, tenant := range []string{"acme", "bravo"} {
		db, err := s.DB(ctx, tenant, 0)
		if err != nil {
			t.Fatal(err)
		}
		if !RouteOf(db, p).WriteDegraded {
			t.Fatalf("%s's route not degraded", tenant)
		}
		db.WriteMode = WriteAsync
		if RouteOf(db, p).WriteDegraded {
			t.Fatal("an async db's route marked degraded")
		}
		entries, _, err := s.AuditLog(ctx, AuditQuery{Tenant: tenant, Action: AuditWritesDegraded})
		if err != nil || len(entries) != 1 {
			t.Fatalf("%s's db.writes_degraded entries: %v, %v; want one", tenant, entries, err)
		}
	}
	if changed, err := s.SetWritesDegraded(ctx, nil, pair.ID, false); err != nil || !changed {
		t.Fatalf("confirm again: changed %v, %v", changed, err)
	}
	if p, _ := s.Pair(ctx, pair.ID); p.WritesDegraded {
		t.Fatal("pair still degraded")
	}
	if entries, _, _ := s.AuditLog(ctx, AuditQuery{Tenant: "acme", Action: AuditWritesConfirmed}); len(entries) != 1 {
		t.Fatalf("acme's db.writes_confirmed entries: %v; want one", entries)
	}
	if _, err := s.SetWritesDegraded(ctx, nil, "nope", true); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown pair: %v", err)
	}
}

func TestDecideDegrade(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	lost := func(ago time.Duration) time.Time { return now.Add(-ago) }
	pairs := []Pair{
		{ID: "healthy", Replica: "r:1"},
		{ID: "lost-just-now", ReplicaLostAt: lost(time.Second)},
		{ID: "lost-long-ago", ReplicaLostAt: lost(time.Minute)},
		{ID: "already-degraded", ReplicaLostAt: lost(time.Minute), WritesDegraded: true},
		{ID: "healed-still-flagged", Replica: "r:2", WritesDegraded: true},
		{ID: "no-replica-no-loss-time"}, // added before the field: never guessed
	}
	got := DecideDegrade(pairs, now, 10*time.Second)
	want := []DegradeDecision{{Pair: "lost-long-ago", Degraded: true}, {Pair: "healed-still-flagged", Degraded: false}}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("DecideDegrade = %v, want %v", got, want)
	}
	if got := DecideDegrade(pairs, now, -1); len(got) != 1 || got[0].Pair != "healed-still-flagged" {
		t.Fatalf("DecideDegrade with degrading off = %v, want only the confirmation", got)
	}
}
