package proxy

import (
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/granary-db/granary/metadb"
	"github.com/granary-db/granary/proto/buspb"
)

// dbKey names a tenant db.
type dbKey struct {
	tenant string
	index  uint32
}

func (k dbKey) String() string { return k.tenant + "/" + strconv.FormatUint(uint64(k.index), 10) }

// dbState is what the proxy keeps about one tenant db across snapshots:
// counters, writes in flight (for acknowledgements) and blocked commands.
type dbState struct {
	key      dbKey
	label    string
	inflight atomic.Int64 // client batches with writes to this db in flight
	held     atomic.Int64 // writes waiting on a hold
	reads    atomic.Uint64
	writes   atomic.Uint64
	// reported is what the last activity report covered.
	reportedReads, reportedWrites uint64
	ops                           [numClasses]atomic.Uint64
	lat                           [numClasses]histogram

	tenant *tenantState

	mu       sync.Mutex
	blockers map[*dconn]struct{} // dedicated conns running a blocking write
	bucket   *bucket             // the ops/s limit's bucket, kept across snapshots (bucketFor)

	hot atomic.Pointer[hotTracker] // sampled hot keys; nil until sampled, or after going quiet (hotkeys.go)
}

func (p *Proxy) dbState(k dbKey) *dbState {
	p.statesMu.Lock()
	defer p.statesMu.Unlock()
	st := p.states[k]
	if st == nil {
		st = &dbState{key: k, label: k.String(), tenant: p.tenantStateLocked(k.tenant)}
		p.states[k] = st
	}
	return st
}

// hold is a resize's write hold on one db.
type hold struct {
	job      string
	deadline time.Time
	// target is the master (and db number) the db will switch to, ""
	// when unknown: subscribers are subscribed there too (pubsub_move.go).
	target   string
	targetDB int
}

// dbRoute is one db in a snapshot: immutable.
type dbRoute struct {
	key       dbKey
	route     *buspb.Route
	st        *dbState
	master    *group // tenant user on the master
	replica   *group // tenant user on the replica; nil: read from master
	script    *group // script user on the master
	pubsub    string // channel prefix of this db's namespace
	banned    bool
	readOnly  string // non-empty: why writes are refused (a restore, an import)
	hold      *hold
	confirmed bool
	rate      *bucket // the tenant's ops/s limit on this db; nil: none
}

// tenantInfo is one tenant in a snapshot.
type tenantInfo struct {
	name     string
	hash     string // SHA-256 of the Redis password
	st       *tenantState
	set      metadb.Limits // as the admin set them
	maxConns int64         // effective connection limit
	ops      int64         // effective ops/s per db; 0: none
}

// snapshot is the proxy's whole routing state at one topology version. It
// is never modified once published; changes build a new one and swap it
// (atomic.Pointer), and closing next wakes everyone waiting for a change.
type snapshot struct {
	version uint64
	dbs     map[dbKey]*dbRoute
	tenants map[string]*tenantInfo
	byHash  map[string]*tenantInfo
	next    chan struct{}
}

func emptySnapshot() *snapshot {
	return &snapshot{dbs: map[dbKey]*dbRoute{}, tenants: map[string]*tenantInfo{}, byHash: map[string]*tenantInfo{}, next: make(chan struct{})}
}

// clone copies the maps (not the entries, which are immutable).
func (s *snapshot) clone() *snapshot {
	n := &snapshot{version: s.version, dbs: make(map[dbKey]*dbRoute, len(s.dbs)),
		tenants: s.tenants, byHash: s.byHash, next: make(chan struct{})}
	for k, v := range s.dbs {
		n.dbs[k] = v
	}
	return n
}

func (s *snapshot) cloneTenants() {
	t := make(map[string]*tenantInfo, len(s.tenants))
	h := make(map[string]*tenantInfo, len(s.byHash))
	for k, v := range s.tenants {
		t[k] = v
		h[v.hash] = v
	}
	s.tenants, s.byHash = t, h
}

// tenantDBs lists a tenant's served db indexes, sorted.
func (s *snapshot) tenantDBs(tenant string) []*dbRoute {
	var out []*dbRoute
	for k, r := range s.dbs {
		if k.tenant == tenant {
			out = append(out, r)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].key.index < out[j].key.index })
	return out
}

