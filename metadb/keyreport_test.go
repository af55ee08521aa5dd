package metadb

import (
	"errors"
	"testing"
	"time"

	"github.com/granary-db/granary/proto/buspb"
)

// TestKeyReportProtocol walks a report through request, claim, progress
// and finish, with the bounds: one at a time, a minimum gap, and takeover
// of a stale run.
func TestKeyReportProtocol(t *testing.T) {
	s, _ := newStore(t)
	ctx := testCtx(t)
	mustTenant(t, s, "acme")
	pair := addPair(t, s, "64M", 4)
	db, _, err := s.ClaimDB(ctx, "acme", pair, WriteConfirmed, 64<<20, 8, "c1")
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.RequestKeyReport(ctx, "acme", 5, time.Minute, time.Minute); !errors.Is(err, ErrNotFound) {
		t.Fatalf("request for a missing db: %v, want ErrNotFound", err)
	}
	r, started, err := s.RequestKeyReport(ctx, "acme", db.Index, time.Hour, time.Minute)
	if err != nil || !started || r.State != KeyReportPending {
		t.Fatalf("first request: %+v %v %v", r, started, err)
	}
	if _, again, _ := s.RequestKeyReport(ctx, "acme", db.Index, 0, time.Minute); again {
		t.Fatal("a second request started while one is pending")
	}
	pend, err := s.PendingKeyReports(ctx)
	if err != nil || len(pend) != 1 || pend[0] != (DBRef{"acme", db.Index}) {
		t.Fatalf("pending: %v %v", pend, err)
	}

	run, ok, err := s.ClaimKeyReport(ctx, "acme", db.Index, "k1", time.Minute)
	if err != nil || !ok || run.State != KeyReportRunning || run.Keeper != "k1" {
		t.Fatalf("claim: %+v %v %v", run, ok, err)
	}
	if _, ok, _ := s.ClaimKeyReport(ctx, "acme", db.Index, "k2", time.Minute); ok {
		t.Fatal("a live run was claimed by another keeper")
	}
	if _, err := s.UpdateKeyReport(ctx, "acme", db.Index, "k2", run.Started, func(r *KeyReport) {}); !errors.Is(err, ErrBadState) {
		t.Fatalf("update by a keeper not running it: %v, want ErrBadState", err)
	}
	if _, err := s.UpdateKeyReport(ctx, "acme", db.Index, "k1", run.Started, func(r *KeyReport) { r.Scanned = 10 }); err != nil {
		t.Fatal(err)
	}
	// Stale: another keeper takes over, and the first one's updates fail.
	took, ok, err := s.ClaimKeyReport(ctx, "acme", db.Index, "k2", 0)
	if err != nil || !ok || took.Keeper != "k2" || took.Scanned != 0 {
		t.Fatalf("takeover of a stale run: %+v %v %v", took, ok, err)
	}
	if _, err := s.UpdateKeyReport(ctx, "acme", db.Index, "k1", run.Started, func(r *KeyReport) {}); !errors.Is(err, ErrBadState) {
		t.Fatalf("update of a run taken over: %v, want ErrBadState", err)
	}
	fin := time.Now().UTC()
	_, err = s.UpdateKeyReport(ctx, "acme", db.Index, "k2", took.Started, func(r *KeyReport) {
		r.State = KeyReportDone
		r.Last = &BigKeyReport{Keeper: "k2", Finished: fin, Complete: true, ByBytes: []BigKey{{Key: "big", Type: "string", Bytes: 100, Elements: 90}}}
	})
	if err != nil {
		t.Fatal(err)
	}
	if pend, _ := s.PendingKeyReports(ctx); len(pend) != 0 {
		t.Fatalf("pending after done: %v", pend)
	}
	got, err := s.KeyReport(ctx, "acme", db.Index)
	if err != nil || got.State != KeyReportDone || got.Last == nil || got.Last.ByBytes[0].Key != "big" {
		t.Fatalf("report: %+v %v", got, err)
	}
	// Within the gap a request returns the finished report; after it, a
	// new run starts and keeps the last lists until it finishes.
	if r, again, err := s.RequestKeyReport(ctx, "acme", db.Index, time.Hour, time.Minute); err != nil || again || r.State != KeyReportDone {
		t.Fatalf("request within the gap: %+v %v %v", r, again, err)
	}
	r, again, err := s.RequestKeyReport(ctx, "acme", db.Index, 0, time.Minute)
	if err != nil || !again || r.Last == nil || r.Last.ByBytes[0].Key != "big" {
		t.Fatalf("request after the gap: %+v %v %v", r, again, err)
	}
}

func TestHotKeysAgeBound(t *testing.T) {
	s, _ := newStore(t)
	ctx := testCtx(t)
	now := time.Now().UTC()
	err := s.PublishHotKeys(ctx, "p1", []HotKeys{{Tenant: "acme", Index: 0, Time: now, SampleEvery: 16,
		Keys: []HotKey{{Key: "a", Rate: 10}}}}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	err = s.PublishHotKeys(ctx, "p0", []HotKeys{{Tenant: "acme", Index: 0, Time: now.Add(-time.Hour),
		Keys: []HotKey{{Key: "b", Rate: 1}}}}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.HotKeysOf(ctx, "acme", 0, 30*time.Second)
	if err != nil || len(got) != 1 || got[0].Proxy != "p1" || got[0].Keys[0].Key != "a" {
		t.Fatalf("hot keys: %+v %v, want only p1's fresh report", got, err)
	}
	if ttl := s.rdb.PTTL(ctx, keyHotKeys("acme", 0)).Val(); ttl <= 0 || ttl > time.Minute {
		t.Fatalf("hot keys ttl %v", ttl)
	}
}

// TestDropForgetsKeyReport: the drop's last step deletes the db's key
// report, its pending entry and its hot keys: key names do not outlive
// the db.
func TestDropForgetsKeyReport(t *testing.T) {
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
	if _, _, err := s.RequestKeyReport(ctx, "acme", db.Index, 0, time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := s.PublishHotKeys(ctx, "p1", []HotKeys{{Tenant: "acme", Index: db.Index, Time: time.Now(), Keys: []HotKey{{Key: "k"}}}}, time.Minute); err != nil {
		t.Fatal(err)
	}
	if _, err := s.StartDrop(ctx, "acme", db.Index, "drop1"); err != nil {
		t.Fatal(err)
	}
	if err := s.ReleaseSlot(ctx, f, "drop1"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.KeyReport(ctx, "acme", db.Index); !errors.Is(err, ErrNotFound) {
		t.Fatalf("key report after drop: %v, want ErrNotFound", err)
	}
	if pend, err := s.PendingKeyReports(ctx); err != nil || len(pend) != 0 {
		t.Fatalf("pending after drop: %v %v", pend, err)
	}
	if hs, err := s.HotKeysOf(ctx, "acme", db.Index, time.Hour); err != nil || len(hs) != 0 {
		t.Fatalf("hot keys after drop: %+v %v", hs, err)
	}
}
