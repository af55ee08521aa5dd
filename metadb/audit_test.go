package metadb

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/granary-db/granary/proto/buspb"
	"github.com/redis/go-redis/v9"
)

// auditAll is the whole stream, oldest first, straight from Redis.
func auditAll(t *testing.T, s *Store) []redis.XMessage {
	t.Helper()
	msgs, err := s.rdb.XRange(t.Context(), keyAudit, "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	return msgs
}

// onlyEntry checks that the stream holds exactly one entry of action and
// returns it.
func onlyEntry(t *testing.T, s *Store, action string) AuditEntry {
	t.Helper()
	got, _, err := s.AuditLog(t.Context(), AuditQuery{Action: action, Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 {
		t.Fatalf("%s: got %d entries, want 1: %+v", action, len(got), got)
	}
	return got[0]
}

func checkEntry(t *testing.T, got, want AuditEntry) {
	t.Helper()
	if got.ID == "" || got.Time == "" {
		t.Errorf("%s: id %q, time %q: want both set", want.Action, got.ID, got.Time)
	}
	if _, err := time.Parse(time.RFC3339Nano, got.Time); err != nil {
		t.Errorf("%s: time %q: %v", want.Action, got.Time, err)
	}
	got.ID, got.Time = "", ""
	if got != want {
		t.Errorf("got %+v, want %+v", got, want)
	}
}

// TestAuditAutomaticDecisions: a failover, a spare attached (and one that
// could not be) and a ban recorded through UpdateDBAudited each leave
// exactly one entry, written in the change's own transaction.
func TestAuditAutomaticDecisions(t *testing.T) {
	s, _ := newStore(t)
	ctx := testCtx(t)
	p, db := failoverFixture(t, s)
	if err := s.Heartbeat(ctx, KindKeeper, Member{ID: "k1"}, time.Minute); err != nil {
		t.Fatal(err)
	}
	pr := Promotion{Keeper: "k1", Pair: p.ID, OldMaster: p.Master, NewMaster: p.Replica, Reason: "master down"}
	_, job, err := s.Promote(ctx, pr)
	if err != nil {
		t.Fatal(err)
	}
	if _, again, err := s.Promote(ctx, pr); err != nil || again != nil {
		t.Fatalf("promote again: %v %v", again, err)
	}
	checkEntry(t, onlyEntry(t, s, AuditPairFailover), AuditEntry{Actor: "keeper/k1", Action: AuditPairFailover,
		Target: p.ID + ": " + p.Master + " -> " + p.Replica, Result: AuditOK, RequestID: job.ID})

	f, ok, err := s.AcquireLeader(ctx, "m1", time.Minute)
	if err != nil || !ok {
		t.Fatalf("acquire leader: %v %v", ok, err)
	}
	if err := s.FinishReplace(ctx, f, job.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.FinishReplace(ctx, f, job.ID); err != nil { // finished already: no second entry
		t.Fatal(err)
	}
	checkEntry(t, onlyEntry(t, s, AuditSpareAttach), AuditEntry{Actor: "master/m1", Action: AuditSpareAttach,
		Target: p.ID + ": spare:1", Result: AuditOK, RequestID: job.ID})

	_, err = s.UpdateDBAudited(ctx, f, "master/m1", "acme", db.Index, func(d *DB) ([]*buspb.Envelope, *AuditEntry, error) {
		d.Banned = true
		return nil, &AuditEntry{Actor: "master/m1", Action: AuditQuotaBan, Target: "acme/0", Tenant: "acme", Result: AuditOK}, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	checkEntry(t, onlyEntry(t, s, AuditQuotaBan), AuditEntry{Actor: "master/m1", Action: AuditQuotaBan,
		Target: "acme/0", Tenant: "acme", Result: AuditOK})
	// A refused change records nothing.
	_, err = s.UpdateDBAudited(ctx, f, "master/m1", "acme", db.Index, func(d *DB) ([]*buspb.Envelope, *AuditEntry, error) {
		return nil, &AuditEntry{Action: AuditQuotaBan}, ErrBadState
	})
	if !errors.Is(err, ErrBadState) {
		t.Fatal(err)
	}
	msgs := auditAll(t, s)
	if len(msgs) != 3 {
		t.Fatalf("stream holds %d entries, want 3", len(msgs))
	}
	// mustTenant's credentials appear nowhere, in clear or hashed.
	for _, m := range msgs {
		for k, v := range m.Values {
			for _, secret := range []string{"tok-acme", "pw-acme", HashSecret("tok-acme"), HashSecret("pw-acme")} {
				if strings.Contains(k+"="+v.(string), secret) {
					t.Errorf("entry %s field %s holds a secret", m.ID, k)
				}
			}
		}
	}
}

// TestAuditStaleReplace: a replacement abandoned because the pair moved on
// is recorded with its error.
func TestAuditStaleReplace(t *testing.T) {
	s, _ := newStore(t)
	ctx := testCtx(t)
	p := addPair(t, s, "64M", 2)
	if _, err := s.UpdatePair(ctx, nil, p.ID, func(p *Pair) error { p.Keeper = "k1"; return nil }); err != nil {
		t.Fatal(err)
	}
	if err := s.Heartbeat(ctx, KindKeeper, Member{ID: "k1"}, time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := s.AddSpare(ctx, "spare:2"); err != nil {
		t.Fatal(err)
	}
	_, job, err := s.Promote(ctx, Promotion{Keeper: "k1", Pair: p.ID, OldMaster: p.Master, NewMaster: p.Replica})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.UpdatePair(ctx, nil, p.ID, func(p *Pair) error { p.Master = "other:1"; return nil }); err != nil {
		t.Fatal(err)
	}
	stale := s.FinishReplace(ctx, nil, job.ID)
	if !errors.Is(stale, ErrBadState) {
		t.Fatalf("finish a stale replacement: %v", stale)
	}
	checkEntry(t, onlyEntry(t, s, AuditSpareAttach), AuditEntry{Actor: "master/", Action: AuditSpareAttach,
		Target: p.ID + ": spare:2", Result: "error: " + stale.Error(), RequestID: job.ID})
}

// TestAuditCapLength: the stream stays near AuditMaxLen however many
// entries are appended (MAXLEN ~ drops whole nodes, so allow one node).
func TestAuditCapLength(t *testing.T) {
	srv := newStoreServer(t)
	s := openStore(t, Config{URL: "redis://" + srv, AuditMaxLen: 50})
	ctx := testCtx(t)
	if err := s.rdb.ConfigSet(ctx, "stream-node-max-entries", "10").Err(); err != nil {
		t.Fatal(err)
	}
	for i := range 500 {
		if err := s.Audit(ctx, AuditEntry{Actor: "admin", Action: AuditSpareAdd, Target: strconv.Itoa(i), Result: AuditOK}); err != nil {
			t.Fatal(err)
		}
	}
	n, err := s.rdb.XLen(ctx, keyAudit).Result()
	if err != nil {
		t.Fatal(err)
	}
	if n < 50 || n > 60 {
		t.Fatalf("stream length %d after 500 appends, want 50..60", n)
	}
	got, _, _ := s.AuditLog(ctx, AuditQuery{Limit: 1})
	if len(got) != 1 || got[0].Target != "499" {
		t.Fatalf("newest entry %+v, want target 499", got)
	}
}

// TestAuditCapAge: entries older than AuditMaxAge go at the next append.
func TestAuditCapAge(t *testing.T) {
	srv := newStoreServer(t)
	s := openStore(t, Config{URL: "redis://" + srv, AuditMaxAge: time.Hour})
	ctx := testCtx(t)
	if err := s.rdb.ConfigSet(ctx, "stream-node-max-entries", "10").Err(); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-2 * time.Hour).UnixMilli()
	for i := range 100 {
		e := AuditEntry{Actor: "admin", Action: AuditSpareAdd, Target: "old", Result: AuditOK}
		if err := s.rdb.XAdd(ctx, &redis.XAddArgs{Stream: keyAudit, ID: fmt.Sprintf("%d-%d", old, i), Values: e.values()}).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Audit(ctx, AuditEntry{Actor: "admin", Action: AuditSpareAdd, Target: "new", Result: AuditOK}); err != nil {
		t.Fatal(err)
	}
	msgs := auditAll(t, s)
	if len(msgs) > 10 || msgs[len(msgs)-1].Values["target"] != "new" {
		t.Fatalf("stream after an append past the age cap: %d entries, newest %v; want at most one node (10), newest target new",
			len(msgs), msgs[len(msgs)-1].Values)
	}
	since, _, err := s.AuditLog(ctx, AuditQuery{Since: time.Now().Add(-time.Minute)})
	if err != nil || len(since) != 1 || since[0].Target != "new" {
		t.Fatalf("since a minute ago: %+v, %v", since, err)
	}
}

// TestAuditPagination: pages of every size return each entry once, newest
// first, filters apply across pages, and a bad cursor is refused.
func TestAuditPagination(t *testing.T) {
	s, _ := newStore(t)
	ctx := testCtx(t)
	const total = 1234 // more than one XREVRANGE batch
	for i := range total {
		tenant := "acme"
		if i%3 == 0 {
			tenant = "zeta"
		}
		e := AuditEntry{Actor: "tenant:" + tenant, Action: AuditDBCreate, Target: strconv.Itoa(i), Tenant: tenant, Result: AuditOK}
		if err := s.Audit(ctx, e); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name   string
		q      AuditQuery
		expect int
	}{
		{"all by 7", AuditQuery{Limit: 7}, total},
		{"all by 1000", AuditQuery{Limit: 1000}, total},
		{"zeta by 100", AuditQuery{Tenant: "zeta", Limit: 100}, (total + 2) / 3},
		{"other action", AuditQuery{Action: AuditDBDrop}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			seen := map[string]bool{}
			last := total
			q := tc.q
			for pages := 0; ; pages++ {
				if pages > total {
					t.Fatal("pagination does not end")
				}
				got, next, err := s.AuditLog(ctx, q)
				if err != nil {
					t.Fatal(err)
				}
				if len(got) > q.Limit && q.Limit > 0 {
					t.Fatalf("page of %d entries, limit %d", len(got), q.Limit)
				}
				for _, e := range got {
					if seen[e.ID] {
						t.Fatalf("entry %s twice", e.ID)
					}
					seen[e.ID] = true
					i, _ := strconv.Atoi(e.Target)
					if i >= last {
						t.Fatalf("entry %d after %d: want newest first", i, last)
					}
					last = i
					if q.Tenant != "" && e.Tenant != q.Tenant {
						t.Fatalf("entry of %s in a %s query", e.Tenant, q.Tenant)
					}
				}
				if next == "" {
					break
				}
				q.Cursor = next
			}
			if len(seen) != tc.expect {
				t.Fatalf("got %d entries, want %d", len(seen), tc.expect)
			}
		})
	}
	for _, empty := range []string{"0-0", "000-00"} {
		if got, next, err := s.AuditLog(ctx, AuditQuery{Cursor: empty}); err != nil || len(got) != 0 || next != "" {
			t.Errorf("cursor %q: %d entries, next %q, %v; want an empty last page", empty, len(got), next, err)
		}
	}
	if got, _, err := s.AuditLog(ctx, AuditQuery{Cursor: "0" + strings.Repeat("0", 30) + "99999999999999-0", Limit: 1}); err != nil || len(got) != 1 {
		t.Errorf("cursor with leading zeros: %d entries, %v", len(got), err)
	}
	for _, bad := range []string{"x", "1-", "-1", "1-2-3", "+", "(1-0", " 1-0", "18446744073709551616-0"} {
		if _, _, err := s.AuditLog(ctx, AuditQuery{Cursor: bad}); !errors.Is(err, ErrBadState) {
			t.Errorf("cursor %q: %v, want ErrBadState", bad, err)
		}
	}
}

// TestAuditFieldsBounded: no field grows an entry without bound.
func TestAuditFieldsBounded(t *testing.T) {
	s, _ := newStore(t)
	ctx := testCtx(t)
	long := strings.Repeat("x", 10000)
	if err := s.Audit(ctx, AuditEntry{Actor: long, Action: long, Target: long, Tenant: long, Result: long, RequestID: long}); err != nil {
		t.Fatal(err)
	}
	for k, v := range auditAll(t, s)[0].Values {
		if len(v.(string)) > auditField {
			t.Errorf("field %s has %d bytes", k, len(v.(string)))
		}
	}
}

func newStoreServer(t *testing.T) string {
	t.Helper()
	_, srv := newStore(t)
	return srv.Addr
}