// newRoute builds the immutable dbRoute for r, keeping the hold of prev,
// with a limit of ops commands/s (0: none).
func (p *Proxy) newRoute(r *buspb.Route, prev *dbRoute, ops int64) *dbRoute {
	k := dbKey{r.Tenant, r.Index}
	st := p.dbState(k)
	d := &dbRoute{key: k, route: r, st: st, banned: r.Banned, readOnly: r.ReadOnly, rate: p.bucketFor(st, ops),
		confirmed: r.WriteMode != buspb.WriteMode_WRITE_MODE_ASYNC && !r.WriteDegraded,
		pubsub:    k.tenant + "/" + strconv.FormatUint(uint64(k.index), 10) + ":"}
	if r.Master != "" {
		d.master = p.group(r.Master, int(r.Db), p.cfg.TenantUser)
		d.script = p.group(r.Master, int(r.Db), p.cfg.ScriptUser)
	}
	if r.Replica != "" && r.Replica != r.Master {
		d.replica = p.group(r.Replica, int(r.Db), p.cfg.TenantUser)
	}
	switch {
	case r.HoldDeadlineUnixNanos > 0:
		d.hold = &hold{job: r.HoldJob, deadline: time.Unix(0, r.HoldDeadlineUnixNanos),
			target: r.HoldTargetMaster, targetDB: int(r.HoldTargetDb)}
	case prev != nil:
		d.hold = prev.hold
	}
	return d
}

// with returns a copy of d with one field changed through fn.
func (d *dbRoute) with(fn func(*dbRoute)) *dbRoute {
	n := *d
	fn(&n)
	return &n
}

// buildSnapshot is the snapshot of a full reload at version v. Holds are
// recorded in metadb and carried by the routes, so a proxy that (re)loads
// during a resize's hold honours it; a route without one has none.
func (p *Proxy) buildSnapshot(v uint64, routes []*buspb.Route, tenants []*metadb.Tenant, prev *snapshot) *snapshot {
	s := emptySnapshot()
	s.version = v
	for _, t := range tenants {
		ti := p.newTenantInfo(t)
		s.tenants[t.Name] = ti
		s.byHash[t.PasswordHash] = ti
	}
	now := time.Now()
	for _, r := range routes {
		if r.Master == "" {
			continue
		}
		d := p.newRoute(r, nil, p.opsOf(s, r.Tenant))
		if d.hold != nil && now.After(d.hold.deadline) {
			d.hold = nil
		}
		s.dbs[d.key] = d
	}
	return s
}

// apply folds one versioned bus message into a copy of s. It returns the new
// snapshot, the dbs the message concerns (their in-flight writes must drain
// before the version is acknowledged) and whether the proxy must reload
// from metadb because the message is not self-contained.
func (p *Proxy) apply(s *snapshot, env *buspb.Envelope) (*snapshot, []dbKey, bool) {
	n := s.clone()
	if env.Version > n.version {
		n.version = env.Version
	}
	switch m := env.Payload.(type) {
	case *buspb.Envelope_RouteChanged:
		r := m.RouteChanged.GetRoute()
		if r == nil {
			return n, nil, true
		}
		k := dbKey{r.Tenant, r.Index}
		if m.RouteChanged.Removed || r.Master == "" {
			delete(n.dbs, k)
		} else {
			n.dbs[k] = p.newRoute(r, s.dbs[k], p.opsOf(n, k.tenant))
		}
		return n, []dbKey{k}, false
	case *buspb.Envelope_WriteBan:
		k := dbKey{m.WriteBan.Tenant, m.WriteBan.Index}
		if d := n.dbs[k]; d != nil {
			n.dbs[k] = d.with(func(d *dbRoute) { d.banned = m.WriteBan.Banned })
		}
		return n, []dbKey{k}, false
	case *buspb.Envelope_WriteHold:
		h := m.WriteHold
		k := dbKey{h.Tenant, h.Index}
		if d := n.dbs[k]; d != nil {
			n.dbs[k] = d.with(func(d *dbRoute) {
				if !h.Hold {
					d.hold = nil
					return
				}
				dl := time.Now().Add(p.cfg.MaxHoldWait)
				if h.DeadlineUnixNanos > 0 {
					dl = time.Unix(0, h.DeadlineUnixNanos)
				}
				d.hold = &hold{job: h.Job, deadline: dl, target: h.TargetMaster, targetDB: int(h.TargetDb)}
			})
		}
		return n, []dbKey{k}, false
	case *buspb.Envelope_TenantLimits:
		l := m.TenantLimits
		old := n.tenants[l.Tenant]
		if old == nil {
			// A tenant this proxy has not loaded yet: its record has the
			// limits.
			return n, nil, true
		}
		n.cloneTenants()
		ti := *old
		p.limited(&ti, metadb.Limits{MaxConnections: l.MaxConnections, OpsPerSec: l.OpsPerSec})
		n.tenants[ti.name], n.byHash[ti.hash] = &ti, &ti
		p.relimit(n, ti.name)
		return n, nil, false
	case *buspb.Envelope_TenantChanged, *buspb.Envelope_DbChanged, *buspb.Envelope_Failover, *buspb.Envelope_NewReplica,
		*buspb.Envelope_WritesDegraded:
		// Not self-contained (credentials, write mode, a pair's new
		// servers): reload the facts from metadb.
		return n, nil, true
	}
	return n, nil, false
}
