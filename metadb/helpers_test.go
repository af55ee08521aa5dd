package metadb

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/granary-db/granary/internal/redistest"
	"github.com/granary-db/granary/proto/buspb"
)

// newStore starts a fresh metadb and returns a Store on it.
func newStore(t *testing.T) (*Store, *redistest.Server) {
	t.Helper()
	srv := redistest.Start(t)
	return openStore(t, Config{URL: "redis://" + srv.Addr}), srv
}

func openStore(t *testing.T, cfg Config) *Store {
	t.Helper()
	s, err := Open(cfg)
	if err != nil {
		t.Fatalf("open store: %v", err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// testCtx is a context that ends with the test, bounded so a hang fails
// instead of stalling the whole run.
func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// addPair registers a pair with dbs 0..n-1 under made-up addresses: the
// metadb only records them.
func addPair(t *testing.T, s *Store, size string, n int) *Pair {
	t.Helper()
	dbs := make([]int, n)
	for i := range dbs {
		dbs[i] = i
	}
	seq := time.Now().UnixNano()
	p, err := s.AddPair(t.Context(), size, fmt.Sprintf("m%d:6379", seq), fmt.Sprintf("r%d:6379", seq), dbs)
	if err != nil {
		t.Fatalf("add pair: %v", err)
	}
	return p
}

func mustTenant(t *testing.T, s *Store, name string) {
	t.Helper()
	if _, err := s.CreateTenant(t.Context(), "test", name, "tok-"+name, "pw-"+name); err != nil {
		t.Fatalf("create tenant %s: %v", name, err)
	}
}

// mustActiveDB claims a db on pair for tenant and finishes its creation the
// way the master would: db active, create job done.
func mustActiveDB(t *testing.T, s *Store, tenant string, pair *Pair, jobID string) *DB {
	t.Helper()
	ctx := t.Context()
	db, _, err := s.ClaimDB(ctx, tenant, pair, WriteConfirmed, 64<<20, 8, jobID)
	if err != nil {
		t.Fatalf("claim db: %v", err)
	}
	db, err = s.UpdateDB(ctx, nil, "test", tenant, db.Index, func(d *DB) ([]*buspb.Envelope, error) {
		d.State = DBActive
		return nil, nil
	})
	if err != nil {
		t.Fatalf("activate db: %v", err)
	}
	if _, err := s.UpdateJob(ctx, nil, jobID, func(j *Job) error { j.State, j.Step = JobDone, StepDone; return nil }); err != nil {
		t.Fatalf("finish create job: %v", err)
	}
	return db
}
