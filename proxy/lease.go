package proxy

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/granary-db/granary/metadb"
	"github.com/granary-db/granary/proto/buspb"
)

// The proxy's side of the control plane: it follows the bus (routes, bans,
// holds) into snapshots, renews its lease and acknowledges applied versions
// through it, and fences itself when the lease cannot be renewed.

// handle applies one bus message. Called from the subscriber goroutine only.
func (p *Proxy) handle(ctx context.Context, env *buspb.Envelope) {
	if env.Version == 0 {
		return // notifications: heartbeats of others, keeper results
	}
	cur := p.snap.Load()
	next, touched, reload := p.apply(cur, env)
	if f := env.GetFailover(); f != nil && f.OldMaster != "" && f.OldMaster != f.NewMaster {
		// After the new routes are published (a client's next write must
		// not find the old master again): fail what waits on the old one.
		defer p.dropBackend(f.OldMaster, fmt.Errorf("%s failed over to %s", f.OldMaster, f.NewMaster))
	}
	if reload {
		if n, t, ok := p.reloadOne(ctx, next, env); ok {
			p.publish(n, t)
			return
		}
		if v, err := p.resync(ctx); err == nil && v < env.Version {
			// The message is newer than what was loaded: keep its version
			// so the next one is not taken for a gap.
			s := p.snap.Load().clone()
			s.version = env.Version
			p.publish(s, nil)
		}
		return
	}
	p.publish(next, touched)
}

// reloadOne reloads just what a TenantChanged or DBChanged message is
// about, instead of everything. ok=false asks for a full reload.
func (p *Proxy) reloadOne(ctx context.Context, s *snapshot, env *buspb.Envelope) (*snapshot, []dbKey, bool) {
	switch m := env.Payload.(type) {
	case *buspb.Envelope_TenantChanged:
		name := m.TenantChanged.Tenant
		t, err := p.store.Tenant(ctx, name)
		if err != nil && !errors.Is(err, metadb.ErrNotFound) {
			return nil, nil, false
		}
		s.cloneTenants()
		if old := s.tenants[name]; old != nil {
			delete(s.byHash, old.hash)
			delete(s.tenants, name)
		}
		if t != nil && m.TenantChanged.Change != buspb.Change_CHANGE_DROPPED {
			ti := p.newTenantInfo(t)
			s.tenants[name], s.byHash[ti.hash] = ti, ti
		}
		p.relimit(s, name)
		return s, nil, true
	case *buspb.Envelope_DbChanged:
		k := dbKey{m.DbChanged.Tenant, m.DbChanged.Index}
		db, err := p.store.DB(ctx, k.tenant, int(k.index))
		if errors.Is(err, metadb.ErrNotFound) {
			delete(s.dbs, k)
			return s, []dbKey{k}, true
		}
		if err != nil {
			return nil, nil, false
		}
		if db.State != metadb.DBActive && db.State != metadb.DBResizing {
			delete(s.dbs, k)
			return s, []dbKey{k}, true
		}
		pair, err := p.store.Pair(ctx, db.Pair)
		if err != nil {
			return nil, nil, false
		}
		s.dbs[k] = p.newRoute(metadb.RouteOf(db, pair), s.dbs[k], p.opsOf(s, k.tenant))
		return s, []dbKey{k}, true
	}
	return nil, nil, false
}

// resync reloads routes and tenants from metadb and returns the version.
func (p *Proxy) resync(ctx context.Context) (uint64, error) {
	v, routes, err := p.store.Routes(ctx)
	if err != nil {
		return 0, err
	}
	tenants, err := p.store.Tenants(ctx)
	if err != nil {
		return 0, err
	}
	prev := p.snap.Load()
	next := p.buildSnapshot(v, routes, tenants, prev)
	p.publish(next, changedDBs(prev, next))
	p.metrics.resyncs.Inc()
	return v, nil
}

