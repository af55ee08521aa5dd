package tenantapi

import (
	"context"
	"errors"
	"time"

	"github.com/granary-db/granary/metadb"
	"github.com/granary-db/granary/pools"
)

// claimAttempts bounds how often a create re-picks a pair after a racing
// create emptied the one it chose.
const claimAttempts = 5

// claim places a new db of the tenant: pick a pair from a fresh view of the
// pool (pools.PickPair decides), then take one of its slots atomically
// (metadb.ClaimDB). When the pool has no room the error names the size and
// maps to 409.
func (s *Server) claim(ctx context.Context, tenant string, size pools.Size, mode string) (*metadb.DB, *metadb.Job, error) {
	for attempt := 0; attempt < claimAttempts; attempt++ {
		views, err := s.store.Pairs(ctx, size.String())
		if err != nil {
			return nil, nil, err
		}
		loads := make([]pools.PairLoad, len(views))
		byID := make(map[string]*metadb.Pair, len(views))
		for i := range views {
			v := &views[i]
			loads[i] = pools.PairLoad{ID: v.ID, Free: v.Free, Total: len(v.DBs), Live: v.State == metadb.PairActive}
			byID[v.ID] = &v.Pair
		}
		id, err := pools.PickPair(size, loads)
		if errors.Is(err, pools.ErrNoCapacity) {
			why := "is full"
			if len(views) == 0 {
				why = "has no servers yet"
			}
			return nil, nil, errorf(pools.ErrNoCapacity, "no free %s db: the %s pool %s; try another size or ask the operator to add capacity", size, size, why)
		}
		if err != nil {
			return nil, nil, err
		}
		db, job, err := s.store.ClaimDB(ctx, tenant, byID[id], mode, size.Bytes(), s.cfg.MaxDBsPerTenant, newJobID())
		switch {
		case errors.Is(err, pools.ErrNoCapacity):
			continue // a concurrent create took the last slot of that pair
		case errors.Is(err, metadb.ErrTenantLimit):
			return nil, nil, errorf(metadb.ErrTenantLimit, "tenant db limit reached: a tenant may hold at most %d dbs", s.cfg.MaxDBsPerTenant)
		}
		return db, job, err
	}
	return nil, nil, errorf(pools.ErrNoCapacity, "no free %s db: concurrent creates took every slot; try again", size)
}

// waitJob polls a job until it leaves the running state or CreateWait has
// passed, and returns its last state. Only a metadb failure or the end of
// the caller's context is an error.
func (s *Server) waitJob(ctx context.Context, id string) (*metadb.Job, error) {
	job, err := s.store.Job(ctx, id)
	if err != nil || job.State != metadb.JobRunning || s.cfg.CreateWait <= 0 {
		return job, err
	}
	every := min(max(s.cfg.CreateWait/10, 5*time.Millisecond), 50*time.Millisecond)
	tick := time.NewTicker(every)
	defer tick.Stop()
	deadline := time.NewTimer(s.cfg.CreateWait)
	defer deadline.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-deadline.C:
			return job, nil
		case <-tick.C:
		}
		next, err := s.store.Job(ctx, id)
		if err != nil {
			return nil, err
		}
		if job = next; job.State != metadb.JobRunning {
			return job, nil
		}
	}
}
