package tenantapi

import (
	"context"
	"errors"
	"time"

	"github.com/granary-db/granary/metadb"
	"github.com/granary-db/granary/pools"
)

// claim places a new db of the tenant: metadb.Place picks a pair of the
// pool and re-picks when a racing create took the last slot of it, and
// metadb.ClaimDB takes one of the pair's slots atomically. When the pool has
// no room the error names the size and maps to 409.
func (s *Server) claim(ctx context.Context, tenant string, size pools.Size, mode string) (*metadb.DB, *metadb.Job, error) {
	var db *metadb.DB
	var job *metadb.Job
	err := s.store.Place(ctx, size, "", func(ctx context.Context, p *metadb.Pair) error {
		var err error
		db, job, err = s.store.ClaimDB(ctx, tenant, p, mode, size.Bytes(), s.cfg.MaxDBsPerTenant, newJobID())
		return err
	})
	switch {
	case errors.Is(err, pools.ErrNoCapacity):
		why := "is full"
		if errors.Is(err, pools.ErrEmptyPool) {
			why = "has no servers yet"
		}
		return nil, nil, errorf(pools.ErrNoCapacity, "no free %s db: the %s pool %s; try another size or ask the operator to add capacity", size, size, why)
	case errors.Is(err, metadb.ErrConflict):
		return nil, nil, errorf(pools.ErrNoCapacity, "no free %s db: concurrent creates took every slot; try again", size)
	case errors.Is(err, metadb.ErrTenantLimit):
		return nil, nil, errorf(metadb.ErrTenantLimit, "tenant db limit reached: a tenant may hold at most %d dbs", s.cfg.MaxDBsPerTenant)
	case err != nil:
		return nil, nil, err
	}
	return db, job, nil
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