// changedDBs lists the dbs whose route differs between two snapshots.
func changedDBs(a, b *snapshot) []dbKey {
	var out []dbKey
	for k, da := range a.dbs {
		db := b.dbs[k]
		if db == nil || db.master != da.master || db.banned != da.banned || (db.hold == nil) != (da.hold == nil) {
			out = append(out, k)
		}
	}
	for k := range b.dbs {
		if a.dbs[k] == nil {
			out = append(out, k)
		}
	}
	return out
}

// publish swaps in a new snapshot, wakes waiters, and schedules the
// acknowledgement of its version.
func (p *Proxy) publish(s *snapshot, touched []dbKey) {
	// Subscribed clients learn their db's new route before the swap, so
	// that a heartbeat that reads this snapshot waits for their
	// pre-subscription (pubsub_move.go).
	// The touched dbs are recorded before the swap too, with the version
	// that must wait for them: a heartbeat that reads this snapshot then
	// always waits for the writes admitted under the previous one.
	p.ackMu.Lock()
	for _, k := range touched {
		p.ackPending[k] = max(p.ackPending[k], s.version)
	}
	p.ackMu.Unlock()
	p.subs.mu.Lock()
	p.offerSubs(s)
	old := p.snap.Swap(s)
	p.subs.mu.Unlock()
	if old != nil && old != s {
		close(old.next)
	}
	p.metrics.version.Set(float64(s.version))
	if p.table.Load() == nil && len(s.dbs) > 0 {
		select {
		case p.tableKick <- struct{}{}:
		default:
		}
	}
	select {
	case p.hbKick <- struct{}{}:
	default:
	}
}

// heartbeatLoop renews the lease every interval and, promptly and
// coalesced, after each applied change, with the applied version: the master
// reads "applied_version >= V" as this proxy's acknowledgement of change V.
// Before acknowledging, writes to the dbs the change concerns that were
// dispatched under the previous snapshot must have completed.
func (p *Proxy) heartbeatLoop(ctx context.Context) error {
	t := time.NewTicker(p.cfg.HeartbeatInterval)
	defer t.Stop()
	for {
		report := false
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			report = true
		case <-p.hbKick:
		}
		s := p.snap.Load()
		p.drainTouched(ctx, s.version)
		p.waitSubs(ctx)
		if err := p.renew(ctx, s); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			p.log.Warn().Err(err).Msg("lease renewal failed")
			p.metrics.leaseFailures.Inc()
		}
		if report {
			p.reportActivity(ctx, s, true)
		}
	}
}

// activityLoop reports written dbs more often than the heartbeat, so that
// the keeper measures a growing db, and the master bans it, soon after it
// crosses its quota. Quiet intervals send nothing.
func (p *Proxy) activityLoop(ctx context.Context) error {
	t := time.NewTicker(p.cfg.ActivityInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
			p.reportActivity(ctx, p.snap.Load(), false)
		}
	}
}

// renew writes the lease. Writes are allowed until the renewal's start plus
// the lease minus the margin: measured from before the call, so the proxy
// fences itself no later than metadb lets the lease lapse.
func (p *Proxy) renew(ctx context.Context, s *snapshot) error {
	start := time.Now()
	cctx, cancel := context.WithTimeout(ctx, p.cfg.LeaseTTL-p.cfg.LeaseMargin)
	defer cancel()
	dbOps, tenantConns := p.usageReport()
	err := p.store.Heartbeat(cctx, metadb.KindProxy, metadb.Member{
		ID: p.cfg.ID, Addr: p.cfg.Advertise, AppliedVersion: s.version,
		Conns: int(p.nclients.Load()), DBs: len(s.dbs), Started: p.started,
		BackendOK: p.backendOK(), BackendStalled: p.backendStalled(coarseNow()), Draining: p.draining.Load(),
		DBOps: dbOps, TenantConns: tenantConns,
	}, p.cfg.LeaseTTL)
	if err != nil {
		return err
	}
	p.fenceAt.Store(start.Add(p.cfg.LeaseTTL - p.cfg.LeaseMargin).UnixNano())
	p.applied.Store(s.version)
	return nil
}

