package master

import (
	"context"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/granary-db/granary/internal/redistest"
	"github.com/granary-db/granary/metadb"
	"github.com/granary-db/granary/proto/buspb"
)

func TestDecideBans(t *testing.T) {
	db := func(state string, used, quota int64, banned bool) *metadb.DB {
		return &metadb.DB{Tenant: "t", Index: 1, State: state, UsedBytes: used, QuotaBytes: quota, Banned: banned}
	}
	tests := []struct {
		name string
		db   *metadb.DB
		want []bool // the ban decisions, if any
	}{
		{"under quota, not banned", db(metadb.DBActive, 10, 100, false), nil},
		{"over quota gets banned", db(metadb.DBActive, 101, 100, false), []bool{true}},
		{"exactly at quota is fine", db(metadb.DBActive, 100, 100, false), nil},
		{"banned and still over stays", db(metadb.DBActive, 150, 100, true), nil},
		{"banned and back under is released", db(metadb.DBActive, 99, 100, true), []bool{false}},
		{"resizing db is policed too", db(metadb.DBResizing, 101, 100, false), []bool{true}},
		{"creating db is left alone", db(metadb.DBCreating, 101, 100, false), nil},
		{"dropping db is left alone", db(metadb.DBDropping, 101, 100, false), nil},
		{"no quota means no ban", db(metadb.DBActive, 101, 0, false), nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var got []bool
			for _, c := range decideBans([]*metadb.DB{tc.db}) {
				got = append(got, c.ban)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestQuotaLoopBansAndReleases(t *testing.T) {
	c := newCluster(t)
	ctx := t.Context()
	startMaster(t, c.store, "m1")
	db, job, err := c.store.ClaimDB(ctx, "acme", c.pair, metadb.WriteConfirmed, 1000, 8, "create")
	if err != nil {
		t.Fatal(err)
	}
	redistest.WaitFor(t, 5*time.Second, "create done", func() bool { return jobState(t, c.store, job.ID).State == metadb.JobDone })

	bans := make(chan *buspb.WriteBan, 4)
	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		_ = c.store.Subscribe(sctx, metadb.Subscriber{
			Handle: func(_ context.Context, env *buspb.Envelope) {
				if b := env.GetWriteBan(); b != nil {
					bans <- b
				}
			},
			Resync: func(ctx context.Context) (uint64, error) { return c.store.Version(ctx) },
		})
	}()
	setUsed := func(n int64) {
		_, err := c.store.UpdateDB(ctx, nil, "test", "acme", db.Index, func(d *metadb.DB) ([]*buspb.Envelope, error) {
			d.UsedBytes = n
			return nil, nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	waitBan := func(want bool) {
		t.Helper()
		select {
		case b := <-bans:
			if b.Banned != want || b.Tenant != "acme" || int(b.Index) != db.Index {
				t.Fatalf("ban message %+v, want banned=%v for acme/%d", b, want, db.Index)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("no ban message (want banned=%v)", want)
		}
		got, _ := c.store.DB(ctx, "acme", db.Index)
		if got.Banned != want {
			t.Fatalf("db banned %v, want %v", got.Banned, want)
		}
	}
	// The subscriber must be listening before the first ban.
	redistest.WaitFor(t, 5*time.Second, "subscriber", func() bool {
		n, _ := c.store.BusSubscribers(ctx)
		return n > 0
	})
	setUsed(2000)
	waitBan(true)
	setUsed(500)
	waitBan(false)

	// Each decision left exactly one audit entry, by the leading master.
	for _, action := range []string{metadb.AuditQuotaBan, metadb.AuditQuotaUnban} {
		got, _, err := c.store.AuditLog(ctx, metadb.AuditQuery{Action: action})
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 1 {
			t.Fatalf("%s: got %d audit entries, want 1: %+v", action, len(got), got)
		}
		e := got[0]
		want := metadb.AuditEntry{ID: e.ID, Time: e.Time, Actor: "master/m1", Action: action,
			Target: fmt.Sprintf("acme/%d", db.Index), Tenant: "acme", Result: metadb.AuditOK}
		if e != want {
			t.Fatalf("%s: got %+v, want %+v", action, e, want)
		}
	}
}
