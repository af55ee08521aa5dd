package metadb

import (
	"errors"
	"reflect"
	"testing"
	"time"

	"github.com/granary-db/granary/internal/redistest"
	"github.com/granary-db/granary/proto/buspb"
)

// keeperStore is a Store on a fresh metadb with one pair and one active db
// of tenant acme on it.
func keeperStore(t *testing.T) (*Store, *DB) {
	t.Helper()
	srv := redistest.Start(t)
	s, err := Open(Config{URL: "redis://" + srv.Addr})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	ctx := t.Context()
	pair, err := s.AddPair(ctx, "64M", "10.0.0.1:6379", "10.0.0.2:6379", []int{0, 1})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateTenant(ctx, "test", "acme", "tok", "pw"); err != nil {
		t.Fatal(err)
	}
	db, _, err := s.ClaimDB(ctx, "acme", pair, WriteConfirmed, 64<<20, 10, "j1")
	if err != nil {
		t.Fatal(err)
	}
	db, err = s.UpdateDB(ctx, nil, "test", "acme", db.Index, func(d *DB) ([]*buspb.Envelope, error) {
		d.State = DBActive
		return nil, nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return s, db
}

func TestRecordDBSize(t *testing.T) {
	s, db := keeperStore(t)
	ctx := t.Context()
	v0, err := s.Version(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.DBSize(ctx, "acme", db.Index); !errors.Is(err, ErrNotFound) {
		t.Fatalf("before any measurement: got %v, want %v", err, ErrNotFound)
	}
	at := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	m := &DBSize{Tenant: "acme", Index: db.Index, Pair: db.Pair, SlotDB: db.SlotDB, Server: "10.0.0.2:6379",
		Keeper: "k1", At: at, UsedBytes: 12345, ErrorBytes: 67, Keys: 100, Measured: 50,
		Elapsed: time.Millisecond, Reason: "written"}
	got, err := s.RecordDBSize(ctx, m)
	if err != nil {
		t.Fatal(err)
	}
	if got.UsedBytes != 12345 {
		t.Fatalf("returned db: got used bytes %d, want 12345", got.UsedBytes)
	}
	stored, err := s.DB(ctx, "acme", db.Index)
	if err != nil {
		t.Fatal(err)
	}
	want := *db
	want.UsedBytes = 12345
	if !reflect.DeepEqual(*stored, want) {
		t.Fatalf("db record: got %+v, want %+v", *stored, want)
	}
	back, err := s.DBSize(ctx, "acme", db.Index)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, m) {
		t.Fatalf("measurement: got %+v, want %+v", back, m)
	}
	if v, _ := s.Version(ctx); v != v0 {
		t.Fatalf("got version %d after a measurement, want %d: sizes change no topology", v, v0)
	}

	for _, tc := range []struct {
		name string
		mod  func(*DBSize)
		want error
	}{
		{"another slot of the pair", func(m *DBSize) { m.SlotDB++ }, ErrBadState},
		{"another pair", func(m *DBSize) { m.Pair = "p99" }, ErrBadState},
		{"a db that does not exist", func(m *DBSize) { m.Index = 7 }, ErrNotFound},
	} {
		t.Run(tc.name, func(t *testing.T) {
			late := *m
			late.UsedBytes = 1
			tc.mod(&late)
			if _, err := s.RecordDBSize(ctx, &late); !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			if cur, _ := s.DB(ctx, "acme", db.Index); cur.UsedBytes != 12345 {
				t.Fatalf("got used bytes %d after a refused measurement, want 12345", cur.UsedBytes)
			}
		})
	}
}

func TestPairHealthRecord(t *testing.T) {
	s, db := keeperStore(t)
	ctx := t.Context()
	if _, err := s.PairHealth(ctx, db.Pair); !errors.Is(err, ErrNotFound) {
		t.Fatalf("before any report: got %v, want %v", err, ErrNotFound)
	}
	at := time.Date(2025, 1, 2, 3, 4, 5, 0, time.UTC)
	h := &PairHealth{Pair: db.Pair, Keeper: "k1", At: at, LagSec: 0, LagBytes: 12,
		Master: NodeHealth{Addr: "10.0.0.1:6379", Up: true, Since: at, LastOK: at, Role: "master",
			RunID: "r2", PrevRunID: "r1", RestartedAt: at, Offset: 100},
		Replica: NodeHealth{Addr: "10.0.0.2:6379", Since: at, Error: "probe: refused", Role: "slave", Offset: 88}}
	if err := s.SetPairHealth(ctx, h); err != nil {
		t.Fatal(err)
	}
	got, err := s.PairHealth(ctx, db.Pair)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, h) {
		t.Fatalf("got %+v, want %+v", got, h)
	}
	if err := s.SetPairHealth(ctx, &PairHealth{}); err == nil {
		t.Fatalf("report without a pair id: got no error, want one")
	}
}