// usageReport reads the per-db command counters (those /metrics shows) and
// the per-tenant connection counts at report time, for the master's usage
// history; the hot path is untouched.
func (p *Proxy) usageReport() (map[string]uint64, map[string]int) {
	p.statesMu.Lock()
	defer p.statesMu.Unlock()
	ops := map[string]uint64{}
	for _, st := range p.states {
		var n uint64
		for i := range st.ops {
			n += st.ops[i].Load()
		}
		if n > 0 {
			ops[st.label] = n
		}
	}
	conns := map[string]int{}
	for _, ts := range p.tenantStates {
		if c := ts.conns.Load(); c > 0 {
			conns[ts.name] = int(c)
		}
	}
	return ops, conns
}

// drainTouched waits until the writes in flight to the dbs touched by
// changes up to version v (the snapshot about to be acknowledged) have
// completed, unblocking their blocked writes, for at most the backend and
// confirm timeouts (a backend that answers nothing by then has had its
// connection dropped, failing those writes). Dbs touched by a newer change
// wait for the heartbeat that reads its snapshot: only that one's wait
// begins after every write admitted under the older snapshot was counted.
func (p *Proxy) drainTouched(ctx context.Context, v uint64) {
	p.ackMu.Lock()
	if len(p.ackPending) == 0 {
		p.ackMu.Unlock()
		return
	}
	var sts []*dbState
	for k, kv := range p.ackPending {
		if kv > v {
			continue
		}
		sts = append(sts, p.dbState(k))
		delete(p.ackPending, k)
	}
	p.ackMu.Unlock()
	if len(sts) == 0 {
		return
	}
	deadline := time.Now().Add(p.cfg.BackendTimeout + p.cfg.ConfirmTimeout)
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	lastUnblock := time.Time{}
	for {
		busy := false
		for _, st := range sts {
			if st.inflight.Load() > 0 {
				busy = true
			}
			if ids := st.blockerIDs(); ids != nil {
				busy = true
				if time.Since(lastUnblock) > 20*time.Millisecond {
					p.unblock(ctx, ids)
					lastUnblock = time.Now()
				}
			}
		}
		if !busy || time.Now().After(deadline) {
			return
		}
		select {
		case <-ctx.Done():
			return
		case <-tick.C:
		}
	}
}

// unblock ends blocked commands on the backend as if they timed out.
func (p *Proxy) unblock(ctx context.Context, ids map[string][]int64) {
	for addr, list := range ids {
		for _, id := range list {
			if _, err := p.adminCall(ctx, addr, "CLIENT", "UNBLOCK", strconv.FormatInt(id, 10), "TIMEOUT"); err != nil {
				p.log.Warn().Err(err).Str("backend", addr).Msg("unblock failed")
			}
		}
	}
}

// reportActivity publishes which dbs were read and written since the last
// report, so the master knows which dbs to measure.
// reportActivity publishes the reads and writes per db since the last
// report; with always unset it publishes nothing when there were none.
func (p *Proxy) reportActivity(ctx context.Context, s *snapshot, always bool) {
	hb := &buspb.Heartbeat{Component: buspb.Component_COMPONENT_PROXY, Id: p.cfg.ID, Addr: p.cfg.Advertise,
		AppliedVersion: p.applied.Load(), Connections: uint32(p.nclients.Load())}
	p.statesMu.Lock()
	for _, st := range p.states {
		r, w := st.reads.Load(), st.writes.Load()
		if r == st.reportedReads && w == st.reportedWrites {
			continue
		}
		hb.Activity = append(hb.Activity, &buspb.DBActivity{Tenant: st.key.tenant, Index: st.key.index,
			Reads: r - st.reportedReads, Writes: w - st.reportedWrites})
		st.reportedReads, st.reportedWrites = r, w
	}
	p.statesMu.Unlock()
	if !always && len(hb.Activity) == 0 {
		return
	}
	if err := p.store.Publish(ctx, "proxy/"+p.cfg.ID, &buspb.Envelope{Payload: &buspb.Envelope_Heartbeat{Heartbeat: hb}}); err != nil && ctx.Err() == nil {
		p.log.Debug().Err(err).Msg("activity report not sent")
	}
}
