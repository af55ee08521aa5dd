package metadb

import (
	"errors"
	"testing"
	"time"

	"github.com/granary-db/granary/proto/buspb"
)

func TestUsageSeriesIsCapped(t *testing.T) {
	s, _ := newStore(t)
	ctx := testCtx(t)
	f, ok, err := s.AcquireLeader(ctx, "m1", time.Minute)
	if err != nil || !ok {
		t.Fatalf("lead: %v %v", ok, err)
	}
	t0 := time.Now().Add(-time.Hour).UTC().Truncate(time.Millisecond)
	for i := range 12 {
		pts := []UsagePoint{
			{Tenant: "acme", Index: 0, Time: t0.Add(time.Duration(i) * time.Second), UsedBytes: int64(i), QuotaBytes: 100},
			{Tenant: "acme", Index: 1, Time: t0.Add(time.Duration(i) * time.Second), OpsPerSec: float64(i)},
		}
		if err := s.AppendUsage(ctx, f, pts, 5); err != nil {
			t.Fatal(err)
		}
	}
	for _, index := range []int{0, 1} {
		got, err := s.Usage(ctx, "acme", index, time.Time{})
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 5 {
			t.Fatalf("db %d holds %d points, want the cap 5", index, len(got))
		}
		for i, p := range got {
			if want := t0.Add(time.Duration(7+i) * time.Second); !p.Time.Equal(want) {
				t.Fatalf("db %d point %d at %v, want %v (the newest, oldest first)", index, i, p.Time, want)
			}
		}
	}
	got, err := s.Usage(ctx, "acme", 0, t0.Add(10*time.Second))
	if err != nil || len(got) != 2 || got[0].UsedBytes != 10 || got[1].UsedBytes != 11 {
		t.Fatalf("since: %+v %v", got, err)
	}

	// A master that lost the lease appends nothing.
	if err := s.ReleaseLeader(ctx, f); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := s.AcquireLeader(ctx, "m2", time.Minute); err != nil || !ok {
		t.Fatalf("m2 lead: %v %v", ok, err)
	}
	err = s.AppendUsage(ctx, f, []UsagePoint{{Tenant: "acme", Index: 0, Time: time.Now()}}, 5)
	if !errors.Is(err, ErrNotLeader) {
		t.Fatalf("stale fence: %v, want ErrNotLeader", err)
	}
	if got, _ := s.Usage(ctx, "acme", 0, t0.Add(12*time.Second)); len(got) != 0 {
		t.Fatalf("stale master appended %+v", got)
	}
}

func TestAlertRuleNeedsTheDB(t *testing.T) {
	s, _ := newStore(t)
	ctx := testCtx(t)
	mustTenant(t, s, "acme")
	if err := s.SetAlertRule(ctx, "acme", 3, AlertRule{Webhook: "http://x", UsedPct: 80}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("rule of a missing db: %v, want ErrNotFound", err)
	}
	if _, err := s.AlertRule(ctx, "acme", 3); !errors.Is(err, ErrNotFound) {
		t.Fatalf("missing rule: %v, want ErrNotFound", err)
	}
}

// TestDropForgetsUsage: a dropped db's history and rule go with it, so a
// later db that reuses the index starts with neither.
func TestDropForgetsUsage(t *testing.T) {
	s, _ := newStore(t)
	ctx := testCtx(t)
	pair := addPair(t, s, "64M", 1)
	mustTenant(t, s, "acme")
	f, ok, err := s.AcquireLeader(ctx, "m1", time.Minute)
	if err != nil || !ok {
		t.Fatalf("lead: %v %v", ok, err)
	}
	db, _, err := s.ClaimDB(ctx, "acme", pair, WriteConfirmed, 64<<20, 8, "create1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.UpdateDB(ctx, f, "m1", "acme", db.Index, func(d *DB) ([]*buspb.Envelope, error) {
		d.State = DBActive
		return nil, nil
	}); err != nil {
		t.Fatal(err)
	}
	if err := s.SetAlertRule(ctx, "acme", db.Index, AlertRule{Webhook: "http://x", UsedPct: 80}); err != nil {
		t.Fatal(err)
	}
	if err := s.AppendUsage(ctx, f, []UsagePoint{{Tenant: "acme", Index: db.Index, Time: time.Now()}}, 10); err != nil {
		t.Fatal(err)
	}
	if _, err := s.StartDrop(ctx, "acme", db.Index, "drop1"); err != nil {
		t.Fatal(err)
	}
	if err := s.ReleaseSlot(ctx, f, "drop1"); err != nil {
		t.Fatal(err)
	}
	if pts, err := s.Usage(ctx, "acme", db.Index, time.Time{}); err != nil || len(pts) != 0 {
		t.Fatalf("usage after drop: %+v %v", pts, err)
	}
	if _, err := s.AlertRule(ctx, "acme", db.Index); !errors.Is(err, ErrNotFound) {
		t.Fatalf("rule after drop: %v, want ErrNotFound", err)
	}
}

// TestFireAlertsYieldsToAPut: a rule replaced between the master's read and
// its write is not overwritten, and nothing fires from the old one.
func TestFireAlertsYieldsToAPut(t *testing.T) {
	s, _ := newStore(t)
	ctx := testCtx(t)
	pair := addPair(t, s, "64M", 1)
	mustTenant(t, s, "acme")
	f, _, err := s.AcquireLeader(ctx, "m1", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	db, _, err := s.ClaimDB(ctx, "acme", pair, WriteConfirmed, 64<<20, 8, "create1")
	if err != nil {
		t.Fatal(err)
	}
	old := AlertRule{Webhook: "http://old", UsedPct: 80}
	if err := s.SetAlertRule(ctx, "acme", db.Index, old); err != nil {
		t.Fatal(err)
	}
	put := AlertRule{Webhook: "http://new", UsedPct: 90}
	if err := s.SetAlertRule(ctx, "acme", db.Index, put); err != nil {
		t.Fatal(err)
	}
	next := old
	next.UsedAbove = true
	ok, err := s.FireAlerts(ctx, f, "master/m1", "acme", db.Index, old, next, []*Alert{{Tenant: "acme", Index: db.Index, Metric: "used_pct", Time: time.Now()}})
	if err != nil || ok {
		t.Fatalf("fire from a replaced rule: %v %v, want false nil", ok, err)
	}
	if r, _ := s.AlertRule(ctx, "acme", db.Index); *r != put {
		t.Fatalf("rule %+v, want the PUT's %+v", r, put)
	}
	if as, _ := s.PendingAlerts(ctx); len(as) != 0 {
		t.Fatalf("pending %+v", as)
	}
	ok, err = s.FireAlerts(ctx, f, "master/m1", "acme", db.Index, put, AlertRule{Webhook: "http://new", UsedPct: 90, UsedAbove: true},
		[]*Alert{{Tenant: "acme", Index: db.Index, Metric: "used_pct", Time: time.Now()}})
	if err != nil || !ok {
		t.Fatalf("fire: %v %v", ok, err)
	}
	if as, _ := s.PendingAlerts(ctx); len(as) != 1 || as[0].State != AlertPending {
		t.Fatalf("pending %+v", as)
	}
}
