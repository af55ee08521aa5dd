package master

import (
	"context"
	"errors"
	"fmt"

	"github.com/granary-db/granary/metadb"
	"github.com/granary-db/granary/pools"
	"github.com/granary-db/granary/proto/buspb"
)

// createFlush empties the claimed slot. A free slot should already be
// empty; flushing makes sure no earlier tenant's data can ever show. The
// route is not published yet, so no tenant can have written to it.
func (m *Master) createFlush(ctx context.Context, _ *metadb.Fence, j *metadb.Job) (metadb.Step, error) {
	if err := m.flushSlot(ctx, j); err != nil {
		return "", err
	}
	return metadb.StepRoute, nil
}

// flushSlot empties the job's slot (j.Pair, j.SlotDB) on its pair's master.
func (m *Master) flushSlot(ctx context.Context, j *metadb.Job) error {
	p, err := m.store.Pair(ctx, j.Pair)
	if err != nil {
		return fmt.Errorf("load pair %s: %w", j.Pair, err)
	}
	return m.backends.flushDB(ctx, p.Master, j.SlotDB)
}

// createRoute picks the least-loaded live proxy for the db, marks it active
// and publishes its route (a version bump) so proxies serve it.
func (m *Master) createRoute(ctx context.Context, f *metadb.Fence, j *metadb.Job) (metadb.Step, error) {
	p, err := m.store.Pair(ctx, j.Pair)
	if err != nil {
		return "", fmt.Errorf("load pair %s: %w", j.Pair, err)
	}
	proxy, err := m.pickProxy(ctx)
	if err != nil {
		return "", err
	}
	_, err = m.store.UpdateDB(ctx, f, m.sender(), j.Tenant, j.Index, func(db *metadb.DB) ([]*buspb.Envelope, error) {
		if db.Job != j.ID {
			return nil, fmt.Errorf("db %s/%d belongs to job %s: %w", j.Tenant, j.Index, db.Job, metadb.ErrBadState)
		}
		if db.State == metadb.DBCreating {
			db.State = metadb.DBActive
		}
		if db.Proxy == "" {
			db.Proxy, db.ProxyAddr = proxy.ID, proxy.Addr
		}
		return []*buspb.Envelope{routeChanged(metadb.RouteOf(db, p), false)}, nil
	})
	if err != nil {
		return "", err
	}
	return metadb.StepDone, nil
}

// pickProxy chooses the live proxy serving the fewest dbs. With no live
// proxy the db gets no endpoint yet; it is still created.
func (m *Master) pickProxy(ctx context.Context) (pools.ProxyLoad, error) {
	members, err := m.store.LiveMembers(ctx, metadb.KindProxy)
	if err != nil {
		return pools.ProxyLoad{}, fmt.Errorf("list proxies: %w", err)
	}
	if len(members) == 0 {
		m.log.Warn().Msg("no live proxy: db created without an endpoint")
		return pools.ProxyLoad{}, nil
	}
	dbs, err := m.store.AllDBs(ctx)
	if err != nil {
		return pools.ProxyLoad{}, fmt.Errorf("list dbs: %w", err)
	}
	count := map[string]int{}
	for _, db := range dbs {
		count[db.Proxy]++
	}
	loads := make([]pools.ProxyLoad, len(members))
	for i, mb := range members {
		loads[i] = pools.ProxyLoad{ID: mb.ID, Addr: mb.Addr, DBs: count[mb.ID], Conns: mb.Conns, Live: !mb.Draining}
	}
	p, _ := pools.PickProxy(loads)
	return p, nil
}

func routeChanged(r *buspb.Route, removed bool) *buspb.Envelope {
	return &buspb.Envelope{Payload: &buspb.Envelope_RouteChanged{RouteChanged: &buspb.RouteChanged{Route: r, Removed: removed}}}
}

// dropUnroute removes the db's route (a version bump) and records the
// version the proxies must reach before the slot may be flushed.
func (m *Master) dropUnroute(ctx context.Context, f *metadb.Fence, j *metadb.Job) (metadb.Step, error) {
	p, err := m.store.Pair(ctx, j.Pair)
	if err != nil {
		return "", fmt.Errorf("load pair %s: %w", j.Pair, err)
	}
	_, err = m.store.UpdateDB(ctx, f, m.sender(), j.Tenant, j.Index, func(db *metadb.DB) ([]*buspb.Envelope, error) {
		if db.Job != j.ID {
			return nil, fmt.Errorf("db %s/%d belongs to job %s: %w", j.Tenant, j.Index, db.Job, metadb.ErrBadState)
		}
		return []*buspb.Envelope{routeChanged(metadb.RouteOf(db, p), true)}, nil
	})
	if errors.Is(err, metadb.ErrNotFound) {
		return metadb.StepFlush, nil // already released by an earlier attempt
	}
	if err != nil {
		return "", err
	}
	v, err := m.store.Version(ctx)
	if err != nil {
		return "", err
	}
	_, err = m.store.UpdateJob(ctx, f, j.ID, func(job *metadb.Job) error {
		if job.Version < v {
			job.Version = v
		}
		return nil
	})
	if err != nil {
		return "", err
	}
	return metadb.StepWaitAcks, nil
}

// dropWaitAcks waits until every live proxy has applied the unroute version;
// a proxy whose lease lapsed has fenced itself and counts as acknowledged.
func (m *Master) dropWaitAcks(ctx context.Context, _ *metadb.Fence, j *metadb.Job) (metadb.Step, error) {
	members, err := m.store.LiveMembers(ctx, metadb.KindProxy)
	if err != nil {
		return "", fmt.Errorf("list proxies: %w", err)
	}
	if pending := unacked(members, j.Version); len(pending) > 0 {
		return "", fmt.Errorf("%w for proxies %v to reach version %d", errWait, pending, j.Version)
	}
	return metadb.StepFlush, nil
}

// unacked lists the live proxies that have not applied version v.
func unacked(members []*metadb.Member, v uint64) []string {
	var out []string
	for _, mb := range members {
		if mb.Live && mb.AppliedVersion < v {
			out = append(out, mb.ID)
		}
	}
	return out
}

// dropFlush empties the slot; no proxy routes to it any more.
func (m *Master) dropFlush(ctx context.Context, _ *metadb.Fence, j *metadb.Job) (metadb.Step, error) {
	if err := m.flushSlot(ctx, j); err != nil {
		return "", err
	}
	return metadb.StepFree, nil
}

// dropFree deletes the db record and returns the slot to the free list; it
// ends the job in the same transaction.
func (m *Master) dropFree(ctx context.Context, f *metadb.Fence, j *metadb.Job) (metadb.Step, error) {
	if err := m.store.ReleaseSlot(ctx, f, j.ID); err != nil {
		return "", err
	}
	return "", nil
}
