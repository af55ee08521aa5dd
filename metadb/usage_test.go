package metadb

import (
	"errors"
	"fmt"
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
		if err := s.AppendUsage(ctx, f, pts, 5, 0); err != nil {
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

	// The age bound: a point 40 minutes newer drops every point more than
	// maxAge older than it.
	late := UsagePoint{Tenant: "acme", Index: 0, Time: t0.Add(40 * time.Minute), UsedBytes: 99}
	if err := s.AppendUsage(ctx, f, []UsagePoint{late}, 5, 30*time.Minute); err != nil {
		t.Fatal(err)
	}
	if got, err := s.Usage(ctx, "acme", 0, time.Time{}); err != nil || len(got) != 1 || got[0].UsedBytes != 99 {
		t.Fatalf("after the age bound: %+v %v, want only the new point", got, err)
	}

	// A master that lost the lease appends nothing.
	if err := s.ReleaseLeader(ctx, f); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := s.AcquireLeader(ctx, "m2", time.Minute); err != nil || !ok {
		t.Fatalf("m2 lead: %v %v", ok, err)
	}
	err = s.AppendUsage(ctx, f, []UsagePoint{{Tenant: "acme", Index: 0, Time: time.Now()}}, 5, 0)
	if !errors.Is(err, ErrNotLeader) {
		t.Fatalf("stale fence: %v, want ErrNotLeader", err)
	}
	if got, _ := s.Usage(ctx, "acme", 0, t0.Add(41*time.Minute)); len(got) != 0 {
		t.Fatalf("stale master appended %+v", got)
	}
}

func TestAlertRuleNeedsTheDB(t *testing.T) {
	s, _ := newStore(t)
	ctx := testCtx(t)
	mustTenant(t, s, "acme")
	if err := s.SetAlertRule(ctx, "acme", 3, AlertRule{Webhook: "http://x", UsedPct: 80}, false); !errors.Is(err, ErrNotFound) {
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
	if err := s.SetAlertRule(ctx, "acme", db.Index, AlertRule{Webhook: "http://x", UsedPct: 80}, false); err != nil {
		t.Fatal(err)
	}
	if err := s.AppendUsage(ctx, f, []UsagePoint{{Tenant: "acme", Index: db.Index, Time: time.Now()}}, 10, 0); err != nil {
		t.Fatal(err)
	}
	rule := AlertRule{Webhook: "http://x", UsedPct: 80}
	fired := rule
	fired.Above = map[string]bool{MetricUsedPct: true}
	if ok, err := s.FireAlerts(ctx, f, "acme", db.Index, rule, fired, []*Alert{{Tenant: "acme", Index: db.Index, Metric: MetricUsedPct}}, 10); err != nil || !ok {
		t.Fatalf("fire: %v %v", ok, err)
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
	if as, err := s.Alerts(ctx, "acme", db.Index); err != nil || len(as) != 0 {
		t.Fatalf("alerts after drop: %+v %v", as, err)
	}
	if as, err := s.PendingAlerts(ctx); err != nil || len(as) != 0 {
		t.Fatalf("pending after drop: %+v %v", as, err)
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
	if err := s.SetAlertRule(ctx, "acme", db.Index, old, false); err != nil {
		t.Fatal(err)
	}
	put := AlertRule{Webhook: "http://new", UsedPct: 90}
	if err := s.SetAlertRule(ctx, "acme", db.Index, put, false); err != nil {
		t.Fatal(err)
	}
	next := old
	next.Above = map[string]bool{MetricUsedPct: true}
	ok, err := s.FireAlerts(ctx, f, "acme", db.Index, old, next, []*Alert{{Tenant: "acme", Index: db.Index, Metric: "used_pct", Time: time.Now()}}, 10)
	if err != nil || ok {
		t.Fatalf("fire from a replaced rule: %v %v, want false nil", ok, err)
	}
	if r, _ := s.AlertRule(ctx, "acme", db.Index); !r.same(&put) {
		t.Fatalf("rule %+v, want the PUT's %+v", r, put)
	}
	if as, _ := s.PendingAlerts(ctx); len(as) != 0 {
		t.Fatalf("pending %+v", as)
	}
	ok, err = s.FireAlerts(ctx, f, "acme", db.Index, put, AlertRule{Webhook: "http://new", UsedPct: 90, Above: map[string]bool{MetricUsedPct: true}},
		[]*Alert{{Tenant: "acme", Index: db.Index, Metric: "used_pct", Time: time.Now()}}, 10)
	if err != nil || !ok {
		t.Fatalf("fire: %v %v", ok, err)
	}
	if as, _ := s.PendingAlerts(ctx); len(as) != 1 || as[0].State != AlertPending {
		t.Fatalf("pending %+v", as)
	}
}

// TestPendingAlertsAreBounded: per db and metric one pending alert (a newer
// crossing supersedes it), per tenant at most the cap (beyond it an alert is
// recorded as dropped), and each db's history capped; a settled alert
// leaves the pending set, one superseded meanwhile is not written back.
func TestPendingAlertsAreBounded(t *testing.T) {
	s, _ := newStore(t)
	ctx := testCtx(t)
	pair := addPair(t, s, "64M", 4)
	mustTenant(t, s, "acme")
	f, _, err := s.AcquireLeader(ctx, "m1", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	var dbs []*DB
	for i := range 3 {
		db, _, err := s.ClaimDB(ctx, "acme", pair, WriteConfirmed, 64<<20, 8, fmt.Sprint("create", i))
		if err != nil {
			t.Fatal(err)
		}
		dbs = append(dbs, db)
	}
	fire := func(index int, metric string) []*Alert {
		t.Helper()
		r, err := s.AlertRule(ctx, "acme", index)
		if err != nil {
			t.Fatal(err)
		}
		next := *r
		next.Above = map[string]bool{metric: !r.Above[metric]}
		as := []*Alert{{Tenant: "acme", Index: index, Metric: metric, Time: time.Now()}}
		if ok, err := s.FireAlerts(ctx, f, "acme", index, *r, next, as, 2); err != nil || !ok {
			t.Fatalf("fire: %v %v", ok, err)
		}
		return as
	}
	for _, db := range dbs {
		if err := s.SetAlertRule(ctx, "acme", db.Index, AlertRule{Webhook: "http://x", UsedPct: 80}, false); err != nil {
			t.Fatal(err)
		}
	}
	first := fire(dbs[0].Index, MetricUsedPct)[0]
	for range AlertHistoryKeep + 20 {
		fire(dbs[0].Index, MetricUsedPct)
	}
	pending, err := s.PendingAlerts(ctx)
	if err != nil || len(pending) != 1 {
		t.Fatalf("pending after %d crossings of one metric: %d %v, want 1", AlertHistoryKeep+21, len(pending), err)
	}
	hist, err := s.Alerts(ctx, "acme", dbs[0].Index)
	if err != nil || len(hist) != AlertHistoryKeep {
		t.Fatalf("history holds %d %v, want the cap %d", len(hist), err, AlertHistoryKeep)
	}
	if last := hist[len(hist)-1]; last.ID != pending[0].ID || last.State != AlertPending || hist[0].State != AlertSuperseded {
		t.Fatalf("history ends %+v, begins %+v; want the pending newest after superseded ones", last, hist[0])
	}
	// The superseded first alert's late delivery is not written back.
	first.State = AlertDelivered
	if err := s.RecordDelivery(ctx, f, first); err != nil {
		t.Fatal(err)
	}
	if p, _ := s.PendingAlerts(ctx); len(p) != 1 || p[0].ID != pending[0].ID {
		t.Fatalf("pending %+v after a superseded alert's delivery", p)
	}
	// The tenant cap (2): a second db's alert is pending, a third's dropped.
	fire(dbs[1].Index, MetricUsedPct)
	dropped := fire(dbs[2].Index, MetricUsedPct)[0]
	if dropped.State != AlertDropped {
		t.Fatalf("third pending alert of a tenant capped at 2: %+v", dropped)
	}
	if p, _ := s.PendingAlerts(ctx); len(p) != 2 {
		t.Fatalf("%d pending, want the cap 2", len(p))
	}
	for _, a := range pending {
		a.State, a.Attempts = AlertDelivered, 1
		if err := s.RecordDelivery(ctx, f, a); err != nil {
			t.Fatal(err)
		}
	}
	if p, _ := s.PendingAlerts(ctx); len(p) != 1 || p[0].Index != dbs[1].Index {
		t.Fatalf("pending %+v after the delivery, want db %d's", p, dbs[1].Index)
	}
}
